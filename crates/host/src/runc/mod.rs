//! The real runtime: one runc container per job, supervised by a per-job shim.
//!
//! Layout in the data dir:
//! - `containers/<id>/` — `state.json`, `exit.json`, `hosts`, `net.batch` and
//!   `bundle/` (`config.json`, overlay `rootfs/`), `disk.img` mounted at `bundle/disk` (the
//!   overlay's `upper/` and `work/`: the job's writable layer, bounded, see [`disk`]). Removed
//!   at cleanup.
//! - `logs/<id>/` — the job's log files (kept after cleanup; bounded in size).
//! - `runc/` — runc's state root (`runc --root`), private to this agent.
//! - `boot-id` — the kernel's boot id when this agent last started: a different one means the
//!   machine rebooted, and nothing of the old boot (runc state, shim pids) is trusted.
//! - `resolv.conf` — the containers' `/etc/resolv.conf` when discovery's DNS serves the bridge.

mod boot;
pub mod disk;
pub mod filter;
mod host_setup;
mod mount;
pub mod netlink;
pub mod network;
pub mod overlay;
pub(crate) mod pidfd;
pub mod seccomp;
pub mod spec;
pub mod sweep;

use crate::runtime::{Recovered, Runtime, Started};
use crate::shim::{self, Handshake, ShimConfig};
use crate::types::{ExitStatus, HostJob, LogLine};
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use host_setup::{cap_jobs_pids, pids_parent};
pub use host_setup::{default_jobs_max_procs, preflight};
use mount::{is_mounted, mount_overlay, unmount};
use network::{IpAllocator, NetworkConfig};
use pidfd::{proc_alive, proc_start_time, signal_init, wait_pid_exit};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Settings of the runc runtime. All host-global names are here so that agents can coexist.
#[derive(Debug, Clone)]
pub struct RuncConfig {
    pub data_dir: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// cgroup parent, below every controller's root: jobs go to `/<cgroup_parent>/<job id>`.
    pub cgroup_parent: String,
    pub network: NetworkConfig,
    /// How to start a shim; the container dir is appended. Defaults to `<this exe> host shim`.
    pub shim_command: Vec<OsString>,
    pub log_max_bytes: u64,
    /// Where stacks live (`<stacks_dir>/<name>/rootfs`).
    pub stacks_dir: PathBuf,
    /// A statically linked tini, bind-mounted read-only into every container and run as its
    /// PID 1: it forwards signals to the job and reaps zombies (a plain `httpd` as PID 1 ignores
    /// SIGTERM, so every stop took the whole grace period). `None` runs the command as PID 1.
    pub init: Option<PathBuf>,
    /// Discovery's DNS, serving the bridge's gateway on port 53: containers get a resolv.conf
    /// naming it (written to `<data_dir>/resolv.conf`). `None`: the host's `/etc/resolv.conf`.
    pub dns: Option<Ipv4Addr>,
    /// Processes and threads all jobs together may run: the `pids.max` of the cgroup parent.
    /// `None`: [`default_jobs_max_procs`] (three quarters of the host's `kernel.pid_max`).
    pub jobs_max_procs: Option<u64>,
    /// TCP port ranges of the host that jobs may connect to besides the gateway's DNS (the
    /// router's ports; see [`network::setup_host_with`]).
    pub published_tcp: Vec<(u16, u16)>,
    /// The overlay network between hosts (cluster mode, `--overlay`): its VXLAN device is set
    /// up with the bridge, jobs' veths get its MTU; the server keeps its entries in sync
    /// ([`overlay::sync`]).
    pub overlay: Option<overlay::OverlayConfig>,
}

/// Debian's `tini` package ships it here.
pub const DEFAULT_INIT: &str = "/usr/bin/tini-static";

impl RuncConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("slipway"));
        RuncConfig {
            stacks_dir: data_dir.join("stacks"),
            data_dir,
            runc: PathBuf::from("runc"),
            cgroup_parent: "slipway".into(),
            network: NetworkConfig::default(),
            shim_command: vec![exe.into(), "host".into(), "shim".into()],
            log_max_bytes: crate::logs::DEFAULT_MAX_BYTES,
            init: Some(PathBuf::from(DEFAULT_INIT)),
            dns: None,
            jobs_max_procs: None,
            published_tcp: Vec::new(),
            overlay: None,
        }
    }
}

