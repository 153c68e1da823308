//! OCI runtime spec (`config.json`) for a job, built with `oci-spec`.
//!
//! Hardening (see docs/security.md, "Containers"): Docker's capability set less `NET_RAW`,
//! `MKNOD`, `AUDIT_WRITE` and `SETFCAP`, and none at all once a job runs as a user other than
//! root; a seccomp allowlist ([`super::seccomp`]); `noNewPrivileges`; runc's masked and
//! read-only `/proc` paths; a deny-all device cgroup (runc then allows only the standard
//! devices); tmpfs `/tmp` and `/dev/shm`; a pids limit.

use crate::types::{BindMount, DEFAULT_WEB_PORT, HostJob};
use anyhow::{Context, Result, bail};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths,
};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The capabilities a root job keeps: Docker's default set without
/// - `NET_RAW`: raw and packet sockets forge any packet on the bridge (ARP and IP spoofing
///   towards the other jobs), and no web process needs them (Kubernetes' advice);
/// - `MKNOD`: the device cgroup refuses every node it would make anyway;
/// - `AUDIT_WRITE`: only login daemons write to the audit log;
/// - `SETFCAP`: file capabilities are for setting up hosts, and `noNewPrivileges` ignores them.
///
/// Jobs running as another uid get none (effective and permitted empty): this is only their
/// bounding set.
pub const JOB_CAPS: [Capability; 10] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
];

pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Host-side inputs of a spec besides the job itself.
pub struct SpecInputs<'a> {
    pub rootfs: &'a Path,
    pub cgroups_path: String,
    /// `/etc/hosts` and `/etc/resolv.conf` files to bind-mount.
    pub hosts_file: &'a Path,
    pub resolv_conf: &'a Path,
    /// Host's hard `RLIMIT_NOFILE`; the job's `max_fd` is clamped to it.
    pub nofile_ceiling: u64,
    pub ca_bundle: Option<&'a Path>,
    /// The job's prepared network namespace (`None`: host networking).
    pub netns: Option<&'a Path>,
    /// A static init (tini) bind-mounted at [`INIT_PATH`] and run as the container's PID 1 in
    /// front of the job's command (`None`: the command itself is PID 1).
    pub init: Option<&'a Path>,
    /// pids.max of the cgroup parent of all jobs; a job's `max_procs` above it is clamped.
    pub pids_ceiling: Option<u64>,
}

/// Where the init binary appears inside every container.
pub const INIT_PATH: &str = "/.slipway/init";

/// The process args: the job's command behind the init. `-g` makes tini forward signals to the
/// child's whole process group, so `sh -c 'a | b'` stops as a whole on SIGTERM (as Heroku sends
/// SIGTERM to every process of a dyno) and Ctrl-C through a pty reaches the foreground job.
pub fn process_args(job_args: &[String], init: bool) -> Vec<String> {
    if !init {
        return job_args.to_vec();
    }
    let mut args = vec![INIT_PATH.to_string(), "-g".into(), "--".into()];
    args.extend(job_args.iter().cloned());
    args
}

/// The environment a job sees: defaults, release + process env, then Slipway's variables.
pub fn job_env(job: &HostJob) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    env.insert("HOME".into(), "/".into());
    if job.config.ca_bundle {
        for k in [
            "SSL_CERT_FILE",
            "PIP_CERT",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
        ] {
            env.insert(k.into(), HOST_CA_BUNDLE.into());
        }
    }
    env.extend(job.config.env.clone());
    if let Some(p) = job.config.ports.first() {
        env.insert("PORT".into(), p.port.to_string());
    } else if job.process_type == "web" && !env.contains_key("PORT") {
        // Web processes always get a PORT (on the job's own IP), like on Heroku and Flynn.
        env.insert("PORT".into(), DEFAULT_WEB_PORT.to_string());
    }
    env.insert("SLIPWAY_APP_NAME".into(), job.app_name.clone());
    env.insert("SLIPWAY_APP_ID".into(), job.app_id.clone());
    env.insert("SLIPWAY_RELEASE_ID".into(), job.release_id.clone());
    env.insert("SLIPWAY_PROCESS_TYPE".into(), job.process_type.clone());
    env.insert("SLIPWAY_JOB_ID".into(), job.id.clone());
    env
}

fn bind(dest: &str, src: &Path, ro: bool) -> Result<Mount> {
    let mut opts = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
    if ro {
        opts.push("ro".into());
    }
    Ok(MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("bind")
        .source(src.to_path_buf())
        .options(opts)
        .build()?)
}

/// A job's bind mount (`JobConfig.mounts`, e.g. a build's source and cache dirs). Both paths
/// must be absolute and the target free of `..`, so a mount lands where it says.
fn job_mount(m: &BindMount) -> Result<Mount> {
    let target = Path::new(&m.target);
    if !target.is_absolute()
        || target == Path::new("/")
        || target
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        bail!(
            "bind mount target {:?} must be an absolute path below / without '..'",
            m.target
        );
    }
    if !m.source.is_absolute() {
        bail!(
            "bind mount source {} must be an absolute path",
            m.source.display()
        );
    }
    bind(&m.target, &m.source, m.readonly)
}

