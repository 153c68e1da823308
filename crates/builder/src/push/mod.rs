//! The push flow (Flynn's `flynn-receiver`): what happens between `git push` sending its objects
//! and the refs being updated. The repo's `pre-receive` hook (`slipway git-hook`, see [`hook`])
//! posts the ref updates to `POST /APP.git/slipway-hook`; the server checks the branch, takes
//! the app's push lock, unpacks the pushed commit, builds it ([`crate::pipeline::build`]),
//! creates the artifact and release, deploys, and streams every line back, which git shows the
//! pusher as `remote: …`. The hook exits non-zero on any failure, so git rejects the push: the
//! ref is not updated and the previous release keeps serving.
//!
//! Wire format of the hook endpoint: a JSON [`HookRequest`] in, newline-delimited JSON
//! [`HookEvent`]s out, the last one `ok` or `error`.

mod buildlog;
pub mod hook;
pub(crate) mod lease;
pub mod release;
pub mod source;
pub mod submodules;

use crate::pipeline::{BuildContext, BuildError, BuildInput};
use crate::receiver::{Receiver, Session, plain};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use slipway_store::Store;
use slipway_types::App;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Branches that deploy when `app.meta["deploy_branch"]` names none.
pub const DEFAULT_DEPLOY_BRANCHES: [&str; 2] = ["main", "master"];
/// The app meta key naming the deploy branch.
pub const DEPLOY_BRANCH_KEY: &str = "deploy_branch";

/// Where a push records its lease on this machine (under the build data dir), so the next
/// process releases the leases of pushes that died with this one (`lease::release_dead`).
pub(crate) const LEASES_DIR: &str = "leases";
const ZERO: &str = "0000000000000000000000000000000000000000";

/// One line of the hook's stdin: `old new ref`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    #[serde(rename = "ref")]
    pub name: String,
}

/// What the hook sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookRequest {
    /// The push's token (from `SLIPWAY_PUSH_TOKEN`): ties the hook to a running receive-pack.
    pub token: String,
    pub updates: Vec<RefUpdate>,
    /// `GIT_QUARANTINE_PATH`: where git keeps the pushed objects until the hook accepts them.
    #[serde(default)]
    pub quarantine: Option<String>,
}

/// What the server streams back, one JSON object per line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A line for the pusher.
    Line(String),
    /// The push is deployed: accept it.
    Ok,
    /// Reject the push, saying why.
    Error(String),
}

/// What the push flow needs: the store and the build pipeline.
pub struct Pusher {
    pub store: Arc<dyn Store>,
    pub build: BuildContext,
    /// The stack of apps that name none (`app.meta["stack"]`).
    pub default_stack: String,
}

/// `POST /APP.git/slipway-hook`.
pub(crate) async fn hook_endpoint(
    State(r): State<Arc<Receiver>>,
    Path(repo): Path<String>,
    body: Bytes,
) -> Response {
    let req: HookRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad hook request: {e}")),
    };
    let Some(session) = r.session(&req.token) else {
        return plain(
            StatusCode::FORBIDDEN,
            "unknown push: the hook only runs inside a push to the Slipway git URL".into(),
        );
    };
    let name = repo.strip_suffix(".git").unwrap_or(&repo);
    if name != session.app.name && name != session.app.id.to_string() {
        return plain(
            StatusCode::FORBIDDEN,
            "the push token is for another app".into(),
        );
    }
    let (tx, rx) = mpsc::channel::<HookEvent>(256);
    // The flow's events pass through the build recorder on their way out (buildlog.rs).
    let (flow_tx, flow_rx) = mpsc::channel::<HookEvent>(256);
    let trace = buildlog::SharedTrace::default();
    tokio::spawn(buildlog::tee(flow_rx, tx, r.store.clone(), trace.clone()));
    let tx = flow_tx;
    // The hook going away (its git push was interrupted) cancels the build like the
    // receive-pack request ending does.
    let gone = session.cancel.child_token();
    let drop_guard = gone.clone().drop_guard();
    tokio::spawn(async move {
        let out = Out {
            tx: tx.clone(),
            trace,
        };
        let end = match run(&r, &session, &req, &out, &gone).await {
            Ok(()) => HookEvent::Ok,
            Err(message) => HookEvent::Error(message),
        };
        let _ = tx.send(end).await;
    });
    let stream = futures_util::stream::unfold((rx, drop_guard), |(mut rx, g)| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).expect("serialisable");
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), (rx, g)))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Lines to the pusher.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<HookEvent>,
    trace: buildlog::SharedTrace,
}

impl Out {
    /// The build of `commit` starts: from here on the push is recorded as a build.
    fn building(&self, app: &App, commit: &str) {
        let started = (app.id, commit.to_string(), slipway_types::Timestamp::now());
        self.trace.lock().expect("trace lock").started = Some(started);
    }

