//! The cluster scale test (`bench/cluster-scale.sh`): 1,000 jobs over 3 hosts, with the
//! cluster's real moving parts — a 3-member etcd, PostgreSQL, host APIs over HTTP with the
//! cluster token, and 2 scheduler *processes* campaigning through etcd — but the fake container
//! runtime: what is measured is the control plane (placement, host calls, job rows, etcd), not
//! how fast runc starts 1,000 containers.
//!
//! The script starts etcd and PostgreSQL and runs `cluster_sim drive`, which:
//! 1. runs 3 host agents (fake runtime) in this process, each serving its API over HTTP and
//!    registered in `slipway-host` through `EtcdRegistry`, as `slipway server` does;
//! 2. starts 2 schedulers, each a child process of this binary (`cluster_sim scheduler NAME`,
//!    so their CPU time and RSS are theirs alone, and the leader can be SIGKILLed), following
//!    the hosts through discovery and campaigning in `slipway-scheduler`;
//! 3. writes formations for APPS × PER_APP jobs and times until every job row is `up`;
//! 4. reports jobs per host, etcd's key count, revisions and the watch events a watcher on the
//!    whole keyspace saw, and each scheduler's CPU time and peak RSS;
//! 5. SIGKILLs the leader, times until the other one has fenced every host with its epoch,
//!    scales one app up through it, and checks that no job was started twice.
//!
//! Usage: cluster_sim drive ETCD_URLS DATABASE_URL [APPS] [PER_APP]
//! (the cluster token is generated here and handed to the children in their environment,
//! never on a command line).

use anyhow::{Context, Result, bail};
use slipway_discovery::{EtcdRegistry, NewInstance, Registration, Registry};
use slipway_host::client::HttpHost;
use slipway_host::fake::FakeRuntime;
use slipway_host::{Agent, AgentConfig, HostApi};
use slipway_scheduler::membership::{Connect, HOST_SERVICE};
use slipway_scheduler::{Election, Scheduler, leader};
use slipway_store::Store;
use slipway_types::{FormationUpdate, Id, JobState, NewApp, NewRelease, ProcessType};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that carries the cluster token to the scheduler processes.
const TOKEN_ENV: &str = "SLIPWAY_BENCH_CLUSTER_TOKEN";
const HOSTS: usize = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("scheduler") if args.len() == 4 => scheduler(&args[1], &args[2], &args[3]).await,
        Some("drive") if (3..=5).contains(&args.len()) => {
            let n = |i: usize, default: usize| -> Result<usize> {
                args.get(i).map_or(Ok(default), |a| {
                    a.parse().with_context(|| format!("not a count: {a:?}"))
                })
            };
            drive(&args[1], &args[2], n(3, 10)?, n(4, 100)? as u32).await
        }
        _ => bail!(
            "usage: cluster_sim drive ETCD_URLS DATABASE_URL [APPS] [PER_APP] (bench/cluster-scale.sh runs it)"
        ),
    }
}

async fn registry(etcd: &str) -> Result<Arc<dyn Registry>> {
    let client = slipway_etcd::Client::connect(etcd)
        .await
        .with_context(|| format!("connect to etcd at {etcd}"))?;
    Ok(Arc::new(EtcdRegistry::new(
        client,
        slipway_discovery::DEFAULT_TTL,
    )))
}

/// One scheduler process, as `slipway server` runs the role: follows the registered hosts,
/// campaigns, acts while it leads. Exits when its parent closes its stdin (so a driver that
/// dies leaves no scheduler behind).
async fn scheduler(name: &str, etcd: &str, db: &str) -> Result<()> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let registry = registry(etcd).await?;
    let store: Arc<dyn Store> = Arc::new(
        slipway_store::open(db)
            .await
            .context("open the store on PostgreSQL")?,
    );
    let sched = Scheduler::new(store, Default::default());
    let connect: Connect = Arc::new(move |i| -> Arc<dyn HostApi> {
        Arc::new(HttpHost::new(&format!("http://{}", i.addr), &token))
    });
    sched.follow_hosts(registry.clone(), None, connect);
    let new = NewInstance {
        // No controller here; the address only has to be well-formed.
        addr: "127.0.0.1:9".into(),
        ..Default::default()
    };
    let election = Election::campaign(
        registry,
        leader::SCHEDULER_SERVICE,
        name,
        new,
        slipway_discovery::DEFAULT_TTL,
    )
    .await
    .context("campaign in slipway-scheduler")?;
    sched.elect(election);
    sched.run().await;
    Ok(())
}

/// A host agent on the fake runtime with its HTTP API, registered in discovery.
struct Host {
    agent: Arc<Agent>,
    _registration: Registration,
    _dir: tempfile::TempDir,
}

