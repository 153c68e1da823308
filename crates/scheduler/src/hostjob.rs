//! How a formation's job becomes a host job: the release's process type on a stack.
//!
//! Releases have no artifacts yet (git push is a later issue), so a process type runs its own
//! `args` on the scheduler's default stack (`busybox`); a release with artifacts will add their
//! layers here. A process type without a command and without an artifact cannot run: that is an
//! error the job shows (`ps`) rather than a silent no-op.

use slipway_host::{HealthCheck as HostCheck, HostJob, JobConfig, PortSpec, Resources};
use slipway_types::{App, HealthCheckType, Release};

pub const NO_IMAGE: &str = "App release has no image, push a release first";

/// The host job for `process_type` of `release` (None: a one-off job running `args`).
pub fn host_job(
    id: &str,
    app: &App,
    release: &Release,
    process_type: Option<&str>,
    args: &[String],
    extra_env: &std::collections::BTreeMap<String, String>,
    stack: &str,
) -> Result<HostJob, String> {
    let proc = process_type.and_then(|t| release.processes.get(t));
    let args: Vec<String> = if !args.is_empty() {
        args.to_vec()
    } else {
        proc.map(|p| p.args.clone()).unwrap_or_default()
    };
    if args.is_empty() {
        return Err(match process_type {
            Some(t) if release.artifacts.is_empty() => {
                format!("process type {t} has no command and the release has no artifact")
            }
            _ => NO_IMAGE.to_string(),
        });
    }
    let mut config = JobConfig::new(stack, &[]);
    config.args = args;
    config.env = release.env.clone();
    if let Some(p) = proc {
        config.env.extend(p.env.clone());
        config.host_network = p.host_network;
        for port in &p.ports {
            let check = port
                .service
                .as_ref()
                .and_then(|s| s.check.as_ref())
                .map(|c| {
                    let mut h = match c.kind {
                        HealthCheckType::Tcp => HostCheck::tcp(),
                        HealthCheckType::Http => HostCheck::http(c.path.as_deref().unwrap_or("/")),
                    };
                    h.status = c.status;
                    h.interval_ms = c.interval_ms;
                    h.threshold = c.threshold;
                    h.start_timeout_ms = c.start_timeout_ms;
                    h.kill_down = c.kill_down;
                    h
                });
            config.ports.push(PortSpec {
                port: if port.port == 0 {
                    slipway_host::DEFAULT_WEB_PORT
                } else {
                    port.port
                },
                proto: port.proto.clone(),
                check,
            });
        }
    }
    config.env.extend(extra_env.clone());
    let resources = proc
        .map(|p| Resources {
            memory_bytes: p.resources.memory,
            cpu_milli: p.resources.cpu,
            max_fd: p.resources.max_fd,
            max_procs: p.resources.max_procs.map(|n| n.min(i64::MAX as u64) as i64),
        })
        .unwrap_or_default();
    Ok(HostJob {
        id: id.to_string(),
        app_id: app.id.to_string(),
        app_name: app.name.clone(),
        release_id: release.id.to_string(),
        process_type: process_type.unwrap_or_default().to_string(),
        metadata: Default::default(),
        config,
        resources,
    })
}