/// Persisted per container, so a restarted agent can find the shim again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerState {
    ip: Option<Ipv4Addr>,
    shim_pid: u32,
    /// Start time of the shim (clock ticks after boot, `/proc/PID/stat` field 22): guards
    /// against a recycled pid.
    shim_start: u64,
    init_pid: Option<u32>,
    /// Start time of the container's init (as `shim_start`): lets [`RuncRuntime::signal`]
    /// signal it directly, knowing the pid is still that process.
    #[serde(default)]
    init_start: Option<u64>,
    /// The job's network isolation group ([`filter::group_for`] its app), if its app is
    /// isolated: a restarted agent re-installs the job's bridge filter with it.
    #[serde(default)]
    net_group: Option<String>,
    /// The host-side veth's name (`None`: a job of an agent before names carried their agent,
    /// [`network::legacy_veth_name`]).
    #[serde(default)]
    veth: Option<String>,
}

impl ContainerState {
    fn veth(&self, id: &str) -> String {
        self.veth
            .clone()
            .unwrap_or_else(|| network::legacy_veth_name(id))
    }
}

pub struct RuncRuntime {
    shared: Arc<Shared>,
    states: Mutex<HashMap<String, ContainerState>>,
}

/// What job preparation needs; shared with the blocking thread that prepares a job (mounts,
/// files, netns) so that it never blocks the async runtime.
pub struct Shared {
    cfg: RuncConfig,
    nofile_ceiling: u64,
    ips: Mutex<IpAllocator>,
    /// Bind-mounted read-only as every container's `/etc/resolv.conf`.
    resolv_conf: PathBuf,
    /// The cap on all jobs' processes, written to the cgroup parent (`None`: no pids
    /// controller).
    jobs_max_procs: Option<u64>,
    /// The bridge filter of each job with a netns, removed at cleanup.
    ports: Mutex<HashMap<String, filter::PortRules>>,
    /// Jobs' disk images formatted ahead of time.
    disk_pool: Arc<disk::Pool>,
}

