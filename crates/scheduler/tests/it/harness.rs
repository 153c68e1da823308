//! A test cluster: a store, N fake hosts that can be taken down or re-tagged, a running scheduler.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use slipway_host::fake::FakeRuntime;
use slipway_host::{
    Agent, AgentConfig, HostApi, HostError, HostJob, HostResult, HostStatus, JobEvent, JobInfo,
    LogLine,
};
use slipway_scheduler::{Scheduler, SchedulerConfig};
use slipway_store::Store;
use slipway_types::{
    App, FormationUpdate, Job, JobState, NewApp, NewRelease, ProcessType, Release,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An agent on the fake runtime whose heartbeat can fail and whose tags can change.
pub struct TestHost {
    pub agent: Agent,
    pub runtime: Arc<FakeRuntime>,
    pub down: AtomicBool,
    pub tags: Mutex<BTreeMap<String, String>>,
    _dir: tempfile::TempDir,
}

impl TestHost {
    pub async fn new(id: &str, tags: &[(&str, &str)]) -> Arc<TestHost> {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AgentConfig::new(dir.path());
        cfg.id = id.to_string();
        let runtime = Arc::new(FakeRuntime::new());
        let agent = Agent::start(cfg, runtime.clone()).await.unwrap();
        Arc::new(TestHost {
            agent,
            runtime,
            down: AtomicBool::new(false),
            tags: Mutex::new(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            _dir: dir,
        })
    }
    pub fn set_tags(&self, tags: &[(&str, &str)]) {
        *self.tags.lock().unwrap() = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    fn check(&self) -> HostResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HostError::Internal("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl HostApi for TestHost {
    async fn add_job(&self, job: HostJob) -> HostResult<JobInfo> {
        self.check()?;
        self.agent.add_job(job).await
    }
    async fn list_jobs(&self) -> HostResult<Vec<JobInfo>> {
        self.check()?;
        self.agent.list_jobs().await
    }
    async fn get_job(&self, id: &str) -> HostResult<JobInfo> {
        self.agent.get_job(id).await
    }
    async fn stop_job(&self, id: &str) -> HostResult<JobInfo> {
        self.check()?;
        self.agent.stop_job(id).await
    }
    async fn signal_job(&self, id: &str, signal: i32) -> HostResult<()> {
        self.agent.signal_job(id, signal).await
    }
    async fn wait_job(&self, id: &str) -> HostResult<JobInfo> {
        self.agent.wait_job(id).await
    }
    async fn events(&self) -> HostResult<BoxStream<'static, JobEvent>> {
        self.check()?;
        self.agent.events().await
    }
    async fn logs(&self, id: &str, follow: bool) -> HostResult<BoxStream<'static, LogLine>> {
        self.agent.logs(id, follow).await
    }
    async fn fence(&self, epoch: u64) -> HostResult<()> {
        self.check()?;
        self.agent.fence(epoch).await
    }
    async fn add_job_fenced(&self, job: HostJob, epoch: u64) -> HostResult<JobInfo> {
        self.check()?;
        self.agent.add_job_fenced(job, epoch).await
    }
    async fn stop_job_fenced(&self, id: &str, epoch: u64) -> HostResult<JobInfo> {
        self.check()?;
        self.agent.stop_job_fenced(id, epoch).await
    }
    async fn status(&self) -> HostResult<HostStatus> {
        self.check()?;
        let mut s = self.agent.status().await?;
        s.tags = self.tags.lock().unwrap().clone();
        Ok(s)
    }
}

pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub sched: Scheduler,
    pub hosts: Vec<Arc<TestHost>>,
    _dir: tempfile::TempDir,
}

/// Fast heartbeats so lost-host tests take a second, not ten (one test keeps the defaults).
pub fn fast() -> SchedulerConfig {
    SchedulerConfig {
        resync_interval: Duration::from_secs(1),
        host_check_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

impl Cluster {
    pub async fn new(hosts: &[(&str, &[(&str, &str)])], cfg: SchedulerConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
        let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await.unwrap());
        let sched = Scheduler::new(store.clone(), cfg);
        let mut list = Vec::new();
        for (id, tags) in hosts {
            let h = TestHost::new(id, tags).await;
            sched.add_host(h.clone()).await.unwrap();
            list.push(h);
        }
        tokio::spawn(sched.clone().run());
        Cluster {
            store,
            sched,
            hosts: list,
            _dir: dir,
        }
    }

    /// A cluster over a scheduler set up by the caller (not run here), its store and hosts.
    pub fn from_parts(
        store: Arc<dyn Store>,
        sched: Scheduler,
        hosts: Vec<Arc<TestHost>>,
        dir: tempfile::TempDir,
    ) -> Cluster {
        Cluster {
            store,
            sched,
            hosts,
            _dir: dir,
        }
    }

    /// An app with one release whose process types run `args` on the fake runtime.
    pub async fn app(&self, types: &[(&str, &[&str])]) -> (App, Release) {
        let app = self
            .store
            .create_app(&format!("app{}", rand_suffix()), &NewApp::default(), None)
            .await
            .unwrap();
        let mut new = NewRelease::default();
        for (t, args) in types {
            new.processes.insert(
                t.to_string(),
                ProcessType {
                    args: args.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
            );
        }
        let release = self.store.create_release(app.id, &new).await.unwrap();
        (app, release)
    }

    pub async fn scale(
        &self,
        app: &App,
        release: &Release,
        procs: &[(&str, u32)],
        tags: &[(&str, &[(&str, &str)])],
    ) {
        let mut f = FormationUpdate::default();
        for (t, n) in procs {
            f.processes.insert(t.to_string(), *n);
        }
        for (t, kv) in tags {
            f.tags.insert(
                t.to_string(),
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        self.store
            .put_formation(app.id, release.id, &f)
            .await
            .unwrap();
    }

    /// Waits until the app's job rows satisfy `ok`, or fails with what they were.
    pub async fn wait_jobs(
        &self,
        app: &App,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&[Job]) -> bool,
    ) -> Vec<Job> {
        let deadline = Instant::now() + timeout;
        loop {
            let jobs = self.store.list_jobs(app.id).await.unwrap();
            if ok(&jobs) {
                return jobs;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; jobs: {:#?}", summary(&jobs));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn up(jobs: &[Job]) -> Vec<&Job> {
    jobs.iter().filter(|j| j.state == JobState::Up).collect()
}

/// Up jobs per host id, sorted.
pub fn per_host(jobs: &[Job]) -> Vec<(String, usize)> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for j in up(jobs) {
        *m.entry(j.host_id.clone().unwrap_or_default()).or_default() += 1;
    }
    m.into_iter().collect()
}

pub fn summary(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| {
            format!(
                "{} {:?} {} restarts={} err={:?}",
                j.id,
                j.process_type,
                j.state.as_str(),
                j.restarts,
                j.host_error
            )
        })
        .collect()
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}
