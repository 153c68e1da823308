//! A build cluster for one test: a SQLite store, an in-process host agent on real runc (names
//! unique to the test: bridge, subnet, nft table, cgroup parent, data dir), the real scheduler,
//! a filesystem blob store, and a [`BuildContext`] over them. `Drop` removes everything the
//! agent may have left, even after a failed test.

use slipway_blobstore::{BlobStore, FsBlobStore};
use slipway_builder::{BuildContext, BuildError, BuildInput, BuildLimits, Built};
use slipway_host::runc::network::{self, NetworkConfig};
use slipway_host::runc::{RuncConfig, RuncRuntime};
use slipway_host::{Agent, AgentConfig};
use slipway_scheduler::{Scheduler, SchedulerConfig};
use slipway_store::Store;
use slipway_types::{App, NewApp};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Returns true (and says so) when the test must be skipped: it needs root, unless `CI` is set,
/// where it fails instead.
pub fn skip_unless_root(test: &str) -> bool {
    slipway_testkit::skip_unless_root(test)
}

/// Stacks are shared by all tests of a run (and across runs), keyed by recipe hash, like the
/// host crate's tests.
pub fn stacks_dir() -> PathBuf {
    std::env::var_os("SLIPWAY_TEST_STACKS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("slipway-test-stacks"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Names {
    net: NetworkConfig,
    cgroup_parent: String,
}

impl Names {
    fn new() -> Names {
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        // A range of its own: 100.180-199.x (host tests: 100.101-179, `slipway host daemon`
        // tests: 100.200+, benches: 100.217+, server tests: 100.220+).
        let n = (std::process::id().wrapping_mul(7) + c * 1013) % 5120;
        Names {
            net: NetworkConfig {
                bridge: format!("slwb{n}"),
                subnet: Ipv4Addr::new(100, 180 + (n / 256) as u8, (n % 256) as u8, 0),
                prefix: 24,
                nft_table: format!("slwb{n}"),
            },
            cgroup_parent: format!("slipway-builder-test-{n}"),
        }
    }

    fn destroy(&self, data_dir: &Path) {
        slipway_testkit::runc::remove_agent_leftovers(
            data_dir,
            &self.cgroup_parent,
            network::remove_netns,
        );
        network::teardown_host(&self.net);
    }
}

pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub sched: Scheduler,
    pub blobs: Arc<FsBlobStore>,
    pub ctx: BuildContext,
    /// Another controller's build context, once [`Cluster::as_another_controller`] was called.
    other: Option<BuildContext>,
    pub agent: Agent,
    names: Names,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster whose builds use `buildpacks` (None: the bundled ones, installed from the
    /// binary like `slipway server` does).
    pub async fn start(buildpacks: Option<&Path>) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("slipway-builder-test")
            .tempdir()
            .unwrap();
        let stacks = stacks_dir();
        tokio::task::spawn_blocking(move || {
            slipway_host::stack::build(&stacks, "busybox", false).expect("busybox stack")
        })
        .await
        .unwrap();
        let names = Names::new();
        let host_dir = dir.path().join("host");
        let mut rc = RuncConfig::new(&host_dir);
        rc.network = names.net.clone();
        rc.cgroup_parent = names.cgroup_parent.clone();
        rc.stacks_dir = stacks_dir();
        rc.shim_command = vec![env!("CARGO_BIN_EXE_slipway-builder-shim").into()];
        let rt = tokio::task::spawn_blocking(move || RuncRuntime::new(rc))
            .await
            .unwrap()
            .expect("starting the runc runtime");
        let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
        let mut cfg = AgentConfig::new(&host_dir);
        // Build jobs get their files from the blob store (and only so).
        cfg.blobs = Some(blobs.clone() as Arc<dyn BlobStore>);
        let agent = Agent::start(cfg, Arc::new(rt)).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
        let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await.unwrap());
        let sched = Scheduler::new(store.clone(), SchedulerConfig::default());
        sched.add_host(Arc::new(agent.clone())).await.unwrap();
        tokio::spawn(sched.clone().run());
        let buildpacks_dir = match buildpacks {
            Some(p) => p.to_path_buf(),
            None => {
                let p = dir.path().join("buildpacks");
                slipway_builder::bundled::install(&p).unwrap();
                p
            }
        };
        let ctx = BuildContext {
            blobs: blobs.clone() as Arc<dyn BlobStore>,
            jobs: Arc::new(sched.clone()),
            data_dir: dir.path().to_path_buf(),
            buildpacks_dir,
            limits: BuildLimits::default(),
            caches: Some(store.clone()),
            owner: None,
        };
        Cluster {
            store,
            sched,
            blobs,
            ctx,
            other: None,
            agent,
            names,
            dir,
        }
    }

    pub async fn app(&self) -> App {
        let name = format!("app{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.store
            .create_app(&name, &NewApp::default(), None)
            .await
            .unwrap()
    }

    /// Builds `src` for `app` with `env`; returns the result and every line the build printed.
    /// The build context builds use: [`Cluster::ctx`], or another controller's
    /// ([`Cluster::as_another_controller`]).
    fn ctx_in_use(&self) -> &BuildContext {
        self.other.as_ref().unwrap_or(&self.ctx)
    }

    /// Builds from now on run as through another controller: same store, blob store and
    /// scheduler, a data dir of its own (no local build cache).
    pub fn as_another_controller(&mut self) {
        let data_dir = self.dir.path().join("other-controller");
        std::fs::create_dir_all(&data_dir).unwrap();
        self.other = Some(BuildContext {
            blobs: self.ctx.blobs.clone(),
            jobs: self.ctx.jobs.clone(),
            data_dir,
            buildpacks_dir: self.ctx.buildpacks_dir.clone(),
            limits: BuildLimits::default(),
            caches: self.ctx.caches.clone(),
            owner: self.ctx.owner.clone(),
        });
    }

    pub async fn build(
        &self,
        app: &App,
        src: &Path,
        env: &[(&str, &str)],
    ) -> (Result<Built, BuildError>, Vec<String>) {
        self.build_on("busybox", app, src, env).await
    }

    pub async fn build_on(
        &self,
        stack: &str,
        app: &App,
        src: &Path,
        env: &[(&str, &str)],
    ) -> (Result<Built, BuildError>, Vec<String>) {
        let input = BuildInput {
            app: app.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            source_dir: src.to_path_buf(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            stack: stack.into(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let collect = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(l) = rx.recv().await {
                lines.push(l);
            }
            lines
        });
        let res = slipway_builder::build(self.ctx_in_use(), input, tx).await;
        let lines = collect.await.unwrap();
        (res, lines)
    }

    /// The slug's entries (path → content of regular files, `-> target` for symlinks).
    pub async fn slug_entries(&self, built: &Built) -> BTreeMap<String, String> {
        use tokio::io::AsyncReadExt;
        let (_, mut body) = self
            .blobs
            .get(&built.slug.digest)
            .await
            .unwrap()
            .expect("slug in the blob store");
        let mut gz = Vec::new();
        body.read_to_end(&mut gz).await.unwrap();
        let mut out = BTreeMap::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let v = match e.header().entry_type() {
                tar::EntryType::Symlink => {
                    format!("-> {}", e.link_name().unwrap().unwrap().display())
                }
                tar::EntryType::Directory => "<dir>".into(),
                _ => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).unwrap_or_default();
                    s
                }
            };
            out.insert(path, v);
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.names.destroy(&self.dir.path().join("host"));
    }
}

/// Writes `files` (path → content; a path ending in `@` plus ` -> target` makes a symlink)
/// under `dir`; scripts under `bin/` are executable.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, content) in files {
        if let Some(link) = rel.strip_suffix('@') {
            let p = dir.join(link);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(content, &p).unwrap();
            continue;
        }
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if rel.contains("bin/") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// A git repo at `dir` with `files` committed on `branch` (and nothing on `main` but a README).
pub fn git_repo(dir: &Path, branch: &str, files: &[(&str, &str)]) {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    std::fs::create_dir_all(dir).unwrap();
    git(&["init", "-q"]);
    write_tree(dir, &[("README", "main has no buildpack\n")]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "main"]);
    git(&["checkout", "-q", "-b", branch]);
    write_tree(dir, files);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", branch]);
    git(&["checkout", "-q", "main"]);
}
