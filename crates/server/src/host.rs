//! The host role: the local host agent (runc). Builds the busybox stack on first start (<1 s),
//! since releases without artifacts run on it.
//!
//! With `--host-listen ADDR` it serves its host API there and registers itself in discovery
//! (service `slipway-host`, instance id = host id, address = ADDR, meta: tags and capacity),
//! so that schedulers, log aggregators and discovery bridges in other processes follow it
//! ([`follow_members`]). A process with the scheduler follows its own host in-process.
//!
//! Needs: a discovery (in-process, `--etcd` or `--discovery-url`) to register in, unless the scheduler
//! runs here; the router's ports when it runs here (jobs may reach them); the blob store when
//! it runs here. Discovery's DNS runs on the jobs' bridge when discovery runs here.

use crate::Config;
use crate::discovery::Discovery;
use anyhow::{Context, Result, bail};
use slipway_discovery::{NewInstance, Registration, Registry};
use slipway_host::HostApi;
use slipway_scheduler::membership::{self, HOST_SERVICE, Member};
use std::collections::HashMap;
use std::sync::Arc;

pub struct HostDeps<'a> {
    pub scheduler: Option<&'a slipway_scheduler::Scheduler>,
    pub discovery: Option<&'a Discovery>,
    /// Where the host registers itself (with `--host-listen`).
    pub registry: Option<Arc<dyn Registry>>,
    /// The router's ports on this host, which jobs may connect to (empty without a router).
    pub published_tcp: Vec<(u16, u16)>,
    pub blobs: Option<Arc<dyn slipway_blobstore::BlobStore>>,
}

/// The local host agent, as the other roles of this process follow it.
pub struct LocalHost {
    pub id: String,
    pub api: Arc<dyn HostApi>,
    /// Kept while the server runs: it holds the agent's data dir lock.
    _host: slipway_host::daemon::Host,
}

pub async fn start(config: &Config, deps: HostDeps<'_>) -> Result<LocalHost> {
    let host_dir = config.data_dir.join("host");
    let mut runc = config.args.runtime.config(&host_dir)?;
    let mut agent = slipway_host::AgentConfig::new(&host_dir);
    let id = agent.id.clone();
    let listen = config.args.host_listen;
    if let (Some(registry), Some(_)) = (&deps.registry, listen) {
        crate::join::check_token(config).await?;
        refuse_duplicate(&**registry, &id).await?;
    }
    // With --overlay: this host's /24 of the cluster subnet, claimed in etcd, before anything
    // (the DNS below binds the bridge's address) uses the subnet.
    let overlay = crate::overlay::prepare(config, &mut runc, &agent.id).await?;
    // Jobs reach the host's router (an app calling another by its public name), nothing else
    // the host listens on but the gateway's DNS.
    runc.published_tcp = deps.published_tcp;
    // Discovery's DNS on the jobs' bridge: the agent's containers resolve through it.
    if let Some(discovery) = deps.discovery {
        runc.dns = discovery.start_dns(Some(&runc.network)).await;
    } else if let (Some(_), Some(registry)) = (&overlay, &deps.registry) {
        // Without discovery here: the overlay's jobs still resolve every job's name.
        runc.dns = crate::overlay::start_dns(config, registry.clone(), &runc.network).await;
    }
    let stacks = runc.stacks_dir.clone();
    let stack = match deps.scheduler {
        Some(s) => s.config().stack.clone(),
        None => slipway_scheduler::SchedulerConfig::default().stack,
    };
    tokio::task::spawn_blocking(move || slipway_host::stack::build(&stacks, &stack, false))
        .await?
        .context("cannot build the default stack")?;
    agent.tags = config.args.host_tags.iter().cloned().collect();
    agent.blobs = deps.blobs;
    let listen = match listen {
        Some(addr) => {
            let token = config.cluster_token.clone().filter(|t| !t.is_empty()).context(
                "--host-listen needs the cluster token, which every request to the host API must carry: \
                 set SLIPWAY_CLUSTER_TOKEN or --cluster-token-file (the controller wrote it to \
                 cluster-token in its data dir)",
            )?;
            Some((addr, token))
        }
        None => None,
    };
    let host = slipway_host::daemon::start(runc, agent, listen)
        .await
        .context("cannot start the local host agent (use --no-host to run without one)")?;
    let api = host.api();
    if let Some(overlay) = overlay {
        overlay.spawn();
    }
    if let Some(scheduler) = deps.scheduler {
        scheduler.add_host(api.clone()).await?;
    }
    match (&deps.registry, host.addr) {
        (Some(registry), Some(addr)) => {
            let status = api.status().await?;
            let mut meta: std::collections::BTreeMap<String, String> = status
                .tags
                .iter()
                .map(|(k, v)| (format!("tag.{k}"), v.clone()))
                .collect();
            meta.insert(
                "memory_bytes".into(),
                status.capacity.memory_bytes.to_string(),
            );
            meta.insert("cpus".into(), status.capacity.cpus.to_string());
            let new = NewInstance {
                addr: addr.to_string(),
                proto: Some("tcp".into()),
                meta,
            };
            let reg = Registration::start(
                registry.clone(),
                HOST_SERVICE,
                &id,
                new,
                slipway_discovery::DEFAULT_TTL,
            )
            .await
            .with_context(|| format!("cannot register host {id} in discovery"))?;
            tracing::info!(host = %id, "host API on http://{addr}, registered in discovery");
            // Held for as long as the process runs; if it dies, the registration expires and
            // the scheduler replaces the host's jobs. Cut off from etcd, it fences itself.
            crate::host_fence::hold(
                reg,
                api.clone(),
                config.etcd.clone(),
                config.args.fence_grace,
                crate::host_fence::Peers {
                    registry: registry.clone(),
                    own: id.clone(),
                },
            );
        }
        (None, Some(addr)) => tracing::info!(host = %id, "host API on http://{addr}"),
        _ => {}
    }
    tracing::info!(host = %id, "local host agent ready");
    Ok(LocalHost {
        id,
        api,
        _host: host,
    })
}