impl std::ops::Deref for RuncRuntime {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl RuncRuntime {
    /// Checks prerequisites and sets up the host network (idempotently).
    pub fn new(cfg: RuncConfig) -> Result<Self> {
        preflight(&cfg)?;
        for d in ["containers", "logs", "runc"] {
            std::fs::create_dir_all(cfg.data_dir.join(d))
                .with_context(|| format!("creating {}", cfg.data_dir.join(d).display()))?;
        }
        network::setup_host_overlay(&cfg.network, &cfg.published_tcp, cfg.overlay.as_ref())?;
        if let Some(o) = &cfg.overlay {
            overlay::setup(o)?;
        }
        let resolv_conf = match cfg.dns {
            Some(ns) => network::write_resolv_conf(&cfg.data_dir, ns)?,
            None => PathBuf::from("/etc/resolv.conf"),
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointer to an rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let jobs_max_procs = cap_jobs_pids(
            &cfg.cgroup_parent,
            cfg.jobs_max_procs.unwrap_or_else(default_jobs_max_procs),
        )?;
        let disk_pool =
            disk::Pool::start(cfg.data_dir.join("disk-pool"), crate::types::DEFAULT_DISK)?;
        Ok(RuncRuntime {
            shared: Arc::new(Shared {
                disk_pool,
                ips: Mutex::new(IpAllocator::persistent(
                    &cfg.network,
                    cfg.data_dir.join("ip-next"),
                )),
                nofile_ceiling: lim.rlim_max,
                resolv_conf,
                jobs_max_procs,
                ports: Mutex::new(HashMap::new()),
                cfg,
            }),
            states: Mutex::new(HashMap::new()),
        })
    }
}

impl Shared {
    pub fn config(&self) -> &RuncConfig {
        &self.cfg
    }
    fn container_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("containers").join(id)
    }
    pub fn log_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("logs").join(id)
    }
    fn runc_root(&self) -> PathBuf {
        self.cfg.data_dir.join("runc")
    }
    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.cfg.cgroup_parent)
    }

    /// Resolves a stack name to its rootfs directory, inside the stacks dir only (see
    /// [`crate::stack::rootfs`]).
    pub fn stack_rootfs(&self, stack: &str) -> Result<PathBuf> {
        crate::stack::rootfs(&self.cfg.stacks_dir, stack)
    }

    async fn runc(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.runc_root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.cfg.runc.display()))?;
        Ok(out)
    }

    /// Allocates the IP, prepares the netns (in a thread, in parallel), mounts the rootfs and
    /// writes the spec. On error everything it did is undone by the caller's `cleanup`.
    fn prepare(
        &self,
        job: &HostJob,
        dir: &Path,
    ) -> Result<(ShimConfig, Option<Ipv4Addr>, Vec<String>)> {
        // An empty stack runs the layers alone (an image brings its own rootfs).
        let stack = if job.config.stack.is_empty() {
            if job.config.layers.is_empty() {
                bail!(
                    "the job has no stack and no layers: nothing to run it on (give it a stack \
                     or layer_refs)"
                );
            }
            None
        } else {
            Some(self.stack_rootfs(&job.config.stack)?)
        };
        if let Some(max) = self.jobs_max_procs
            && !pids_parent(&self.cfg.cgroup_parent).is_dir()
        {
            // Removed under us (teardown, an operator): runc would recreate it uncapped.
            cap_jobs_pids(&self.cfg.cgroup_parent, max)?;
        }
        let ip = if job.config.host_network {
            None
        } else {
            Some(self.ips.lock().expect("ip lock").allocate()?)
        };
        let group = job.config.isolated.then(|| {
            let app = if job.app_id.is_empty() {
                &job.id
            } else {
                &job.app_id
            };
            filter::group_for(app)
        });
        let net = ip.map(|ip| {
            let cfg = self.cfg.network.clone();
            let (id, group) = (job.id.clone(), group.clone());
            let mtu = self.cfg.overlay.as_ref().map(|o| o.mtu);
            std::thread::spawn(move || network::prepare_netns(&cfg, &id, ip, group, mtu))
        });
        let written = self.write_bundle(job, dir, ip, stack);
        let netns = net.map(|t| t.join().expect("netns thread"));
        let release = || {
            if let Some(ip) = ip {
                self.ips.lock().expect("ip lock").release(ip);
            }
        };
        if let Some(Err(e)) = netns {
            release();
            return Err(e);
        }
        if let Some(ip) = ip {
            let rules = filter::PortRules {
                veth: network::veth_name(&self.cfg.network, &job.id),
                ip,
                group,
            };
            self.ports
                .lock()
                .expect("ports")
                .insert(job.id.clone(), rules);
        }
        let warnings = written.inspect_err(|_| release())?;
        let cfg = ShimConfig {
            runc: self.cfg.runc.clone(),
            runc_root: self.runc_root(),
            id: job.id.clone(),
            bundle: dir.join("bundle"),
            log_dir: self.log_dir(&job.id),
            log_max_bytes: self.cfg.log_max_bytes,
            memory_cgroup: Some(
                Path::new("/sys/fs/cgroup/memory")
                    .join(&self.cfg.cgroup_parent)
                    .join(&job.id),
            ),
            memory_limit: job.resources.memory(),
            setup: Vec::new(),
            attach: job.config.attach,
        };
        Ok((cfg, ip, warnings))
    }

    /// Mounts the overlay rootfs and writes `/etc/hosts` and `config.json`.
    fn write_bundle(
        &self,
        job: &HostJob,
        dir: &Path,
        ip: Option<Ipv4Addr>,
        stack: Option<PathBuf>,
    ) -> Result<Vec<String>> {
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        let (upper, work) = disk::create(dir, job.resources.disk(), Some(&self.disk_pool))?;
        // overlayfs lists the top layer first: artifact layers (top down), then the stack.
        let mut lower: Vec<PathBuf> = job.config.layers.iter().rev().cloned().collect();
        lower.extend(stack);
        mount_overlay(&lower, &upper, &work, &rootfs)?;
        // `user` names are looked up in the merged rootfs (top layer first); explicit
        // `uid`/`gid` win; a job on a stack that names no user runs unprivileged.
        crate::user::open_tmp(&rootfs)?;
        let with_user;
        let job = match crate::user::job_user(&job.config, !job.config.stack.is_empty(), &rootfs)? {
            Some(u) => {
                with_user = crate::user::apply(job, u, &rootfs)?;
                &with_user
            }
            None => job,
        };
        if self.cfg.init.is_some() {
            // runc would report a missing command itself, but behind the init it only shows
            // as a crash with exit 127; say it at start, in runc's words.
            check_command(job, &rootfs)?;
        }
        let hostname: String = job.id.chars().take(12).collect();
        let hosts = dir.join("hosts");
        let mut h = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        if let Some(ip) = ip {
            h.push_str(&format!("{ip}\t{hostname}\n"));
        }
        std::fs::write(&hosts, h)?;
        let ca = Path::new(spec::HOST_CA_BUNDLE);
        let netns = ip.map(|_| network::netns_path(&self.cfg.network, &job.id));
        let (spec, warning) = spec::build(
            job,
            &spec::SpecInputs {
                rootfs: &rootfs,
                cgroups_path: self.cgroups_path(&job.id),
                hosts_file: &hosts,
                resolv_conf: &self.resolv_conf,
                nofile_ceiling: self.nofile_ceiling,
                ca_bundle: (job.config.ca_bundle && ca.exists()).then_some(ca),
                netns: netns.as_deref(),
                init: self.cfg.init.as_deref(),
                pids_ceiling: self.jobs_max_procs,
            },
        )?;
        spec.save(bundle.join("config.json"))?;
        Ok(warning.into_iter().collect())
    }
}

