//! The build pipeline: source tree → build job (buildpacks in a container) → slug → blob store.

use crate::{buildpack, slug};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use slipway_blobstore::{BlobInfo, BlobStore};
use slipway_host::{HostJob, JobConfig, JobFiles, LogLine, Resources};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The stack a build (and the release built from it) runs on when the app names none.
pub const DEFAULT_STACK: &str = "busybox";

/// The app's stack: `app.meta["stack"]`, else `default`. The git receiver passes this as
/// [`BuildInput::stack`]; the artifact records it in `meta["stack"]`.
pub fn app_stack(app: &slipway_types::App, default: &str) -> String {
    app.meta
        .get("stack")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Whether `s` names a stack (rather than a path or something odd): see
/// [`slipway_types::validate_stack_name`].
pub fn valid_stack_name(s: &str) -> bool {
    slipway_types::validate_stack_name(s).is_ok()
}

/// Limits of one build. Hitting one fails the build with a message naming the limit.
#[derive(Clone, Debug)]
pub struct BuildLimits {
    /// Memory of the build container (default 1 GiB, Flynn's job default).
    pub memory_bytes: u64,
    /// Total size of the source tree's files (after `.slugignore`; default 100 MiB).
    pub source_bytes: u64,
    /// Size of the compressed slug (default 500 MiB, Heroku's cap).
    pub slug_bytes: u64,
    /// Wall-clock time of the build job (Heroku: 15 min).
    pub timeout: std::time::Duration,
    /// An app's build cache: when it is larger at the start of a build, it is emptied first.
    pub cache_bytes: u64,
    /// What the build may write (default 1 GiB, the job default): its build dir (`/app`, the
    /// output) is a filesystem of this size, and so is the build job's writable layer.
    pub disk_bytes: u64,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            memory_bytes: 1 << 30,
            source_bytes: 100 << 20,
            slug_bytes: 500 << 20,
            timeout: std::time::Duration::from_secs(30 * 60),
            cache_bytes: 2 << 30,
            disk_bytes: 1 << 30,
        }
    }
}

/// How the pipeline runs its build job: through the scheduler (so the job shows in `ps` as
/// type `build`, can be killed, and its lines reach the logs), or straight on one host.
#[async_trait]
pub trait JobRunner: Send + Sync + 'static {
    /// Starts `job` as a one-off job of `app`; returns the id the job got.
    async fn start(&self, app: &slipway_types::App, job: HostJob) -> Result<String, RunnerError>;
    /// The job's output until it exits.
    async fn output(
        &self,
        app: &slipway_types::App,
        id: &str,
    ) -> Result<BoxStream<'static, LogLine>, RunnerError>;
    /// Waits for the job to exit; its exit code (None if it never ran) and the host's reason.
    async fn wait(&self, app: &slipway_types::App, id: &str) -> Result<JobExit, RunnerError>;
    /// Stops the job (SIGTERM, SIGKILL after its grace period).
    async fn stop(&self, app: &slipway_types::App, id: &str) -> Result<(), RunnerError>;
}

/// Why a [`JobRunner`] could not start, follow, wait for or stop a build job: the scheduler's
/// or the host's own error, kept whole so the build's message says which refused and why.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Scheduler(#[from] slipway_scheduler::SchedError),
    #[error(transparent)]
    Host(#[from] slipway_host::HostError),
}

/// How a build job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobExit {
    /// None if the job never ran.
    pub exit: Option<slipway_host::ExitStatus>,
    /// The host's words for a job that failed (e.g. could not start).
    pub error: Option<String>,
    /// The job's collected directories (container path → blob digest): `/app`, `/cache`,
    /// `/slipway/out` (see `slipway_host::job_files`).
    pub outputs: BTreeMap<String, String>,
}