async fn host(i: usize, registry: &Arc<dyn Registry>, token: &str) -> Result<Host> {
    let dir = tempfile::tempdir()?;
    let mut cfg = AgentConfig::new(dir.path());
    cfg.id = format!("host{i}");
    let agent = Arc::new(Agent::start(cfg, Arc::new(FakeRuntime::new())).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (api, token) = (agent.clone(), token.to_string());
    tokio::spawn(async move { slipway_host::http::serve(api, listener, &token).await });
    let new = NewInstance {
        addr,
        proto: Some("tcp".into()),
        ..Default::default()
    };
    let registration = Registration::start(
        registry.clone(),
        HOST_SERVICE,
        &format!("host{i}"),
        new,
        slipway_discovery::DEFAULT_TTL,
    )
    .await?;
    Ok(Host {
        agent,
        _registration: registration,
        _dir: dir,
    })
}

/// A scheduler child process; SIGKILLed on drop.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(name: &str, etcd: &str, db: &str, token: &str) -> Result<Proc> {
        let child = Command::new(std::env::current_exe()?)
            .args(["scheduler", name, etcd, db])
            .env(TOKEN_ENV, token)
            .stdin(Stdio::piped())
            .spawn()
            .context("start a scheduler process")?;
        Ok(Proc {
            name: name.into(),
            child,
        })
    }

    /// CPU time (user + system) so far, from /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is the 3rd field,
        // utime the 14th, stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |r| r.1);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // SAFETY: sysconf only reads a configuration value.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(f.iter().sum::<u64>() as f64 / tick)
    }

    /// Peak RSS (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// Counts the watch events etcd sends for every key under `/` (all of Slipway's keys).
async fn count_watch(etcd: &str, events: Arc<AtomicU64>) -> Result<()> {
    let client = slipway_etcd::Client::connect(etcd).await?;
    let mut w = client
        .watch(&slipway_etcd::WatchRequest::prefix("/", 0))
        .await?;
    tokio::spawn(async move {
        while let Ok(Some(r)) = w.next().await {
            events.fetch_add(r.events.len() as u64, Ordering::Relaxed);
        }
    });
    Ok(())
}

/// etcd's key count under `/` and its current revision.
async fn etcd_keys(client: &slipway_etcd::Client) -> Result<(i64, i64)> {
    let r = client
        .range(&slipway_etcd::RangeRequest {
            count_only: true,
            ..slipway_etcd::RangeRequest::prefix("/")
        })
        .await?;
    Ok((r.count, r.header.revision))
}

/// Requests etcd served, summed over its members, from their `/metrics`: (ranges, txns,
/// watchers open now). Ranges are the followers' and candidates' polls; txns are registrations.
#[derive(Clone, Copy, Default)]
struct EtcdLoad {
    ranges: u64,
    txns: u64,
    watchers: u64,
}

async fn etcd_load(urls: &str) -> Result<EtcdLoad> {
    let mut load = EtcdLoad::default();
    for url in urls.split(',') {
        let text = reqwest::get(format!("{url}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        for line in text.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            match name {
                "etcd_mvcc_range_total" => load.ranges += v,
                "etcd_mvcc_txn_total" => load.txns += v,
                "etcd_debugging_mvcc_watcher_total" => load.watchers += v,
                _ => {}
            }
        }
    }
    Ok(load)
}