/// Fails like runc does (`exec: "foo": executable file not found in $PATH`) when the job's
/// command is not in its rootfs. Paths under a bind mount are not known yet and pass.
/// A job id names a directory under `containers/` and `logs/`: one plain path component.
pub(crate) fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!(
            "job id {id:?} must be 1-128 letters, digits, '-', '_' or '.' (not starting with '.')"
        );
    }
    Ok(())
}

fn check_command(job: &HostJob, rootfs: &Path) -> Result<()> {
    let Some(cmd) = job.config.args.first() else {
        bail!("the job has no command");
    };
    let mounted = |p: &str| {
        job.config
            .mounts
            .iter()
            .any(|m| Path::new(p).starts_with(&m.target) || Path::new(&m.target).starts_with(p))
    };
    // Looked up inside the rootfs (an image's `bin -> /root` must not make the agent, root on
    // the host, answer whether a host path exists); an error other than "not there" lets runc
    // judge.
    let exists = |p: &str| {
        let rel = p.trim_start_matches('/');
        crate::user::open_in_root(rootfs, rel, libc::O_PATH | libc::O_NOFOLLOW)
            .map_or(true, |f| f.is_some())
            || mounted(p)
    };
    if cmd.contains('/') {
        let abs = if cmd.starts_with('/') {
            cmd.clone()
        } else {
            let cwd = job.config.working_dir.as_deref().unwrap_or("/");
            format!("{}/{cmd}", cwd.trim_end_matches('/'))
        };
        if !exists(&abs) {
            bail!("exec: {cmd:?}: stat {abs}: no such file or directory");
        }
        return Ok(());
    }
    let env = spec::job_env(job);
    let path = env.get("PATH").map(String::as_str).unwrap_or_default();
    if !path
        .split(':')
        .filter(|d| d.starts_with('/'))
        .any(|d| exists(&format!("{}/{cmd}", d.trim_end_matches('/'))))
    {
        bail!("exec: {cmd:?}: executable file not found in $PATH");
    }
    Ok(())
}

