//! The git receiver: git's smart HTTP protocol served by Slipway itself (Flynn's `gitreceive`),
//! on the controller's port behind its API key.
//!
//! `GET /APP.git/info/refs?service=…` and `POST /APP.git/git-{receive,upload}-pack` spawn
//! `git receive-pack --stateless-rpc` / `git upload-pack --stateless-rpc` and stream the bodies
//! both ways (DESIGN.md §5: this handles chunked pushes where `git http-backend` did not).
//!
//! One bare repo per app, kept between pushes, at `<repos>/<app id>.git`: the path is built from
//! the app's id as the store has it, never from the URL, so no name can point outside the repos
//! dir. Each repo has a `pre-receive` hook (`slipway git-hook`) that hands the push to
//! [`crate::push`] and relays its lines; the hook's exit status accepts or rejects the push.
//! The local repo is a copy: after a push that changed refs it is stored in the blob store,
//! and restored from there before a push or fetch finds it missing or stale
//! ([`crate::repo_sync`]), so any controller serves any app's pushes.

use crate::push::Pusher;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use slipway_store::{Store, StoreError};
use slipway_types::App;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::repo_sync::refs;

/// The hook every app repo runs before accepting a push. It only execs the binary the server
/// names in the environment, so a server upgrade needs no hook rewrite, and a push that does not
/// come through the server (no env) is refused instead of updating refs without a deploy.
const PRE_RECEIVE: &str = "#!/bin/sh\n\
# Installed by slipway: hands the push to the slipway server, which builds and deploys it.\n\
if [ -z \"$SLIPWAY_HOOK_EXE\" ]; then\n\
  echo 'This repository is managed by slipway: push through the slipway git URL (slipway info).' >&2\n\
  exit 1\n\
fi\n\
exec \"$SLIPWAY_HOOK_EXE\" git-hook\n";

/// Largest pack a push may send (git's `receive.maxInputSize`): over it git itself stops with
/// `pack exceeds maximum allowed size`.
pub const MAX_PUSH_BYTES: u64 = 1 << 30;
/// Largest gzip-encoded request body (git only gzips requests that fit its 1 MiB post buffer).
const MAX_GZIP_BODY: usize = 16 << 20;

/// How the receiver is set up.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Where the bare repos live (`<data>/repos`).
    pub repos_dir: PathBuf,
    /// The `slipway` binary the hook runs (`std::env::current_exe()`).
    pub hook_exe: PathBuf,
    /// The server's URL as the hook (a local process) reaches it.
    pub server_url: String,
    /// The controller's API key, which the hook presents.
    pub api_key: String,
}

/// A push in progress: created when `git receive-pack` starts, ended (cancelling its build)
/// when that request ends — by finishing, or because the client went away (Ctrl-C).
pub(crate) struct Session {
    pub app: App,
    pub repo: PathBuf,
    pub cancel: CancellationToken,
    /// The app's push lock once the hook's build holds it: kept until `receive-pack` has
    /// updated the refs, so the next push to the app sees them.
    pub lock: Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    /// The app's push lease in the store (the lock across controllers), held as long.
    pub lease: Mutex<Option<crate::push::lease::PushLease>>,
}

/// Removes its session (and cancels it) when dropped.
struct SessionGuard {
    token: String,
    receiver: Arc<Receiver>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let session = self
            .receiver
            .sessions
            .lock()
            .expect("sessions")
            .remove(&self.token);
        if let Some(s) = session {
            s.cancel.cancel();
        }
    }
}

pub struct Receiver {
    pub(crate) cfg: ReceiverConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) pusher: Arc<Pusher>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// One push at a time per app (by id).
    locks: Mutex<HashMap<slipway_types::Id, Arc<tokio::sync::Mutex<()>>>>,
    /// One restore from the blob store at a time (they are rare: after another controller's
    /// push).
    pub(crate) restore_lock: tokio::sync::Mutex<()>,
    /// Per app (by id): held shared by every request while its git process works in the app's
    /// copy, and exclusively by a restore while it swaps the copy, so a restore never pulls a
    /// repository from under a running push or fetch ([`crate::repo_sync`]).
    in_use: Mutex<HashMap<slipway_types::Id, Arc<tokio::sync::RwLock<()>>>>,
}