/// What a build needs besides its input.
pub struct BuildContext {
    pub blobs: Arc<dyn BlobStore>,
    pub jobs: Arc<dyn JobRunner>,
    /// Holds `build-cache/<app id>` (kept between builds) and `builds/<id>` (one per build,
    /// removed afterwards).
    pub data_dir: PathBuf,
    /// The bundled buildpacks (`buildpacks/` of the source tree, or installed next to it).
    pub buildpacks_dir: PathBuf,
    pub limits: BuildLimits,
    /// Where each app's build cache is recorded (a blob digest per app), so a build through
    /// any controller starts from the last one's cache; without it, this machine's copy only.
    pub caches: Option<Arc<dyn slipway_store::Store>>,
    /// This builder (`slipway server`'s): its build jobs carry its id and their build's, and it
    /// knows which builds it runs, so the jobs of builds a dead process ran are stopped
    /// (`crate::owner`). None: build jobs carry neither (tools, tests).
    pub owner: Option<Arc<crate::owner::Owner>>,
}

/// One build.
pub struct BuildInput {
    pub app: slipway_types::App,
    /// The app's current release env: written to `ENV_DIR`; `BUILDPACK_URL` picks buildpacks.
    pub env: BTreeMap<String, String>,
    /// The checked-out tree; `.slugignore` is applied to a copy, this dir is left as it is.
    pub source_dir: PathBuf,
    /// `SOURCE_VERSION`.
    pub commit: String,
    /// The stack to build on (see [`app_stack`]).
    pub stack: String,
}

/// A successful build.
#[derive(Clone, Debug)]
pub struct Built {
    pub slug: BlobInfo,
    pub slug_size: u64,
    /// From the Procfile, else the last buildpack's `default_process_types`.
    pub process_types: BTreeMap<String, String>,
    /// The buildpacks used (bundled names or URLs), in order.
    pub buildpacks: Vec<String>,
}

/// Why a build failed, in words for the user pushing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The user's app or buildpack failed (no buildpack detected, compile failed, a limit hit).
    #[error("{0}")]
    Failed(String),
    /// Slipway could not run the build (no host, blob store down, I/O).
    #[error("{0}")]
    Internal(String),
}

/// Largest Procfile: a bigger one fails the build (it is one line per process type).
pub const MAX_PROCFILE_BYTES: u64 = 1 << 20;

/// The unprivileged user builds run as (it owns `/app`, the cache and the output dir).
pub const BUILD_UID: u32 = 1000;
/// How long a cancelled build gets between SIGTERM and SIGKILL.
const STOP_GRACE_MS: u64 = 3000;
const BUILDER: &str = include_str!("builder.sh");

fn failed(msg: impl Into<String>) -> BuildError {
    BuildError::Failed(msg.into())
}

fn internal(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(format!("{what}: {e}"))
}

