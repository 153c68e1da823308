//! Whose build a build job is, and the build jobs of builds nobody runs any more.
//!
//! A build job runs on a host, possibly another machine, and its host agent keeps it running
//! when the server that started it dies (its shim survives, and the next agent re-adopts it).
//! But the build itself dies with its process (see [`crate::scratch`]): nothing will read the
//! job's output, collect its `/app` or stop it at the build's time limit. So every build job
//! carries its builder's id and its build's id in its metadata ([`BUILDER_META`],
//! [`BUILD_META`]); the scheduler tracks it as a one-off, never as a formation's job
//! (`slipway_scheduler::ONE_OFF_META`), so only its builder decides when it ends; and the
//! builder stops every job of its own whose build it is not running ([`spawn_stop_stale`]):
//! after a `kill -9`, the jobs of the builds the dead process ran, as soon as the scheduler
//! hears of them from their hosts. The builder's id is `<build data>/builder-id`, kept across
//! restarts (one builder per data dir; a copied data dir must not keep the file, or the two
//! builders would stop each other's builds).

use crate::pipeline::JobRunner;
use slipway_types::{App, Id, Job, Timestamp};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Metadata of a build job: the id of the builder that started it.
pub const BUILDER_META: &str = "slipway.builder";
/// Metadata of a build job: its build's id (the name of its build dir).
pub const BUILD_META: &str = "slipway.build";
/// The process type of build jobs.
pub const BUILD_TYPE: &str = "build";

/// This builder: its id, and the builds it is running now.
#[derive(Debug)]
pub struct Owner {
    id: String,
    live: Mutex<HashSet<String>>,
}

impl Owner {
    /// The builder of `data_dir` (`<data>/build`): its id from `data_dir/builder-id`, made on
    /// first use.
    pub fn open(data_dir: &Path) -> std::io::Result<Arc<Owner>> {
        std::fs::create_dir_all(data_dir)?;
        let file = data_dir.join("builder-id");
        let id = match std::fs::read_to_string(&file) {
            Ok(s) if valid_id(s.trim()) => s.trim().to_string(),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} does not hold a builder id (32 hex digits): remove it to get a new one",
                    file.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let tmp = data_dir.join("builder-id.tmp");
                std::fs::write(&tmp, format!("{id}\n"))?;
                std::fs::rename(&tmp, &file)?;
                id
            }
            Err(e) => return Err(e),
        };
        Ok(Arc::new(Owner::with_id(id)))
    }

    /// A builder with this id (tests).
    pub fn with_id(id: String) -> Owner {
        Owner {
            id,
            live: Mutex::new(HashSet::new()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A build of this process begins: its job is not stale.
    pub(crate) fn begin(&self, build: &str) {
        self.live
            .lock()
            .expect("live builds")
            .insert(build.to_string());
    }

    /// A build of this process is over (its job stopped if it still ran).
    pub(crate) fn end(&self, build: &str) {
        self.live.lock().expect("live builds").remove(build);
    }

    /// Of `jobs`, the unfinished build jobs of this builder whose build it is not running:
    /// (app, job id).
    pub fn stale(&self, jobs: &[Job]) -> Vec<(Id, String)> {
        let live = self.live.lock().expect("live builds");
        jobs.iter()
            .filter(|j| !j.state.is_finished())
            .filter(|j| j.process_type.as_deref() == Some(BUILD_TYPE))
            .filter(|j| j.meta.get(BUILDER_META) == Some(&self.id))
            .filter(|j| j.meta.get(BUILD_META).is_none_or(|b| !live.contains(b)))
            .map(|j| (j.app_id, j.id.clone()))
            .collect()
    }
}

fn valid_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How often [`spawn_stop_stale`] looks: often while the hosts' jobs are still being learned
/// after a start, then now and then (a host that comes back later, a stop that did not take).
const LOOK_EARLY: Duration = Duration::from_millis(500);
const EARLY_FOR: Duration = Duration::from_secs(120);
const LOOK_LATER: Duration = Duration::from_secs(30);
/// A stop asked for is asked again after this long if the job still runs.
const ASK_AGAIN: Duration = Duration::from_secs(60);

/// Stops, for as long as the process runs, every build job of `owner` whose build it is not
/// running, as `jobs()` (the scheduler's view of every host's jobs) shows them; through
/// `runner` (the scheduler, or its leader's controller).
pub fn spawn_stop_stale(
    owner: Arc<Owner>,
    jobs: impl Fn() -> Vec<Job> + Send + 'static,
    runner: Arc<dyn JobRunner>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut asked: HashMap<String, Instant> = HashMap::new();
        loop {
            let stale = owner.stale(&jobs());
            asked.retain(|id, _| stale.iter().any(|(_, s)| s == id));
            for (app, id) in stale {
                if asked.get(&id).is_some_and(|t| t.elapsed() < ASK_AGAIN) {
                    continue;
                }
                asked.insert(id.clone(), Instant::now());
                tracing::info!(
                    job = %id,
                    "stopping a build job whose build no longer runs (the process that ran it ended)"
                );
                if let Err(e) = runner.stop(&placeholder(app), &id).await {
                    tracing::warn!(job = %id, "cannot stop a stale build job: {e}");
                }
            }
            let every = if started.elapsed() < EARLY_FOR {
                LOOK_EARLY
            } else {
                LOOK_LATER
            };
            tokio::time::sleep(every).await;
        }
    })
}