    /// The push made `release` (its build record goes with it).
    fn released(&self, release: slipway_types::Id) {
        self.trace.lock().expect("trace lock").release = Some(release);
    }

    async fn say(&self, line: impl Into<String>) {
        let _ = self.tx.send(HookEvent::Line(line.into())).await;
    }
}

/// The deploy branches of `app`.
pub fn deploy_branches(app: &App) -> Vec<String> {
    match app.meta.get(DEPLOY_BRANCH_KEY).map(|b| b.trim()) {
        Some(b) if !b.is_empty() => vec![b.trim_start_matches("refs/heads/").to_string()],
        _ => DEFAULT_DEPLOY_BRANCHES
            .iter()
            .map(|b| b.to_string())
            .collect(),
    }
}

/// The one update that deploys, or why the push is refused.
fn deploy_update<'a>(app: &App, updates: &'a [RefUpdate]) -> Result<&'a RefUpdate, String> {
    let branches = deploy_branches(app);
    let named = branches.join(" or ");
    let mut found = None;
    for u in updates {
        let branch = u.name.strip_prefix("refs/heads/");
        if !branch.is_some_and(|b| branches.iter().any(|d| d == b)) {
            return Err(format!(
                "{} is not deployed: {} deploys the {named} branch. Push it there with \
                 `git push slipway {}:{}` (or set another deploy branch: \
                 `slipway meta set {DEPLOY_BRANCH_KEY}=BRANCH`)",
                u.name,
                app.name,
                branch.unwrap_or("HEAD"),
                branches[0],
            ));
        }
        if u.new.bytes().all(|b| b == b'0') {
            return Err(format!(
                "{} is {}'s deploy branch: it cannot be deleted",
                u.name, app.name
            ));
        }
        if found.is_some() {
            return Err(format!(
                "push one deploy branch at a time ({named}); this push updates several"
            ));
        }
        found = Some(u);
    }
    found.ok_or_else(|| "the push updates no branch".to_string())
}

async fn run(
    r: &Arc<Receiver>,
    session: &Session,
    req: &HookRequest,
    out: &Out,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let clock = Clock::start(&session.app.name);
    let update = deploy_update(&session.app, &req.updates)?;
    let waited = hold_push_lock(r, session, update, out, cancel).await?;
    clock.mark("push lock held");
    // The app receive-pack resolved is the app as it is, unless this push waited for another
    // one: that one deployed a release since, so read it again (the only second read).
    let app = match waited {
        true => r
            .store
            .get_app(session.app.id)
            .await
            .map_err(|e| format!("cannot read the app: {e}"))?,
        false => session.app.clone(),
    };
    out.building(&app, &update.new);
    out.say(format!("-----> Building {}...", app.name)).await;
    let src = check_out(&r.pusher, session, req, update, out).await?;
    clock.mark("source checked out");
    let prev = match app.release {
        Some(id) => Some(
            r.store
                .get_release(id)
                .await
                .map_err(|e| format!("cannot read the current release: {e}"))?,
        ),
        None => None,
    };
    let stack = crate::pipeline::app_stack(&app, &r.pusher.default_stack);
    let input = BuildInput {
        app: app.clone(),
        env: prev.as_ref().map(|p| p.env.clone()).unwrap_or_default(),
        source_dir: src.path().to_path_buf(),
        commit: update.new.clone(),
        stack: stack.clone(),
    };
    let built = build(&r.pusher, input, out, cancel).await;
    clock.mark("build done");
    drop(src);
    // A push that lost the app's lease to another one (its renewals failed for longer than
    // the lease) was cancelled; say why rather than "the build was stopped".
    if (session.lease.lock().expect("session lease").as_ref()).is_some_and(|l| l.lost()) {
        return Err(format!(
            "this push lost its lock on {} to another push (the store was unreachable for longer than the lock lasts); nothing was deployed: fetch, merge and push again",
            app.name
        ));
    }
    let built = built?;

    // From here on the push is committed to: cancelling would leave a half-made deploy.
    out.say("-----> Creating release...").await;
    let slug = release::slug(&built, &stack, &update.new);
    let artifact = r
        .store
        .create_artifact(&slipway_deploy::release::slug_artifact(&slug))
        .await
        .map_err(|e| format!("cannot create the slug artifact: {e}"))?;
    let new = slipway_deploy::release::release_from_slug(&app, prev.as_ref(), artifact.id, &slug);
    let rel = r
        .store
        .create_release(app.id, &new)
        .await
        .map_err(|e| format!("cannot create the release: {e}"))?;
    out.released(rel.id);
    clock.mark("artifact and release created");
    deploy(&r.store, &rel, out).await?;
    clock.mark("deployed");
    out.say("=====> Application deployed").await;
    let app = App {
        release: Some(rel.id),
        ..app
    };
    after_deploy(&r.store, &session.repo, &update.name, &app).await;
    clock.mark("push accepted");
    Ok(())
}