/// Runs the build, sending user-facing lines (buildpack output, `-----> …`) to `out` as they
/// come. Dropping the returned future stops the build job (within 10 s), so Ctrl-C on
/// `git push` cancels it. Errors are user-facing.
pub async fn build(
    ctx: &BuildContext,
    input: BuildInput,
    out: tokio::sync::mpsc::Sender<String>,
) -> Result<Built, BuildError> {
    let say = |line: String| {
        let out = out.clone();
        async move {
            // A client that went away stops caring about output, not the build: dropping
            // the future is how a build is cancelled.
            let _ = out.send(line).await;
        }
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = ctx.data_dir.join("builds").join(&id);
    if let Some(o) = &ctx.owner {
        o.begin(&id);
    }
    let mut guard = Guard {
        jobs: ctx.jobs.clone(),
        app: input.app.clone(),
        job: None,
        dir: Some(dir.clone()),
        cache: None,
        owner: ctx.owner.clone().map(|o| (o, id.clone())),
    };
    let xfer = crate::transfer::Xfer::new(dir.with_extension("xfer"));
    if let Err(e) = slipway_types::validate_stack_name(&input.stack) {
        // A stack is a name in the host's stacks dir; a path would make any host directory the
        // build's root filesystem.
        // The API's words, as a sentence: `Invalid stack "/": …`.
        let mut why = e.message;
        why[..1].make_ascii_uppercase();
        return Err(failed(format!(
            "{why}; set it with slipway meta set stack=bookworm"
        )));
    }
    sweep_stale(ctx.data_dir.join("builds"), ctx.limits.timeout).await;
    let res = run(ctx, input, &say, &dir, &mut guard, &xfer).await;
    guard.finish().await;
    res
}

async fn run<F, Fut>(
    ctx: &BuildContext,
    input: BuildInput,
    say: &F,
    dir: &std::path::Path,
    guard: &mut Guard,
    xfer: &crate::transfer::Xfer,
) -> Result<Built, BuildError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let app_dir = dir.join("app");
    let (env_dir, meta_dir, out_dir, bp_dir) = (
        dir.join("env"),
        dir.join("meta"),
        dir.join("out"),
        dir.join("buildpacks"),
    );
    // The app's cache, mounted here for this build (see crate::cache).
    let cache_dir = dir.join("cache");
    // The build dir is a filesystem of the disk limit: a build writing past it gets ENOSPC,
    // not the server's disk.
    let (d, bytes) = (dir.to_path_buf(), ctx.limits.disk_bytes);
    tokio::task::spawn_blocking(move || slipway_host::runc::disk::mount_bounded_dir(&d, bytes))
        .await
        .map_err(|e| internal("mounting the build dir", e))?
        .map_err(|e| internal("mounting the build dir", e))?;
    for d in [&env_dir, &meta_dir, &out_dir, &bp_dir, &cache_dir] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|e| internal(&format!("creating {}", d.display()), e))?;
    }
    let (data, app_id, bytes, c) = (
        ctx.data_dir.clone(),
        input.app.id.to_string(),
        ctx.limits.cache_bytes,
        cache_dir.clone(),
    );
    guard.cache =
        tokio::task::spawn_blocking(move || crate::cache::mount(&data, &app_id, bytes, &c))
            .await
            .map_err(|e| internal("mounting the build cache", e))?
            .map_err(|e| internal("mounting the build cache", e))?;
    if guard.cache.is_none() {
        say("-----> Another build of this app is using its cache: this one starts with an empty cache".into())
            .await;
    }

    // The cache the app's last build left, wherever it ran, when this copy is not it.
    if guard.cache.is_some() {
        crate::transfer::restore_cache(ctx, xfer, input.app.id, &cache_dir).await;
    }
    let (c, cap) = (cache_dir.clone(), ctx.limits.cache_bytes);
    let cleared = tokio::task::spawn_blocking(move || slug::clear_if_over(&c, cap))
        .await
        .map_err(|e| internal("checking the build cache", e))?
        .map_err(|e| internal("checking the build cache", e))?;
    match cleared {
        None => {}
        Some(slug::Cleared::TooLarge) => {
            say(format!(
                "-----> The build cache was larger than {}: starting with an empty one",
                slug::human_size(cap)
            ))
            .await
        }
        Some(slug::Cleared::Unusable(why)) => {
            say(format!(
                "-----> The build cache is {why}: starting with an empty one"
            ))
            .await
        }
    }

    // The source, with .slugignore applied, capped.
    let (src, dest, limit) = (
        input.source_dir.clone(),
        app_dir.clone(),
        ctx.limits.source_bytes,
    );
    let copied = tokio::task::spawn_blocking(move || slug::copy_source(&src, &dest, limit))
        .await
        .map_err(|e| internal("copying the source", e))?;
    match copied {
        Ok(c) if c.ignored > 0 => {
            say(format!(
                "-----> Deleting {} files matching .slugignore patterns.",
                c.ignored
            ))
            .await
        }
        Ok(_) => {}
        Err(slug::CopyError::TooLarge { limit }) => {
            return Err(failed(format!(
                "The source tree is larger than the limit of {}: remove large files from the \
                 repository or list them in .slugignore.",
                slug::human_size(limit)
            )));
        }
        Err(slug::CopyError::Refused(why)) => return Err(failed(why)),
        Err(e) => return Err(internal("copying the source", e)),
    }

    // ENV_DIR: one file per variable (names that are not plain file names are left out).
    for (k, v) in &input.env {
        if k.is_empty() || k.contains('/') || k.starts_with('.') || k.contains('\0') {
            continue;
        }
        tokio::fs::write(env_dir.join(k), v)
            .await
            .map_err(|e| internal("writing ENV_DIR", e))?;
    }

    // The buildpacks: container paths, and the names users gave them.
    let dot = slug::read_nofollow(&app_dir.join(".buildpacks"), 64 << 10)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let choice = buildpack::choose(&input.env, dot.as_deref(), &ctx.buildpacks_dir);
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let (mode, specs) = match &choice {
        buildpack::Choice::Detect(list) => ("detect", list.clone()),
        buildpack::Choice::Explicit(list) => ("explicit", list.clone()),
    };
    // Every entry is checked before any is fetched: a bundled name, or a URL the server may
    // fetch (the clone runs on the host).
    let bundled = buildpack::bundled_order(&ctx.buildpacks_dir);
    for spec in &specs {
        if buildpack::is_bundled_name(spec) {
            if !ctx.buildpacks_dir.join(spec).join("bin").is_dir() {
                return Err(failed(format!(
                    "Unknown buildpack {spec:?}: not a bundled buildpack ({}) nor a git URL \
                     (https://…, http://…, git://…, with an optional #branch)",
                    bundled.join(", ")
                )));
            }
        } else {
            buildpack::check_spec(spec, &bundled).map_err(failed)?;
        }
    }
    let mut paths = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = if buildpack::is_bundled_name(spec) {
            format!("/slipway/buildpacks/bundled/{spec}")
        } else {
            say(format!("-----> Fetching buildpack {spec}")).await;
            buildpack::clone(spec, &bp_dir.join(i.to_string()))
                .await
                .map_err(failed)?;
            format!("/slipway/buildpacks/custom/{i}")
        };
        names.insert(path.clone(), spec.clone());
        paths.push(path);
    }
    let plan = format!("{mode}\n{}\n", paths.join("\n"));
    let write = |p: PathBuf, data: String| async move {
        tokio::fs::write(&p, data)
            .await
            .map_err(|e| internal(&format!("writing {}", p.display()), e))
    };
    write(meta_dir.join("plan"), plan).await?;
    write(meta_dir.join("builder.sh"), BUILDER.to_string()).await?;

    let (a, c, o) = (app_dir.clone(), cache_dir.clone(), out_dir.clone());
    tokio::task::spawn_blocking(move || {
        // The source was copied as root. The cache and out dirs only need their top: what is
        // inside was written by the build user (a cache can hold 100,000 files).
        slug::chown_tree(&a, BUILD_UID, BUILD_UID)?;
        for d in [&c, &o] {
            std::os::unix::fs::lchown(d, Some(BUILD_UID), Some(BUILD_UID))?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| internal("preparing the build dir", e))?
    .map_err(|e| internal("preparing the build dir", e))?;

    // The build job's directories go through the blob store, so it can run on any host.
    let t0 = std::time::Instant::now();
    let ms = move || t0.elapsed().as_secs_f64() * 1e3;
    let blobs = ctx.blobs.as_ref();
    let mut inputs = BTreeMap::new();
    for (target, d) in [
        ("/app", &app_dir),
        ("/slipway/env", &env_dir),
        ("/slipway/meta", &meta_dir),
        ("/slipway/buildpacks/custom", &bp_dir),
        ("/slipway/buildpacks/bundled", &ctx.buildpacks_dir),
        ("/cache", &cache_dir),
    ] {
        inputs.insert(target, xfer.put_dir(blobs, d, target).await?);
    }
    tracing::debug!("build timing: inputs stored at +{:.1} ms", ms());
    let build_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let job = build_job(ctx, &input, &inputs, &build_id);
    let job_id = ctx
        .jobs
        .start(&input.app, job)
        .await
        .map_err(|e| internal("starting the build job", e))?;
    guard.job = Some(job_id.clone());
    tracing::debug!(job = %job_id, "build timing: job started in {:.1} ms", ms());
    let run = async {
        let mut lines = ctx
            .jobs
            .output(&input.app, &job_id)
            .await
            .map_err(|e| internal("reading the build's output", e))?;
        while let Some(l) = futures_util::StreamExt::next(&mut lines).await {
            if l.stream != "init" {
                say(l.msg).await;
            }
        }
        tracing::debug!(job = %job_id, "build timing: output ended at +{:.1} ms", ms());
        ctx.jobs
            .wait(&input.app, &job_id)
            .await
            .map_err(|e| internal("waiting for the build job", e))
    };
    let exit = tokio::time::timeout(ctx.limits.timeout, run)
        .await
        .map_err(|_| {
            failed(format!(
                "The build took longer than the limit of {} and was stopped.",
                human_duration(ctx.limits.timeout)
            ))
        })??;
    guard.job = None;
    tracing::debug!(job = %job_id, "build timing: job exit seen at +{:.1} ms", ms());
    let mut notes = Vec::new();
    let took = crate::transfer::take_outputs(
        ctx,
        xfer,
        &exit,
        [&out_dir, &app_dir, &cache_dir],
        &mut notes,
    )
    .await;
    for note in notes {
        say(note).await;
    }
    took?;
    crate::transfer::record_cache(ctx, input.app.id, &exit).await;
    tracing::debug!("build timing: outputs fetched at +{:.1} ms", ms());
    check_exit(&exit, &out_dir, ctx.limits.memory_bytes)
        .map_err(|e| disk_full(e, &exit, dir, ctx.limits.disk_bytes))?;

    // Process types: the Procfile, else the last buildpack's defaults (written as the Procfile,
    // so every slug has one).
    let used: Vec<String> = slug::read_nofollow(&out_dir.join("buildpacks"), 64 << 10)
        .ok()
        .flatten()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|p| names.get(p.trim()).cloned())
                .collect()
        })
        .unwrap_or_default();
    let procfile = app_dir.join("Procfile");
    let text = match slug::read_capped(&procfile, MAX_PROCFILE_BYTES)
        .map_err(|e| internal("reading the Procfile", e))?
    {
        slug::ReadCapped::Data(text) => Some(text),
        slug::ReadCapped::Missing => None,
        slug::ReadCapped::TooLarge(size) => {
            return Err(failed(format!(
                "The Procfile is larger than the limit of {} (it has {size} bytes): a Procfile \
                 is one line per process type, like `web: ./server`.",
                slug::human_size(MAX_PROCFILE_BYTES),
            )));
        }
    };
    let process_types = match text {
        Some(text) => {
            let types = slug::parse_procfile(&String::from_utf8_lossy(&text));
            say("-----> Discovering process types".into()).await;
            say(format!(
                "       Procfile declares types -> {}",
                list_or_none(&types)
            ))
            .await;
            types
        }
        None => {
            let release = slug::read_nofollow(&out_dir.join("release.yml"), 1 << 20)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let types = slug::parse_release_yaml(&release);
            say("-----> Discovering process types".into()).await;
            say(format!(
                "       Default types for buildpack -> {}",
                list_or_none(&types)
            ))
            .await;
            let text: String = types.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            // The build may have left a dangling symlink named Procfile: replace it, never
            // write through it.
            let _ = std::fs::remove_file(&procfile);
            slug::write_new_nofollow(&procfile, text.as_bytes())
                .map_err(|e| internal("writing the Procfile", e))?;
            types
        }
    };
    if process_types.is_empty() {
        say(
            " !     No process types: nothing will run. Add a Procfile, e.g. `web: ./server`."
                .into(),
        )
        .await;
    }

    // The slug.
    say("-----> Compressing...".into()).await;
    let slug_path = dir.join("slug.tgz");
    let (a, sp, cap) = (app_dir.clone(), slug_path.clone(), ctx.limits.slug_bytes);
    let size = tokio::task::spawn_blocking(move || slug::make_slug(&a, &sp, cap))
        .await
        .map_err(|e| internal("making the slug", e))?
        .map_err(|e| match e {
            slug::SlugError::TooLarge { limit } => failed(format!(
                "The compiled slug is larger than the limit of {}: list what the app does not \
                 need at runtime in .slugignore, or clean up in bin/compile.",
                slug::human_size(limit)
            )),
            slug::SlugError::Tree(_) => failed(format!("The compiled slug cannot be made: {e}")),
            e => internal("making the slug", e),
        })?;
    say(format!(
        "-----> Compiled slug size is {}",
        slug::human_size(size)
    ))
    .await;
    tracing::debug!("build timing: slug made at +{:.1} ms", ms());
    let slug = put_slug(ctx.blobs.as_ref(), &slug_path).await?;
    tracing::debug!("build timing: slug stored at +{:.1} ms", ms());
    Ok(Built {
        slug_size: slug.size,
        slug,
        process_types,
        buildpacks: used,
    })
}