fn tmpfs(dest: &str, size: &str) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("tmpfs")
        .source(PathBuf::from("tmpfs"))
        .options(vec![
            "nosuid".to_string(),
            "nodev".into(),
            "mode=1777".into(),
            format!("size={size}"),
        ])
        .build()?)
}

/// Builds the spec. Returns it plus a warning when `max_fd` had to be clamped.
pub fn build(job: &HostJob, inp: &SpecInputs) -> Result<(Spec, Option<String>)> {
    let r = &job.resources;
    let mut warning = None;
    let mut nofile = r.max_fd();
    if nofile > inp.nofile_ceiling {
        warning = Some(format!(
            "max_fd {nofile} is above the host's hard limit of open files ({}); using {} \
             (raise the agent's `ulimit -Hn` to allow more)",
            inp.nofile_ceiling, inp.nofile_ceiling
        ));
        nofile = inp.nofile_ceiling;
    }
    let mut max_procs = r.max_procs();
    if let Some(ceiling) = inp.pids_ceiling
        && max_procs > ceiling as i64
    {
        let w = format!(
            "max_procs {max_procs} is above this host's limit for all jobs together \
             ({ceiling}); using {ceiling} (raise the agent's --jobs-max-procs to allow more)"
        );
        warning = Some(match warning {
            Some(prev) => format!("{prev}; {w}"),
            None => w,
        });
        max_procs = ceiling as i64;
    }
    let uid = job.config.uid.unwrap_or(0);
    let caps: HashSet<Capability> = JOB_CAPS.iter().copied().collect();
    // runc sets the sets after switching uid; a non-root job keeps nothing but the bounding set
    // (its exec would drop them anyway: this makes it explicit).
    let held = if uid == 0 {
        caps.clone()
    } else {
        HashSet::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps)
        .effective(held.clone())
        .permitted(held)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let env: Vec<String> = job_env(job)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let attach = job.config.attach.unwrap_or(crate::attach::AttachConfig {
        tty: false,
        cols: 0,
        rows: 0,
    });
    let mut process = ProcessBuilder::default()
        .terminal(attach.tty)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(job.config.gid.unwrap_or(0))
                .build()?,
        )
        .args(process_args(&job.config.args, inp.init.is_some()))
        .env(env)
        .cwd(job.config.working_dir.clone().unwrap_or_else(|| "/".into()))
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()?,
        ])
        .build()?;
    if attach.tty && attach.cols > 0 && attach.rows > 0 {
        process.set_console_size(Some(
            oci_spec::runtime::BoxBuilder::default()
                .width(attach.cols as u64)
                .height(attach.rows as u64)
                .build()?,
        ));
    }

    // runc spec's mounts, but our own /dev/shm size and a tmpfs /tmp.
    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/dev/shm"))
        .collect();
    mounts.push(tmpfs("/dev/shm", "64m")?);
    mounts.push(tmpfs("/tmp", "256m")?);
    mounts.push(bind("/etc/hosts", inp.hosts_file, true)?);
    mounts.push(bind("/etc/resolv.conf", inp.resolv_conf, true)?);
    for m in &job.config.mounts {
        mounts.push(job_mount(m)?);
    }
    if let Some(ca) = inp.ca_bundle {
        mounts.push(bind(HOST_CA_BUNDLE, ca, true)?);
    }
    if let Some(init) = inp.init {
        mounts.push(bind(INIT_PATH, init, true)?);
    }

    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<_, _>>()?;
    if let Some(ns) = inp.netns {
        // Prepared by the agent (veth, IP, route) before the container is created.
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(ns.to_path_buf())
                .build()?,
        );
    }
    let mem = r.memory() as i64;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()?,
        ])
        .memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build()?)
        .cpu(LinuxCpuBuilder::default().shares(r.cpu_shares()).build()?)
        .pids(LinuxPidsBuilder::default().limit(max_procs).build()?)
        .build()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(&inp.cgroups_path))
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .seccomp(super::seccomp::profile()?)
        .build()?;
    let hostname: String = job.id.chars().take(12).collect();
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path(inp.rootfs.to_path_buf())
                .readonly(false)
                .build()?,
        )
        .hostname(if job.config.host_network {
            String::new()
        } else {
            hostname
        })
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .context("building the OCI spec")?;
    Ok((spec, warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{JobConfig, PortSpec, Resources};

    fn job() -> HostJob {
        let mut config = JobConfig::new("busybox", &["httpd", "-f"]);
        config.env.insert("FOO".into(), "bar".into());
        config.env.insert("PORT".into(), "1".into());
        config.mounts.push(BindMount {
            source: "/srv/src".into(),
            target: "/app".into(),
            readonly: false,
        });
        config.mounts.push(BindMount {
            source: "/srv/env".into(),
            target: "/slipway/env".into(),
            readonly: true,
        });
        config.ports.push(PortSpec {
            port: 5000,
            proto: "tcp".into(),
            check: None,
        });
        HostJob {
            id: "job1".into(),
            app_id: "app-id".into(),
            app_name: "web-app".into(),
            release_id: "rel".into(),
            process_type: "web".into(),
            metadata: Default::default(),
            config,
            resources: Resources {
                memory_bytes: Some(256 << 20),
                max_fd: Some(1 << 30),
                ..Default::default()
            },
        }
    }

    #[test]
    fn spec_has_limits_env_and_hardening() {
        let p = Path::new("/x");
        let (spec, warn) = build(
            &job(),
            &SpecInputs {
                rootfs: p,
                cgroups_path: "/slipway/job1".into(),
                hosts_file: p,
                resolv_conf: p,
                nofile_ceiling: 20_000,
                ca_bundle: Some(p),
                netns: Some(Path::new("/run/netns/x")),
                init: Some(Path::new("/usr/bin/tini-static")),
                pids_ceiling: Some(100),
            },
        )
        .unwrap();
        let warn = warn.unwrap();
        assert!(warn.contains("20000"), "{warn}");
        assert!(
            warn.contains("max_procs 512 is above this host's limit for all jobs together (100)"),
            "{warn}"
        );
        let v = serde_json::to_value(&spec).unwrap();
        let env: Vec<&str> = v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"PORT=5000"), "{env:?}");
        assert!(env.contains(&"FOO=bar"));
        assert!(env.contains(&"SLIPWAY_JOB_ID=job1"));
        assert!(env.contains(&"SLIPWAY_APP_NAME=web-app"));
        assert_eq!(v["process"]["rlimits"][0]["hard"], 20_000);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 256 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 1024);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 100);
        let caps = &v["process"]["capabilities"];
        assert_eq!(caps["bounding"].as_array().unwrap().len(), 10);
        assert_eq!(
            caps["effective"].as_array().unwrap().len(),
            10,
            "root keeps them"
        );
        for dropped in ["CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"] {
            assert!(
                !caps["bounding"]
                    .as_array()
                    .unwrap()
                    .contains(&dropped.into()),
                "{dropped}"
            );
        }
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(v["linux"]["maskedPaths"].as_array().unwrap().len() > 5);
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for d in [
            "/tmp",
            "/dev/shm",
            "/etc/resolv.conf",
            "/etc/hosts",
            HOST_CA_BUNDLE,
        ] {
            assert!(dests.contains(&d), "{d} missing from {dests:?}");
        }
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(ns.contains(&"network"));
        let m = v["mounts"].as_array().unwrap();
        let opts = |dest: &str| {
            let m = m.iter().find(|m| m["destination"] == dest).unwrap();
            (
                m["source"].clone(),
                m["options"].as_array().unwrap().clone(),
            )
        };
        let (src, o) = opts("/app");
        assert_eq!(src, "/srv/src");
        assert!(
            !o.contains(&"ro".into()) && o.contains(&"rbind".into()),
            "{o:?}"
        );
        assert!(opts("/slipway/env").1.contains(&"ro".into()));
        for (source, target) in [
            ("/srv", "../etc"),
            ("/srv", "/app/../../etc"),
            ("srv", "/app"),
            ("/srv", "/"),
        ] {
            let bad = BindMount {
                source: source.into(),
                target: target.into(),
                readonly: true,
            };
            let err = job_mount(&bad).unwrap_err().to_string();
            assert!(err.contains("must be an absolute path"), "{err}");
        }
        assert!(dests.contains(&INIT_PATH));
        let args: Vec<&str> = v["process"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, [INIT_PATH, "-g", "--", "httpd", "-f"]);
        let mut web = job();
        web.config.ports.clear();
        assert_eq!(
            job_env(&web)["PORT"],
            "1",
            "an explicit PORT wins when no port is declared"
        );
        web.config.env.remove("PORT");
        assert_eq!(job_env(&web)["PORT"], "8080");
        web.process_type = "worker".into();
        assert!(!job_env(&web).contains_key("PORT"));
    }

    #[test]
    fn a_job_of_another_uid_holds_no_capability() {
        let p = Path::new("/x");
        let mut j = job();
        j.config.uid = Some(1000);
        let inputs = SpecInputs {
            rootfs: p,
            cgroups_path: "/slipway/job1".into(),
            hosts_file: p,
            resolv_conf: p,
            nofile_ceiling: 1 << 31,
            ca_bundle: None,
            netns: None,
            init: None,
            pids_ceiling: None,
        };
        let (spec, warn) = build(&j, &inputs).unwrap();
        assert_eq!(warn, None);
        let v = serde_json::to_value(&spec).unwrap();
        let caps = &v["process"]["capabilities"];
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(caps["bounding"].as_array().unwrap().len(), 10);
        for set in ["effective", "permitted", "inheritable", "ambient"] {
            assert_eq!(caps[set].as_array().map_or(0, |a| a.len()), 0, "{set}");
        }
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 512);
    }
}