/// A request's hold on its app's repository copy: no restore swaps it while this lives.
pub(crate) type RepoInUse = tokio::sync::OwnedRwLockReadGuard<()>;

impl Receiver {
    pub fn new(cfg: ReceiverConfig, store: Arc<dyn Store>, pusher: Arc<Pusher>) -> Arc<Receiver> {
        Arc::new(Receiver {
            cfg,
            store,
            pusher,
            sessions: Default::default(),
            locks: Default::default(),
            restore_lock: Default::default(),
            in_use: Default::default(),
        })
    }

    /// The routes, to merge into the controller's router (behind its API key).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/{repo}/info/refs", get(info_refs))
            .route("/{repo}/git-receive-pack", post(receive_pack))
            .route("/{repo}/git-upload-pack", post(upload_pack))
            .route("/{repo}/slipway-hook", post(crate::push::hook_endpoint))
            .with_state(self.clone())
    }

    /// Removes what a deleted app leaves here (its repo, its build cache): at once when the
    /// store reports the deletion, and in a sweep at start and then every hour (for deletions
    /// while the server was down, or by another controller). At start, also the push leases of
    /// pushes that died with the previous process (`push::lease::release_dead`).
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            // Pushes do not outlive their process: the dead one's leases go now, not at their TTL.
            let dir = me.pusher.build.data_dir.join(crate::push::LEASES_DIR);
            crate::push::lease::release_dead(me.store.as_ref(), &dir).await;
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.remove_orphan_repos().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("removed {n} repo(s) of deleted apps"),
                    Err(e) => tracing::warn!("cannot sweep the repos dir: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.follow_deletions().await });
    }

    /// Forgets every app the store reports deleted from now on.
    async fn follow_deletions(&self) {
        let mut notifier = self.store.event_notifier();
        let mut last = *notifier.borrow_and_update();
        loop {
            let filter = slipway_types::EventFilter {
                object_types: vec![slipway_types::ObjectType::App],
                since_id: Some(last),
                limit: Some(100),
                ..Default::default()
            };
            let more = match self.store.list_events(&filter).await {
                Ok(events) => {
                    for e in &events {
                        last = last.max(e.id);
                        if e.op == slipway_types::EventOp::Delete
                            && let Some(id) = e.app_id
                        {
                            self.forget_app(id).await;
                        }
                    }
                    events.len() == 100
                }
                Err(e) => {
                    tracing::warn!("cannot read app events: {e}");
                    false
                }
            };
            if more {
                continue;
            }
            // Woken by this process's writes; polled for other controllers'.
            let wait = std::time::Duration::from_secs(10);
            if tokio::time::timeout(wait, notifier.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Removes app `id`'s repo and build cache (its data must not outlive it: a repo is
    /// clonable data).
    pub async fn forget_app(&self, id: slipway_types::Id) {
        let repo = self.cfg.repos_dir.join(format!("{id}.git"));
        let data = &self.pusher.build.data_dir;
        // The cache image, and the plain directory caches were before it.
        let cache = crate::cache::image_path(data, &id.to_string());
        let legacy = data.join("build-cache").join(id.to_string());
        let marker = data.join("build-cache").join(format!("{id}.digest"));
        let res = tokio::task::spawn_blocking(move || {
            crate::tree::remove_tree(&repo)?;
            crate::tree::remove_tree(&cache)?;
            crate::tree::remove_tree(&marker)?;
            crate::tree::remove_tree(&legacy)
        })
        .await;
        match res {
            Ok(Ok(())) => {
                tracing::info!(app = %id, "removed the deleted app's repo and build cache")
            }
            Ok(Err(e)) => tracing::warn!(app = %id, "cannot remove the deleted app's files: {e}"),
            Err(e) => tracing::warn!(app = %id, "cannot remove the deleted app's files: {e}"),
        }
    }

    /// Removes `<repos>/<id>.git` and `build-cache/<id>` of every app id the store does not
    /// know; returns how many.
    pub(crate) async fn remove_orphan_repos(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        let caches = self.pusher.build.data_dir.join("build-cache");
        for (dir, suffix) in [
            (&self.cfg.repos_dir, ".git"),
            (&caches, ".img"),
            (&caches, ".digest"),
            (&caches, ""),
        ] {
            let entries = match std::fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_suffix(suffix)
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                else {
                    continue;
                };
                if let Err(StoreError::NotFound(_)) = self.store.get_app(id).await {
                    let p = entry.path();
                    tokio::task::spawn_blocking(move || crate::tree::remove_tree(&p))
                        .await
                        .map_err(std::io::Error::other)??;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    pub(crate) fn session(&self, token: &str) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions").get(token).cloned()
    }

    pub(crate) fn app_lock(&self, app: slipway_types::Id) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("locks")
            .entry(app)
            .or_default()
            .clone()
    }

    /// The lock that keeps restores from swapping `app`'s repository while git works in it.
    pub(crate) fn repo_use(&self, app: slipway_types::Id) -> Arc<tokio::sync::RwLock<()>> {
        self.in_use
            .lock()
            .expect("in_use")
            .entry(app)
            .or_default()
            .clone()
    }

    /// The app a `/APP.git` path segment names, and its repo (created on first use), held
    /// against restores for as long as the caller keeps the [`RepoInUse`].
    pub(crate) async fn open_repo(
        &self,
        segment: &str,
    ) -> Result<(App, PathBuf, RepoInUse), Response> {
        let Some(name) = segment.strip_suffix(".git") else {
            return Err(not_found(format!(
                "{segment:?} is not a Slipway git URL: use <server>/APP.git (see `slipway info`)"
            )));
        };
        let valid =
            slipway_types::validate_app_name(name).is_ok() || uuid::Uuid::parse_str(name).is_ok();
        if !valid {
            return Err(not_found(format!(
                "no app named {name:?}: app names are lowercase letters, digits and dashes"
            )));
        }
        let app = match slipway_store::app_by_id_or_name(self.store.as_ref(), name).await {
            Ok(app) => app,
            Err(StoreError::NotFound(_)) => {
                return Err(not_found(format!(
                    "app {name:?} not found: create it with `slipway create {name}`"
                )));
            }
            // The status the controller's API gives the same store error (503 for an
            // unreachable database, 500 for another failure).
            Err(e) => {
                let status = slipway_api_error::status_of(&e);
                tracing::warn!("git receiver: cannot read app {name:?}: {e}");
                return Err(plain(status, format!("cannot read app {name:?}: {e}")));
            }
        };
        let repo = self.cfg.repos_dir.join(format!("{}.git", app.id));
        if let Err(e) = self.restore_repo(&app, &repo).await {
            tracing::warn!(app = %app.name, "cannot restore the app's repository: {e}");
            return Err(unavailable(format!(
                "cannot restore the app's repository from the blob store: {e}"
            )));
        }
        let in_use = self.repo_use(app.id).read_owned().await;
        let dir = repo.clone();
        match tokio::task::spawn_blocking(move || init_repo(&dir, false)).await {
            Ok(Ok(())) => Ok((app, repo, in_use)),
            Ok(Err(e)) => Err(unavailable(format!(
                "cannot prepare the app's repository: {e}"
            ))),
            Err(e) => Err(unavailable(format!(
                "cannot prepare the app's repository: {e}"
            ))),
        }
    }
}

/// `git init --bare` and the receiver's settings, in `dir` (new, or holding a restored
/// repository's data without its config).
fn git_init(dir: &std::path::Path) -> std::io::Result<()> {
    let out = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "git init failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let configs: [(&str, String); 3] = [
        // Check every object pushed: refuses trees with `..`, `.git` or odd modes.
        ("receive.fsckObjects", "true".into()),
        ("receive.maxInputSize", MAX_PUSH_BYTES.to_string()),
        ("receive.denyDeletes", "true".into()),
    ];
    for (k, v) in configs {
        git_config(dir, k, &v)?;
    }
    Ok(())
}

/// Creates the bare repo if needed (in a temp dir renamed into place, so two first pushes
/// cannot see a half-made repo), and (re)writes its hook and settings. `restored`: `repo` holds
/// a restored repository's data and is initialised in place.
pub(crate) fn init_repo(repo: &std::path::Path, restored: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = repo.parent().expect("repo path has a parent");
    if restored {
        git_init(repo)?;
    } else if !repo.join("HEAD").exists() {
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".init-")
            .tempdir_in(parent)?;
        git_init(tmp.path())?;
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, repo) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !repo.join("HEAD").exists() {
                return Err(e);
            }
        }
    }
    let hook = repo.join("hooks/pre-receive");
    if std::fs::read_to_string(&hook).ok().as_deref() != Some(PRE_RECEIVE) {
        std::fs::create_dir_all(repo.join("hooks"))?;
        let tmp = repo.join("hooks/.pre-receive.tmp");
        std::fs::write(&tmp, PRE_RECEIVE)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &hook)?;
    }
    Ok(())
}