impl std::ops::Sub for EtcdLoad {
    type Output = EtcdLoad;
    fn sub(self, o: EtcdLoad) -> EtcdLoad {
        EtcdLoad {
            ranges: self.ranges.saturating_sub(o.ranges),
            txns: self.txns.saturating_sub(o.txns),
            watchers: self.watchers,
        }
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut done: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t0 = Instant::now();
    loop {
        if done().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("{what}: not done after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Job rows that are up, over the given apps.
async fn rows_up(store: &Arc<dyn Store>, apps: &[(Id, Id)]) -> Result<(usize, usize)> {
    let (mut up, mut all) = (0, 0);
    for (app, _) in apps {
        let jobs = store.list_jobs(*app).await?;
        all += jobs.len();
        up += jobs.iter().filter(|j| j.state == JobState::Up).count();
    }
    Ok((up, all))
}

/// (jobs ever started, jobs running) per host.
async fn host_jobs(hosts: &[Host]) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for h in hosts {
        let jobs = h.agent.list_jobs().await?;
        let live = jobs.iter().filter(|j| !j.status.is_terminal()).count();
        out.push((jobs.len(), live));
    }
    Ok(out)
}

async fn epochs(hosts: &[Host]) -> Vec<u64> {
    let mut out = Vec::new();
    for h in hosts {
        out.push(h.agent.epoch().await);
    }
    out
}

async fn drive(etcd: &str, db: &str, apps: usize, per_app: u32) -> Result<()> {
    let total = apps * per_app as usize;
    let token = Id::new_v4().simple().to_string();
    let registry = registry(etcd).await?;
    let client = slipway_etcd::Client::connect(etcd).await?;
    let events = Arc::new(AtomicU64::new(0));
    count_watch(etcd, events.clone()).await?;
    let (_, rev0) = etcd_keys(&client).await?;
    let store: Arc<dyn Store> = Arc::new(slipway_store::open(db).await?);
    let mut ids = Vec::new();
    for a in 0..apps {
        let app = store
            .create_app(&format!("app{a}"), &NewApp::default(), None)
            .await?;
        let mut r = NewRelease::default();
        r.processes.insert(
            "web".into(),
            ProcessType {
                args: vec!["run".into()],
                ..Default::default()
            },
        );
        let rel = store.create_release(app.id, &r).await?;
        ids.push((app.id, rel.id));
    }

    let t_start = Instant::now();
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        hosts.push(host(i, &registry, &token).await?);
    }
    let mut procs = vec![Proc::start("s1", etcd, db, &token)?];
    // The first one campaigns first, so it leads; the second is the standby.
    tokio::time::sleep(Duration::from_millis(500)).await;
    procs.push(Proc::start("s2", etcd, db, &token)?);
    wait_for(
        "a leader fences every host",
        Duration::from_secs(60),
        || {
            let hosts = &hosts;
            async move { Ok(epochs(hosts).await.iter().all(|e| *e > 0)) }
        },
    )
    .await?;
    let ready = t_start.elapsed();
    wait_for("both schedulers campaign", Duration::from_secs(60), || {
        let registry = &registry;
        async move {
            let n = registry.instances(leader::SCHEDULER_SERVICE).await?.len();
            Ok(n == 2)
        }
    })
    .await?;
    let leader_inst = registry
        .leader(leader::SCHEDULER_SERVICE)
        .await?
        .context("no scheduler leads")?;
    let epoch1 = leader_inst.index;
    let li = procs
        .iter()
        .position(|p| p.name == leader_inst.id)
        .context("the leader is not one of ours")?;
    println!(
        "cluster up in {:.2}s: {HOSTS} hosts registered, {} leads (epoch {epoch1}), {} follows",
        ready.as_secs_f64(),
        procs[li].name,
        procs[1 - li].name
    );

    let cpu0: Vec<Duration> = procs.iter().map(Proc::cpu).collect();
    let (keys0, _) = etcd_keys(&client).await?;
    let (events0, rev_up0) = (events.load(Ordering::Relaxed), etcd_keys(&client).await?.1);
    let load0 = etcd_load(etcd).await?;
    let t0 = Instant::now();
    for (app, rel) in &ids {
        let mut f = FormationUpdate::default();
        f.processes.insert("web".into(), per_app);
        store.put_formation(*app, *rel, &f).await?;
    }
    let all_running = wait_for("every job running", Duration::from_secs(120), || {
        let hosts = &hosts;
        async move {
            let n: usize = host_jobs(hosts).await?.iter().map(|h| h.1).sum();
            Ok(n >= total)
        }
    })
    .await?;
    wait_for("every job row up", Duration::from_secs(120), || {
        let (store, ids) = (&store, &ids);
        async move { Ok(rows_up(store, ids).await?.0 >= total) }
    })
    .await?;
    let all_up = t0.elapsed();
    let cpu_up: Vec<Duration> = procs.iter().map(Proc::cpu).collect();
    let per_host = host_jobs(&hosts).await?;
    let (keys_up, rev_up) = etcd_keys(&client).await?;
    let events_up = events.load(Ordering::Relaxed) - events0;
    let load_up = etcd_load(etcd).await?;

    // Steady state: 1,000 jobs up, nothing to do.
    let steady = Duration::from_secs(10);
    tokio::time::sleep(steady).await;
    let cpu_steady: Vec<Duration> = procs.iter().map(Proc::cpu).collect();
    let rss: Vec<f64> = procs.iter().map(Proc::peak_rss_mib).collect();
    let events_steady = events.load(Ordering::Relaxed) - events0 - events_up;
    let load_steady = etcd_load(etcd).await?;
    let (scaling, idle) = (load_up - load0, load_steady - load_up);

    // Kill the leader; the standby takes over once the leader's lease expires in etcd.
    let killed = procs.remove(li);
    let standby = procs.remove(0);
    let t_kill = Instant::now();
    drop(killed);
    let takeover = wait_for(
        "the standby fences every host",
        Duration::from_secs(60),
        || {
            let hosts = &hosts;
            async move { Ok(epochs(hosts).await.iter().all(|e| *e > epoch1)) }
        },
    )
    .await?;
    let epoch2 = epochs(&hosts).await[0];
    // It acts: one app scaled up by 10 through the new leader.
    let mut f = FormationUpdate::default();
    f.processes.insert("web".into(), per_app + 10);
    store.put_formation(ids[0].0, ids[0].1, &f).await?;
    let scaled = wait_for(
        "the scale through the new leader",
        Duration::from_secs(60),
        || {
            let (store, ids) = (&store, &ids);
            async move { Ok(rows_up(store, ids).await?.0 >= total + 10) }
        },
    )
    .await?;
    let after_kill = t_kill.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_host_end = host_jobs(&hosts).await?;
    let started: usize = per_host_end.iter().map(|h| h.0).sum();
    let running: usize = per_host_end.iter().map(|h| h.1).sum();
    let (up_rows, all_rows) = rows_up(&store, &ids).await?;
    let cpu_standby = standby.cpu();
    let rss_standby = standby.peak_rss_mib();
    drop(standby);
    let (keys_end, rev_end) = etcd_keys(&client).await?;

    let secs = |d: Duration| d.as_secs_f64();
    let (l, s) = (li, 1 - li);
    println!();
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| cluster | {HOSTS} hosts (fake runtime, HTTP API with the cluster token), 2 scheduler processes, 3-member etcd, PostgreSQL |"
    );
    println!(
        "| start: hosts registered, leader elected, every host fenced | {:.2} s |",
        secs(ready)
    );
    println!(
        "| {total} jobs ({apps} apps × web={per_app}): all running on the hosts | {:.2} s |",
        secs(all_running)
    );
    println!(
        "| {total} jobs: all job rows `up` in PostgreSQL (time to all up) | {:.2} s |",
        secs(all_up)
    );
    println!(
        "| jobs per host | {} |",
        per_host
            .iter()
            .enumerate()
            .map(|(i, h)| format!("host{i}: {}", h.1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| etcd keys (before / with {total} jobs up / at the end) | {keys0} / {keys_up} / {keys_end} |"
    );
    println!(
        "| etcd writes (revisions) while scaling to {total} / whole run | {} / {} |",
        rev_up - rev_up0,
        rev_end - rev0
    );
    println!(
        "| watch events on `/` while scaling to {total} / in {}s steady state / whole run | {events_up} / {events_steady} / {} |",
        steady.as_secs(),
        events.load(Ordering::Relaxed)
    );
    println!(
        "| etcd requests, all members: ranges / txns while scaling to {total} ({:.1} s) | {} / {} |",
        secs(all_up),
        scaling.ranges,
        scaling.txns
    );
    println!(
        "| etcd requests, all members: ranges / txns in {}s steady state | {} / {} |",
        steady.as_secs(),
        idle.ranges,
        idle.txns
    );
    println!(
        "| etcd watchers open (all members; the bench's own counting watcher included) | {} |",
        idle.watchers
    );
    println!(
        "| leader CPU time: scaling to {total} / {}s steady state | {:.2} s / {:.2} s |",
        steady.as_secs(),
        secs(cpu_up[l] - cpu0[l]),
        secs(cpu_steady[l] - cpu_up[l])
    );
    println!(
        "| standby CPU time: same periods | {:.2} s / {:.2} s |",
        secs(cpu_up[s] - cpu0[s]),
        secs(cpu_steady[s] - cpu_up[s])
    );
    println!(
        "| peak RSS: leader / standby (with {total} jobs) | {:.0} MiB / {:.0} MiB |",
        rss[l], rss[s]
    );
    println!(
        "| leader SIGKILLed → standby leads and fenced every host (epoch {epoch1} → {epoch2}) | {:.2} s |",
        secs(takeover)
    );
    println!(
        "| then app0 scaled +10 through the new leader: all up | {:.2} s ({:.2} s after the kill) |",
        secs(scaled),
        secs(after_kill)
    );
    println!(
        "| new leader CPU time, whole run / its peak RSS | {:.2} s / {rss_standby:.0} MiB |",
        secs(cpu_standby)
    );
    println!(
        "| jobs ever started on the hosts / running / job rows (up) | {started} / {running} / {all_rows} ({up_rows}) |"
    );
    println!(
        "| whole run (without etcd and PostgreSQL start) | {:.1} s |",
        secs(t_start.elapsed())
    );
    let want = total + 10;
    if started != want || running != want || all_rows != want || up_rows != want {
        bail!(
            "a job was started twice or lost: {started} started, {running} running, {all_rows} rows ({up_rows} up); expected {want} of each"
        );
    }
    println!("\nno job was started twice: {started} starts for {want} jobs");
    Ok(())
}