/// One push per app at a time: takes the app's push lock (saying so when another push holds
/// it) and keeps it in the session until receive-pack has updated the refs. A push that
/// waited must not overwrite what the one before it deployed: its branch must still be where
/// this push started from. Returns whether it waited.
async fn hold_push_lock(
    r: &Arc<Receiver>,
    session: &Session,
    update: &RefUpdate,
    out: &Out,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<bool, String> {
    let lock = r.app_lock(session.app.id);
    let mut waited = false;
    let guard = match lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            waited = true;
            out.say(format!(
                "-----> Another push to {} is in progress; waiting for it to finish...",
                session.app.name
            ))
            .await;
            tokio::select! {
                g = lock.lock_owned() => g,
                _ = cancel.cancelled() => return Err("push cancelled".into()),
            }
        }
    };
    *session.lock.lock().expect("session lock") = Some(guard);
    let mut lease =
        lease::PushLease::acquire(r.store.clone(), &session.app, |line| out.say(line), cancel)
            .await?;
    lease.record_in(&r.pusher.build.data_dir.join(LEASES_DIR));
    waited |= lease.waited;
    *session.lease.lock().expect("session lease") = Some(lease);
    // This copy of the repo was restored as the store recorded it when the push began; a push
    // through another controller that landed since recorded another one.
    let recorded = r
        .store
        .git_repo_digest(session.app.id)
        .await
        .map_err(|e| format!("cannot read the app's repository digest: {e}"))?;
    if recorded.is_some() && recorded != crate::repo_sync::copy_digest(&session.repo) {
        return Err(format!(
            "{} changed while this push waited (another push, through another controller, deployed it): fetch, merge and push again",
            update.name
        ));
    }
    let current = git_rev(&session.repo, &update.name).await;
    let expected =
        (update.old != ZERO && !update.old.bytes().all(|b| b == b'0')).then(|| update.old.clone());
    if current != expected {
        return Err(format!(
            "{} changed while this push waited (another push deployed it): fetch, merge and push again",
            update.name
        ));
    }
    Ok(waited)
}

/// The pushed commit (and its submodules) in a scratch dir of its own, within the source
/// size limit; the objects may still be in git's quarantine dir, which must be the repo's.
async fn check_out(
    pusher: &Pusher,
    session: &Session,
    req: &HookRequest,
    update: &RefUpdate,
    out: &Out,
) -> Result<Scratch, String> {
    let src_root = pusher.build.data_dir.join("sources");
    std::fs::create_dir_all(&src_root).map_err(|e| format!("cannot make a build dir: {e}"))?;
    let src = Scratch(
        tempfile::Builder::new()
            .prefix("push-")
            .tempdir_in(&src_root)
            .map_err(|e| format!("cannot make a build dir: {e}"))?
            .keep(),
    );
    let quarantine = match &req.quarantine {
        Some(q) => Some(source::quarantine_dir(&session.repo, q).ok_or_else(|| {
            "the hook named an object directory outside the app's repository".to_string()
        })?),
        None => None,
    };
    let (repo, commit, dest) = (
        session.repo.clone(),
        update.new.clone(),
        src.path().to_path_buf(),
    );
    let max = pusher.build.limits.source_bytes;
    // Submodule fetches say what they fetch as they go (they can take a while).
    let tx = out.tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut say = |line: String| {
            let _ = tx.blocking_send(HookEvent::Line(line));
        };
        source::checkout(&repo, quarantine.as_deref(), &commit, &dest, max, &mut say)
    })
    .await
    .map_err(|e| format!("cannot unpack the pushed commit: {e}"))?
    .map_err(|e| e.to_string())?;
    Ok(src)
}