impl RuncRuntime {
    /// Starts the job's shim. It waits for its config on stdin, so starting it overlaps with the
    /// job's preparation; closing stdin without a config makes it exit.
    fn spawn_shim(&self, dir: &Path) -> Result<tokio::process::Child> {
        let (prog, args) = self
            .cfg
            .shim_command
            .split_first()
            .context("empty shim command")?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("shim.log"))?);
        // SAFETY: setsid is async-signal-safe. Its own session keeps the shim (and the job)
        // alive when the agent's process group or terminal goes away.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("starting the job shim {}", prog.to_string_lossy()))
    }

    /// Hands the shim its config and waits for its handshake (container running, or why not).
    async fn run_shim(
        &self,
        mut child: tokio::process::Child,
        cfg: Option<&ShimConfig>,
        dir: &Path,
    ) -> Result<(u32, Handshake)> {
        use tokio::io::AsyncWriteExt;
        let pid = child.id().context("shim exited at once")?;
        let mut stdin = child.stdin.take().context("shim stdin")?;
        let stdout = child.stdout.take().context("shim stdout")?;
        // Reap the shim whenever it ends; the agent learns about the end through its pidfd.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let Some(cfg) = cfg else {
            drop(stdin);
            bail!("job preparation failed");
        };
        stdin.write_all(&serde_json::to_vec(cfg)?).await?;
        drop(stdin);
        let mut line = String::new();
        let mut r = tokio::io::BufReader::new(stdout);
        tokio::time::timeout(std::time::Duration::from_secs(120), r.read_line(&mut line))
            .await
            .context("the job's container did not start within 120 s")??;
        let hs: Handshake = serde_json::from_str(line.trim()).with_context(|| {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            format!("the job shim failed: {}", log.trim())
        })?;
        Ok((pid, hs))
    }

    fn save_state(&self, id: &str, st: &ContainerState) -> Result<()> {
        let dir = self.container_dir(id);
        std::fs::write(dir.join("state.json.tmp"), serde_json::to_vec(st)?)?;
        std::fs::rename(dir.join("state.json.tmp"), dir.join("state.json"))?;
        Ok(())
    }

    /// Cleans up what `prepare` created for a job that never ran.
    async fn undo(&self, id: &str, ip: Option<Ipv4Addr>) {
        let _ = self.cleanup(id).await;
        if let Some(ip) = ip {
            self.ips.lock().expect("ip lock").release(ip);
        }
    }
}