/// Removes build dirs a crashed server left behind: older than the longest a build may take
/// (plus a margin), so no running build loses its dir.
async fn sweep_stale(builds: PathBuf, timeout: std::time::Duration) {
    let max_age = timeout + std::time::Duration::from_secs(600);
    let _ = tokio::task::spawn_blocking(move || {
        for e in std::fs::read_dir(&builds).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old {
                crate::cache::unmount(&e.path().join("cache"));
                slipway_host::runc::disk::unmount_dir(&e.path());
                let _ = crate::tree::remove_tree(&e.path());
            }
        }
    })
    .await;
}

/// Stores the slug file in the blob store.
async fn put_slug(blobs: &dyn BlobStore, path: &std::path::Path) -> Result<BlobInfo, BuildError> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| internal("reading the slug", e))?;
    blobs
        .put(Box::new(f), None)
        .await
        .map_err(|e| internal("storing the slug in the blob store", e))
}

fn list_or_none(types: &BTreeMap<String, String>) -> String {
    if types.is_empty() {
        "(none)".into()
    } else {
        types.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Turns the job's end into the user's error: out of memory, the builder's own reason
/// (`Unable to select a buildpack`, the compile's exit status), or the bare exit.
fn check_exit(exit: &JobExit, out_dir: &std::path::Path, memory: u64) -> Result<(), BuildError> {
    let Some(st) = &exit.exit else {
        return Err(BuildError::Internal(format!(
            "the build job did not run: {}",
            exit.error.as_deref().unwrap_or("no reason given")
        )));
    };
    if st.oom_killed {
        return Err(failed(format!(
            "The build ran out of memory (limit {}) and was killed.",
            slug::human_size(st.memory_limit.unwrap_or(memory))
        )));
    }
    if st.code == 0 {
        return Ok(());
    }
    let reason = slug::read_nofollow(&out_dir.join("failed"), 4096)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty());
    Err(failed(
        reason.unwrap_or_else(|| format!("The build failed ({st}).")),
    ))
}

/// A failed build whose disk is full failed for that: say so, with the limit.
fn disk_full(e: BuildError, exit: &JobExit, dir: &std::path::Path, limit: u64) -> BuildError {
    let full = exit.exit.as_ref().is_some_and(|s| s.disk_full)
        || slipway_host::runc::disk::is_full_at(dir);
    match e {
        BuildError::Failed(_) if full => failed(format!(
            "The build ran out of disk space (limit {}): it wrote more than that to /app, the \
             cache or its filesystem.",
            slug::human_size(limit)
        )),
        e => e,
    }
}

fn build_job(
    ctx: &BuildContext,
    input: &BuildInput,
    inputs: &BTreeMap<&str, String>,
    build_id: &str,
) -> HostJob {
    let mut config = JobConfig::new(&input.stack, &["/bin/sh", "/slipway/meta/builder.sh"]);
    config.uid = Some(BUILD_UID);
    config.gid = Some(BUILD_UID);
    config.working_dir = Some("/app".into());
    config.stop_grace_ms = Some(STOP_GRACE_MS);
    config.ca_bundle = true;
    for (k, v) in [
        ("HOME", "/app"),
        ("STACK", input.stack.as_str()),
        ("SOURCE_VERSION", input.commit.as_str()),
    ] {
        config.env.insert(k.into(), v.into());
    }
    // The host unpacks each into a bounded dir of its own and packs `/app`, `/cache` and
    // `/slipway/out` back after the job: no directory of this machine is mounted.
    let f = |target: &str, collect: bool, readonly: bool| JobFiles {
        target: target.into(),
        from: inputs.get(target).cloned(),
        collect,
        readonly,
        max_bytes: (target == "/cache").then_some(ctx.limits.cache_bytes),
    };
    config.files = vec![
        f("/app", true, false),
        f("/cache", true, false),
        f("/slipway/env", false, true),
        f("/slipway/meta", false, true),
        f("/slipway/out", true, false),
        f("/slipway/buildpacks/bundled", false, true),
        f("/slipway/buildpacks/custom", false, true),
    ];
    let mut metadata: BTreeMap<String, String> =
        [("slipway.commit".to_string(), input.commit.clone())].into();
    if let Some(o) = &ctx.owner {
        metadata.insert(crate::owner::BUILDER_META.into(), o.id().into());
        metadata.insert(crate::owner::BUILD_META.into(), build_id.into());
    }
    HostJob {
        id: format!("build-{}", uuid::Uuid::new_v4().simple()),
        app_id: input.app.id.to_string(),
        app_name: input.app.name.clone(),
        release_id: input.app.release.map(|r| r.to_string()).unwrap_or_default(),
        process_type: crate::owner::BUILD_TYPE.into(),
        metadata,
        config,
        resources: Resources {
            memory_bytes: Some(ctx.limits.memory_bytes),
            disk_bytes: Some(ctx.limits.disk_bytes),
            ..Default::default()
        },
    }
}

/// Stops the build job if the build did not see it end (the future was dropped, or an error
/// left it running), then removes the build dir. The cache dir stays.
struct Guard {
    jobs: Arc<dyn JobRunner>,
    app: slipway_types::App,
    job: Option<String>,
    dir: Option<PathBuf>,
    /// The app's cache is mounted at `<dir>/cache` while this is held.
    cache: Option<crate::cache::CacheLock>,
    /// The build in this builder's live builds: it leaves them once its job is stopped.
    owner: Option<(Arc<crate::owner::Owner>, String)>,
}

impl Guard {
    /// The end of a build that was not cancelled: stops the job if an error left it running,
    /// and removes the build dir before the build returns.
    async fn finish(&mut self) {
        self.cleanup().await
    }

    fn cleanup(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (job, dir, cache) = (self.job.take(), self.dir.take(), self.cache.take());
        let (jobs, app, owner) = (self.jobs.clone(), self.app.clone(), self.owner.take());
        async move {
            if let Some(id) = job {
                if let Err(e) = jobs.stop(&app, &id).await {
                    tracing::warn!(job = %id, "stopping a cancelled build: {e}");
                }
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(15), jobs.wait(&app, &id))
                        .await;
            }
            if let Some(d) = dir {
                // The cache first: it is mounted inside the build dir. Its lock goes after.
                crate::cache::unmount(&d.join("cache"));
                drop(cache);
                // The built /app can be any tree: removed without recursion.
                slipway_host::runc::disk::unmount_dir(&d);
                let _ = tokio::task::spawn_blocking(move || {
                    // The build's transfer files (see crate::transfer) go with it.
                    let _ = std::fs::remove_dir_all(d.with_extension("xfer"));
                    crate::tree::remove_tree(&d)
                })
                .await;
            }
            if let Some((o, id)) = owner {
                o.end(&id);
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.job.is_none() && self.dir.is_none() {
            if let Some((o, id)) = self.owner.take() {
                o.end(&id);
            }
            return;
        }
        let cleanup = self.cleanup();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(cleanup);
            }
            Err(_) => tracing::warn!("a build was dropped outside a runtime; its job may linger"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_come_from_app_meta_and_are_names() {
        let mut app: slipway_types::App = serde_json::from_value(serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001", "name": "a", "strategy": "all-at-once",
            "deploy_timeout": 120, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(app_stack(&app, DEFAULT_STACK), "busybox");
        app.meta.insert("stack".into(), "bookworm".into());
        assert_eq!(app_stack(&app, DEFAULT_STACK), "bookworm");
        assert!(valid_stack_name("bookworm") && valid_stack_name("debian-12"));
        for bad in [
            "",
            "/",
            "/srv/root",
            "/usr/local",
            "../x",
            ".x",
            "a/b",
            "a b",
            "A",
        ] {
            assert!(!valid_stack_name(bad), "{bad}");
        }
    }
}