fn git_config(repo: &std::path::Path, key: &str, value: &str) -> std::io::Result<()> {
    let st = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["config", key, value])
        .stdin(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("git config {key} failed")))
    }
}

/// An error git shows the pusher: git prints `text/plain` bodies of failed requests as
/// `remote: …` lines.
pub(crate) fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn not_found(message: String) -> Response {
    plain(StatusCode::NOT_FOUND, message)
}

fn unavailable(message: String) -> Response {
    tracing::warn!("git receiver: {message}");
    plain(StatusCode::SERVICE_UNAVAILABLE, message)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Receive,
    Upload,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Receive => "receive-pack",
            Service::Upload => "upload-pack",
        }
    }
}

async fn info_refs(
    State(r): State<Arc<Receiver>>,
    Path(repo): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let service = match q.get("service").map(String::as_str) {
        Some("git-receive-pack") => Service::Receive,
        Some("git-upload-pack") => Service::Upload,
        _ => {
            return plain(
                StatusCode::FORBIDDEN,
                "only git's smart HTTP protocol is served: use git 1.6.6 or newer".into(),
            );
        }
    };
    let (_app, path, _in_use) = match r.open_repo(&repo).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let out = tokio::process::Command::new("git")
        .args([service.name(), "--stateless-rpc", "--advertise-refs"])
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let out = match out {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            return unavailable(format!(
                "git {} failed: {}",
                service.name(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return unavailable(format!("cannot run git: {e}")),
    };
    let mut body = pkt_line(&format!("# service=git-{}\n", service.name()));
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&out);
    (
        [
            (
                header::CONTENT_TYPE,
                format!("application/x-git-{}-advertisement", service.name()),
            ),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}

fn pkt_line(s: &str) -> Vec<u8> {
    format!("{:04x}{s}", s.len() + 4).into_bytes()
}

async fn receive_pack(
    State(r): State<Arc<Receiver>>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    rpc(r, repo, headers, body, Service::Receive).await
}

async fn upload_pack(
    State(r): State<Arc<Receiver>>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    rpc(r, repo, headers, body, Service::Upload).await
}

async fn rpc(
    r: Arc<Receiver>,
    repo: String,
    headers: HeaderMap,
    body: Body,
    service: Service,
) -> Response {
    let (app, path, in_use) = match r.open_repo(&repo).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
    let mut cmd = tokio::process::Command::new("git");
    cmd.args([service.name(), "--stateless-rpc"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut guard = None;
    // The refs before a push: stored again afterwards only if it changed them.
    let mut store_after = None;
    if service == Service::Receive {
        store_after = Some((r.clone(), app.clone(), path.clone(), refs(&path).await));
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        cmd.env("SLIPWAY_HOOK_EXE", &r.cfg.hook_exe)
            .env(
                "SLIPWAY_HOOK_URL",
                format!("{}/{repo}/slipway-hook", r.cfg.server_url),
            )
            .env("SLIPWAY_HOOK_KEY", &r.cfg.api_key)
            .env("SLIPWAY_PUSH_TOKEN", &token)
            .env("SLIPWAY_APP", &app.name);
        let session = Arc::new(Session {
            app: app.clone(),
            repo: path.clone(),
            cancel: CancellationToken::new(),
            lock: Mutex::new(None),
            lease: Mutex::new(None),
        });
        r.sessions
            .lock()
            .expect("sessions")
            .insert(token.clone(), session);
        guard = Some(SessionGuard {
            token,
            receiver: r.clone(),
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return unavailable(format!("cannot run git {}: {e}", service.name())),
    };
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    tokio::spawn(feed_stdin(body, gzip, stdin));
    let svc = service.name();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!("git {svc}: {line}");
        }
    });
    // The child and the session live as long as the response body: when git finishes, or the
    // client goes away, both are dropped (git is killed, the push's build cancelled). After a
    // push, the repo is stored before the body ends (the session's push lock still held), so
    // the next push, to whichever controller, finds it.
    let tail = futures_util::stream::once(async move {
        let mut child = child;
        if let Some((r, app, path, before)) = store_after {
            let ok = child.wait().await.is_ok_and(|s| s.success());
            if ok && refs(&path).await != before
                && let Err(e) = r.store_repo(&app, &path).await
            {
                tracing::warn!(
                    app = %app.name,
                    "the push is in, but its repository could not be stored for other controllers: {e}"
                );
            }
        }
        drop(guard);
        drop(in_use);
    })
    .filter_map(|()| std::future::ready(None));
    let stream = tokio_util::io::ReaderStream::new(stdout).chain(tail);
    (
        [
            (
                header::CONTENT_TYPE,
                format!("application/x-git-{}-result", service.name()),
            ),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Copies the request body into git's stdin, un-gzipping it if git sent it compressed. A body
/// that fails midway just ends git's input: git reports the truncated pack itself.
async fn feed_stdin(body: Body, gzip: bool, mut stdin: tokio::process::ChildStdin) {
    let mut stream = body.into_data_stream();
    if gzip {
        let mut compressed = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            compressed.extend_from_slice(&chunk);
            if compressed.len() > MAX_GZIP_BODY {
                tracing::warn!("git receiver: gzip request over {MAX_GZIP_BODY} bytes refused");
                return;
            }
        }
        // Decoded a piece at a time, each piece written to git before the next is decoded: gzip
        // expands up to ~1000-fold, and un-gzipping the whole body first held up to
        // MAX_PUSH_BYTES of the server's memory per request (512 MiB of zeros: +576 MB).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let decode = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut d = flate2::read::GzDecoder::new(&compressed[..]).take(MAX_PUSH_BYTES);
            loop {
                let mut buf = vec![0u8; 64 << 10];
                match d.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        buf.truncate(n);
                        // git stopped reading: so do we.
                        if tx.blocking_send(buf).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        while let Some(piece) = rx.recv().await {
            if stdin.write_all(&piece).await.is_err() {
                break;
            }
        }
        drop(rx);
        if !matches!(decode.await, Ok(Ok(()))) {
            tracing::warn!("git receiver: bad gzip request body");
        }
        return;
    }
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if stdin.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!("git receiver: request body ended early: {e}");
                return;
            }
        }
    }
    let _ = stdin.shutdown().await;
}