#[async_trait]
impl Runtime for RuncRuntime {
    fn name(&self) -> &'static str {
        "runc"
    }

    async fn start(&self, job: &HostJob) -> Result<Started> {
        // Before any path is made of it: `../x` would name a dir outside `containers/`.
        check_id(&job.id)?;
        let dir = self.container_dir(&job.id);
        if dir.exists() {
            bail!("job {} already exists on this host", job.id);
        }
        std::fs::create_dir_all(&dir)?;
        let t0 = std::time::Instant::now();
        let child = match self.spawn_shim(&dir) {
            Ok(c) => c,
            Err(e) => {
                self.undo(&job.id, None).await;
                return Err(e);
            }
        };
        let prepared = {
            let (shared, job, dir) = (self.shared.clone(), job.clone(), dir.clone());
            tokio::task::spawn_blocking(move || shared.prepare(&job, &dir))
                .await
                .context("job preparation panicked")?
        };
        tracing::debug!(job = %job.id, "start timing: shim spawned and job prepared (netns, overlay, spec) in {:?}", t0.elapsed());
        let (shim_cfg, ip, warnings) = match prepared {
            Ok(x) => x,
            Err(e) => {
                let _ = self.run_shim(child, None, &dir).await;
                self.undo(&job.id, None).await;
                return Err(e);
            }
        };
        if !warnings.is_empty() {
            // Users see these with the job's logs (stream `init`).
            let mut w =
                crate::logs::LogWriter::open(&self.log_dir(&job.id), self.cfg.log_max_bytes)?;
            for msg in &warnings {
                w.write("init", format!("warning: {msg}").as_bytes())?;
            }
        }
        let (pid, hs) = match self.run_shim(child, Some(&shim_cfg), &dir).await {
            Ok(x) => {
                tracing::debug!(job = %job.id, "start timing: the shim's `runc run -d` returned at {:?}", t0.elapsed());
                x
            }
            Err(e) => {
                self.undo(&job.id, ip).await;
                return Err(e);
            }
        };
        if let Some(err) = hs.error {
            self.undo(&job.id, ip).await;
            bail!("{err}");
        }
        let st = ContainerState {
            ip,
            shim_pid: pid,
            shim_start: proc_start_time(pid).unwrap_or(0),
            init_pid: hs.pid,
            init_start: hs.pid.and_then(proc_start_time),
            net_group: self
                .ports
                .lock()
                .expect("ports")
                .get(&job.id)
                .and_then(|p| p.group.clone()),
            veth: ip.map(|_| network::veth_name(&self.cfg.network, &job.id)),
        };
        self.save_state(&job.id, &st)?;
        self.states
            .lock()
            .expect("states")
            .insert(job.id.clone(), st);
        Ok(Started {
            ip,
            pid: hs.pid,
            warnings,
        })
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let init = self
            .states
            .lock()
            .expect("states")
            .get(id)
            .and_then(|s| Some((s.init_pid?, s.init_start?)));
        if let Some((pid, _)) = init {
            // Right after start the init may not have a child ready to forward to (see
            // `child_has_own_group`): wait for it, briefly (a job that is ending has none).
            let deadline = Instant::now() + Duration::from_secs(1);
            while !pidfd::child_has_own_group(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if let Some((pid, start)) = init
            && signal_init(pid, start, signal)
        {
            return Ok(());
        }
        let out = self.runc(&["kill", id, &signal.to_string()]).await?;
        if !out.status.success() {
            bail!(
                "could not signal job {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let st = self
            .states
            .lock()
            .expect("states")
            .get(id)
            .cloned()
            .with_context(|| format!("no running job {id} on this host"))?;
        wait_pid_exit(st.shim_pid, st.shim_start).await?;
        let dir = self.container_dir(id);
        match shim::read_exit(&dir) {
            Some(rec) => match (rec.status, rec.start_error) {
                (Some(mut s), _) => {
                    // A job that ended with its disk full most likely ended because of it.
                    s.disk_full = s.code != 0 && disk::is_full(&dir);
                    if s.disk_full {
                        s.disk_limit = disk::limit(&dir);
                    }
                    Ok(s)
                }
                (None, e) => bail!("{}", e.unwrap_or_else(|| "the job did not start".into())),
            },
            None => bail!(
                "the job's shim (pid {}) died without recording an exit status; see {}",
                st.shim_pid,
                dir.join("shim.log").display()
            ),
        }
    }

    async fn cleanup(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id);
        let out = self.runc(&["delete", "--force", id]).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("does not exist") && !err.contains("not exist") {
            tracing::warn!(job = id, "runc delete: {}", err.trim());
        }
        let rootfs = dir.join("bundle/rootfs");
        if is_mounted(&rootfs) {
            unmount(&rootfs);
        }
        // After the overlay, which holds it; the loop device goes with it (autoclear).
        let disk = disk::mount_point(&dir);
        if is_mounted(&disk) {
            unmount(&disk);
        }
        network::remove_job_netns(&self.cfg.network, id);
        let port = self.ports.lock().expect("ports").remove(id);
        if let Some(p) = port {
            let cfg = self.cfg.network.clone();
            let _ = tokio::task::spawn_blocking(move || filter::remove(&cfg, &p)).await;
        }
        // runc delete removes the cgroups; make sure, in every controller.
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let cg = c.path().join(&self.cfg.cgroup_parent).join(id);
                if cg.is_dir() {
                    let _ = std::fs::remove_dir(&cg);
                }
            }
        }
        // Only a job started or adopted by this process holds an address: a job found dead
        // at start never had its address reserved (it may be another job's by now).
        let st = self.states.lock().expect("states").remove(id);
        if let Some(ip) = st.and_then(|s| s.ip) {
            self.ips.lock().expect("ip lock").release(ip);
        }
        if dir.exists() && !is_mounted(&rootfs) && !is_mounted(&disk) {
            // The writable layer is the job's: any depth (remove_tree does not recurse).
            crate::layers::remove_tree(&dir)
                .with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Finds the jobs a previous agent process left: a job is running if its shim is still the
    /// process it started (not after a reboot, never a zombie); then sweeps away everything of
    /// this agent's that no running job uses ([`sweep`]) and records this boot.
    async fn recover(&self) -> Result<Vec<(String, Recovered)>> {
        let mut out = Vec::new();
        let rebooted = boot::rebooted(&self.cfg.data_dir);
        if rebooted {
            tracing::info!(
                "the machine rebooted since this agent last ran: none of its containers is                  running; their state is removed and the scheduler starts them again"
            );
        }
        let mut adopted = Vec::new();
        let mut live = sweep::Live::default();
        let dir = self.cfg.data_dir.join("containers");
        let rd = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for e in rd.flatten().take(100_000) {
            let id = e.file_name().to_string_lossy().into_owned();
            let dir = e.path();
            if check_id(&id).is_err() || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue; // not a job's: the sweep removes it
            }
            let st: Option<ContainerState> = std::fs::read(dir.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let rec = if let Some(x) = shim::read_exit(&dir) {
                match (x.status, x.start_error) {
                    (Some(s), _) => Recovered::Exited(s),
                    (None, e) => Recovered::StartFailed(e.unwrap_or_default()),
                }
            } else if let Some(st) =
                st.filter(|s| !rebooted && proc_alive(s.shim_pid, s.shim_start))
            {
                let ip = st.ip;
                // An address outside this agent's subnet now (an overlay host whose /24 went to
                // another host while it was away): nobody can reach the job, and other hosts
                // would route its address, still in discovery, to the other host's jobs. It is
                // killed; its exit is reported as any other and the scheduler replaces it.
                if let Some(ip) = ip.filter(|ip| !self.cfg.network.contains(*ip)) {
                    tracing::warn!(
                        job = %id,
                        "the job's address {ip} is outside this host's subnet {} now:                          it is stopped, to be started again with a reachable one",
                        self.cfg.network.cidr()
                    );
                    if let (Some(pid), Some(start)) = (st.init_pid, st.init_start) {
                        signal_init(pid, start, libc::SIGKILL);
                    }
                }
                live.ids.insert(id.clone());
                if let Some(ip) = ip {
                    self.ips.lock().expect("ip lock").reserve(ip);
                    let rules = filter::PortRules {
                        veth: st.veth(&id),
                        ip,
                        group: st.net_group.clone(),
                    };
                    live.veths.insert(rules.veth.clone());
                    self.ports
                        .lock()
                        .expect("ports")
                        .insert(id.clone(), rules.clone());
                    adopted.push(rules);
                }
                self.states.lock().expect("states").insert(id.clone(), st);
                Recovered::Running { ip }
            } else {
                Recovered::Lost
            };
            out.push((id, rec));
        }
        // The host setup re-created the bridge filter's table, empty (an unlisted port is not
        // checked: the running jobs could claim each other's IPs and reach isolated apps): one
        // batch puts the adopted jobs' ports back, before the sweep, which may take seconds.
        if !adopted.is_empty() {
            let cfg = self.cfg.network.clone();
            let n = adopted.len();
            match tokio::task::spawn_blocking(move || filter::add_all(&cfg, &adopted)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("re-installing the bridge filter of {n} jobs: {e:#}"),
                Err(e) => tracing::warn!("re-installing the bridge filter: {e}"),
            }
        }
        let cfg = self.cfg.clone();
        let swept = tokio::task::spawn_blocking(move || sweep::sweep(&cfg, &live, rebooted))
            .await
            .context("the start-up sweep panicked")?;
        if swept.is_empty() {
            tracing::debug!("start-up sweep: nothing left behind");
        } else {
            tracing::info!("start-up sweep removed what no running job uses: {swept}");
        }
        boot::record(&self.cfg.data_dir)?;
        Ok(out)
    }

    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, LogLine> {
        let dir = self.log_dir(id);
        if !follow {
            return Box::pin(futures_util::stream::iter(crate::logs::read_all(&dir)));
        }
        let cdir = self.container_dir(id);
        crate::logs::follow(dir, move || {
            !cdir.exists() || shim::exit_path(&cdir).exists()
        })
    }

    async fn attach(&self, id: &str) -> Result<crate::attach::AttachStream> {
        let dir = self.container_dir(id);
        let (path, _dir_fd) = crate::attach_shim::socket_path(&dir, crate::attach::SOCKET)
            .with_context(|| format!("job {id} has finished"))?;
        let conn = tokio::net::UnixStream::connect(&path)
            .await
            .with_context(|| {
                format!("cannot attach to job {id}: it has finished, or was not started attached")
            })?;
        Ok(Box::new(conn))
    }

    fn forget(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.log_dir(id));
    }

    async fn teardown(&self) -> Result<()> {
        network::teardown_host(&self.cfg.network);
        if let Some(o) = &self.cfg.overlay {
            overlay::teardown(o);
        }
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let _ = std::fs::remove_dir(c.path().join(&self.cfg.cgroup_parent));
            }
        }
        Ok(())
    }
}