/// Builds `input` with the build's lines relayed to the pusher; a cancelled push stops the
/// build (its job too).
async fn build(
    pusher: &Pusher,
    input: BuildInput,
    out: &Out,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<crate::pipeline::Built, String> {
    let (line_tx, mut line_rx) = mpsc::channel::<String>(256);
    let relay = {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(line) = line_rx.recv().await {
                out.say(line).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let built = tokio::select! {
        b = crate::pipeline::build(&pusher.build, input, line_tx) => b,
        _ = cancel.cancelled() => Err(BuildError::Failed("push cancelled: the build was stopped".into())),
    };
    crate::metrics::build_done(started, &built);
    let _ = relay.await;
    built.map_err(|e| match e {
        BuildError::Failed(m) => m,
        BuildError::Internal(m) => format!("the build could not run: {m}"),
    })
}

/// Deploys `rel` through the one deploy path, its progress relayed to the pusher.
async fn deploy(
    store: &Arc<dyn Store>,
    rel: &slipway_types::Release,
    out: &Out,
) -> Result<(), String> {
    let (say_tx, mut say_rx) = mpsc::unbounded_channel::<String>();
    let relay = {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(line) = say_rx.recv().await {
                out.say(line).await;
            }
        })
    };
    let res = slipway_deploy::deploy_and_wait(store, rel, move |l| {
        let _ = say_tx.send(l);
    })
    .await;
    let _ = relay.await;
    res.map(|_| ()).map_err(|e| e.to_string())
}

/// After a deploy: clones check out what was deployed (HEAD follows the branch pushed last),
/// and old slugs go. `app` has the new release as current; the store refuses to delete a
/// current release or an artifact any release names, so a release someone deployed meanwhile
/// is safe too.
async fn after_deploy(store: &Arc<dyn Store>, repo: &std::path::Path, branch: &str, app: &App) {
    // Usually HEAD already follows it (reading the file spares starting git on every push).
    let head = std::fs::read_to_string(repo.join("HEAD")).unwrap_or_default();
    if head.trim_end() != format!("ref: {branch}") {
        let _ = tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(["symbolic-ref", "HEAD", branch])
            .stdin(std::process::Stdio::null())
            .status()
            .await;
    }
    match release::trim_old_slugs(store, app).await {
        Ok(t) if t == release::Trimmed::default() => {}
        Ok(t) => tracing::info!(
            app = %app.name,
            "deleted {} old slug release(s) and {} slug artifact(s)",
            t.releases,
            t.slugs
        ),
        Err(e) => tracing::warn!(app = %app.name, "cannot trim old slugs: {e}"),
    }
}

/// The push's checkout dir, removed when dropped, whatever its depth (see
/// [`crate::tree::remove_tree`]; `std::fs::remove_dir_all` recurses once per level).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = crate::tree::remove_tree(&self.0) {
            tracing::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Debug-level timings of a push's steps (`SLIPWAY_LOG=slipway_builder=debug`): what
/// `bench/push.sh` breaks a push down with.
struct Clock<'a> {
    app: &'a str,
    t0: std::time::Instant,
}

impl<'a> Clock<'a> {
    fn start(app: &'a str) -> Clock<'a> {
        tracing::debug!(app, "push timing: hook request in");
        Clock {
            app,
            t0: std::time::Instant::now(),
        }
    }
    fn mark(&self, what: &str) {
        let ms = self.t0.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(app = self.app, "push timing: {what} at +{ms:.1} ms");
    }
}

/// The commit `refname` points at in `repo`, if it exists.
async fn git_rev(repo: &std::path::Path, refname: &str) -> Option<String> {
    let out = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "-q", "--verify"])
        .arg(format!("{refname}^{{commit}}"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(meta: &[(&str, &str)]) -> App {
        serde_json::from_value(serde_json::json!({
            "id": "0b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
            "name": "demo",
            "meta": meta.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "strategy": "all-at-once",
            "deploy_timeout": 120,
            "created_at": "2026-11-22T05:00:00Z",
            "updated_at": "2026-11-22T05:00:00Z",
        }))
        .unwrap()
    }

    fn upd(name: &str, new: &str) -> RefUpdate {
        RefUpdate {
            old: ZERO.into(),
            new: new.into(),
            name: name.into(),
        }
    }

    #[test]
    fn main_or_master_deploy_by_default() {
        let a = app(&[]);
        let c = "a".repeat(40);
        assert!(deploy_update(&a, &[upd("refs/heads/main", &c)]).is_ok());
        assert!(deploy_update(&a, &[upd("refs/heads/master", &c)]).is_ok());
        let e = deploy_update(&a, &[upd("refs/heads/feature", &c)]).unwrap_err();
        assert!(e.contains("refs/heads/feature is not deployed"), "{e}");
        assert!(e.contains("main or master"), "{e}");
        let e = deploy_update(&a, &[upd("refs/tags/v1", &c)]).unwrap_err();
        assert!(e.contains("refs/tags/v1"), "{e}");
        let e = deploy_update(&a, &[upd("refs/heads/main", ZERO)]).unwrap_err();
        assert!(e.contains("cannot be deleted"), "{e}");
    }

    #[test]
    fn the_deploy_branch_is_configurable() {
        let a = app(&[("deploy_branch", "production")]);
        let c = "b".repeat(40);
        assert!(deploy_update(&a, &[upd("refs/heads/production", &c)]).is_ok());
        let e = deploy_update(&a, &[upd("refs/heads/main", &c)]).unwrap_err();
        assert!(e.contains("deploys the production branch"), "{e}");
    }
}