/// Two hosts with one id would each be taken for the other: the second refuses to start.
async fn refuse_duplicate(registry: &dyn Registry, id: &str) -> Result<()> {
    let taken = registry
        .instances(HOST_SERVICE)
        .await
        .context("cannot list the hosts registered in discovery")?
        .into_iter()
        .find(|i| i.id == id);
    if let Some(other) = taken {
        bail!(
            "another host with id {id} is registered in discovery (at {}): each host needs its own \
             data directory (the id is in <data dir>/host/host-id). If that host was this one and \
             has just died, its registration expires within {} s: start again then",
            other.addr,
            slipway_discovery::DEFAULT_TTL.as_secs()
        );
    }
    Ok(())
}

/// The discovery this process registers in, follows hosts through and campaigns in: the
/// in-process one (on etcd with `--etcd`), else etcd itself (`--etcd`: no HTTP hop, no
/// discovery process to depend on), else `--discovery-url` (with the API key); `None` without
/// any.
pub fn registry(
    config: &Config,
    discovery: Option<&Discovery>,
    etcd: Option<&slipway_etcd::Client>,
    api_key: &str,
) -> Option<Arc<dyn Registry>> {
    if let Some(d) = discovery {
        return Some(d.registry.clone());
    }
    if let Some(etcd) = etcd {
        return Some(crate::discovery::etcd_registry(etcd));
    }
    let url = config.args.discovery_url.as_deref()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    Some(Arc::new(slipway_discovery::HttpRegistry::new(url, api_key)))
}

/// How this process reaches a registered host: its host API over HTTP.
/// Every host API takes the cluster token.
pub fn connect(cluster_token: &str) -> membership::Connect {
    let token = cluster_token.to_string();
    Arc::new(move |inst| {
        Arc::new(slipway_host::client::HttpHost::new(
            &format!("http://{}", inst.addr),
            &token,
        ))
    })
}

/// Makes the roles of this process that follow hosts follow every registered one: the
/// scheduler (it adds and loses them), the discovery bridge (their jobs into discovery) and
/// the log aggregator (their jobs' lines). The local host is followed in-process already.
pub fn follow_members(
    registry: Arc<dyn Registry>,
    local: Option<&LocalHost>,
    scheduler: Option<&slipway_scheduler::Scheduler>,
    discovery: Option<&Discovery>,
    logs: Option<&slipway_logs::Aggregator>,
    cluster_token: &str,
) {
    let local = local.map(|l| (l.id.clone(), l.api.clone()));
    if let Some(s) = scheduler {
        s.follow_hosts(registry.clone(), local.clone(), connect(cluster_token));
    }
    if discovery.is_none() && logs.is_none() {
        return;
    }
    let local_id = local.as_ref().map(|l| l.0.clone());
    let bridge = discovery.map(|d| (d.registry.clone(), d.bridge.clone()));
    let logs = logs.cloned();
    let mut following: HashMap<String, Vec<tokio::task::AbortHandle>> = HashMap::new();
    membership::follow_members(registry, local, connect(cluster_token), move |m| match m {
        Member::Up(inst, api) => {
            if local_id.as_deref() == Some(inst.id.as_str()) {
                return;
            }
            let mut tasks = Vec::new();
            if let Some((registry, bridge)) = &bridge {
                tasks.push(crate::discovery::bridge::follow_host(
                    api.clone(),
                    registry.clone(),
                    bridge.clone(),
                ));
            }
            if let Some(logs) = &logs {
                tasks.push(slipway_logs::follow_host(logs.clone(), api));
            }
            // A host that registered again (restarted): its old process's followers go.
            for old in following.insert(inst.id, tasks).into_iter().flatten() {
                old.abort();
            }
        }
        Member::Gone(id) => {
            for task in following.remove(&id).into_iter().flatten() {
                task.abort();
            }
            if let Some((_, bridge)) = &bridge {
                let bridge = bridge.clone();
                // Its jobs are gone with it: out of discovery now, not heartbeated forever.
                tokio::spawn(async move { bridge.forget_host_jobs(&id).await });
            }
        }
    });
}