/// The app a stop names: runners use its id only (the app may be gone meanwhile).
fn placeholder(id: Id) -> App {
    let now = Timestamp::now();
    App {
        id,
        name: String::new(),
        meta: Default::default(),
        strategy: Default::default(),
        deploy_timeout: 0,
        deploy_batch_size: None,
        release: None,
        created_at: now,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::JobState;

    fn job(id: &str, ptype: &str, meta: &[(&str, &str)], state: JobState) -> Job {
        let now = Timestamp::now();
        Job {
            id: id.into(),
            app_id: Id::nil(),
            release_id: Id::nil(),
            process_type: Some(ptype.into()),
            host_id: None,
            state,
            args: vec![],
            exit_status: None,
            host_error: None,
            restarts: 0,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn only_this_builders_unfinished_build_jobs_of_builds_it_does_not_run_are_stale() {
        let me = "a".repeat(32);
        let other = "b".repeat(32);
        let o = Owner::with_id(me.clone());
        o.begin("live");
        let jobs = [
            job(
                "dead",
                "build",
                &[(BUILDER_META, &me), (BUILD_META, "gone")],
                JobState::Up,
            ),
            job(
                "mine",
                "build",
                &[(BUILDER_META, &me), (BUILD_META, "live")],
                JobState::Up,
            ),
            job(
                "theirs",
                "build",
                &[(BUILDER_META, &other), (BUILD_META, "x")],
                JobState::Up,
            ),
            job(
                "web",
                "web",
                &[(BUILDER_META, &me), (BUILD_META, "gone")],
                JobState::Up,
            ),
            job(
                "done",
                "build",
                &[(BUILDER_META, &me), (BUILD_META, "gone")],
                JobState::Down,
            ),
            job("old", "build", &[], JobState::Up),
        ];
        let ids = |v: Vec<(Id, String)>| v.into_iter().map(|(_, j)| j).collect::<Vec<_>>();
        assert_eq!(ids(o.stale(&jobs)), ["dead"]);
        o.end("live");
        let mut stale = ids(o.stale(&jobs));
        stale.sort();
        assert_eq!(stale, ["dead", "mine"]);
    }

    #[test]
    fn the_builder_id_is_kept_across_opens_and_a_bad_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let a = Owner::open(t.path()).unwrap();
        assert!(valid_id(a.id()));
        assert_eq!(Owner::open(t.path()).unwrap().id(), a.id());
        std::fs::write(t.path().join("builder-id"), "../x\n").unwrap();
        assert!(Owner::open(t.path()).is_err());
    }
}
