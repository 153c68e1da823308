//! Scale simulation (`bench/scheduler-sim.sh`): 10,000 jobs over 100 fake hosts.
//!
//! 1. The planner alone: a round from nothing to 10,000 placements, and a steady-state round.
//! 2. The whole scheduler: 100 agents on the fake runtime, a SQLite store, 100 apps with web=100;
//!    time until every job is up in the scheduler, and until every job row is in the store.
//!
//! Usage: sim [HOSTS] [APPS] [JOBS_PER_APP]

use slipway_host::fake::FakeRuntime;
use slipway_host::{Agent, AgentConfig};
use slipway_scheduler::plan::{self, HostView, JobView, Key, Phase, Want};
use slipway_scheduler::{Scheduler, SchedulerConfig};
use slipway_store::Store;
use slipway_types::{FormationUpdate, JobState, NewApp, NewRelease, ProcessType};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn planner(hosts: usize, apps: usize, per_app: u32) {
    let hv: Vec<HostView> = (0..hosts)
        .map(|i| HostView {
            id: format!("host{i:03}"),
            tags: Default::default(),
            shutting_down: false,
            drained: false,
            unreachable: false,
        })
        .collect();
    let wants: Vec<Want> = (0..apps)
        .map(|_| Want {
            key: Key {
                app: uuid::Uuid::new_v4(),
                release: uuid::Uuid::new_v4(),
                process_type: "web".into(),
            },
            count: per_app,
            tags: Default::default(),
            host: None,
            deferred: 0,
            omni: false,
        })
        .collect();
    let t = Instant::now();
    let actions = plan::plan(&wants, &hv, &[]);
    let cold = t.elapsed();
    let mut jobs = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if let plan::Action::Start { key, host } = a {
            jobs.push(JobView {
                id: format!("j{i}"),
                key: key.clone(),
                host: host.clone(),
                phase: Phase::Running,
                seq: i as u64,
                serving: true,
            });
        }
    }
    let t = Instant::now();
    let again = plan::plan(&wants, &hv, &jobs);
    let steady = t.elapsed();
    assert!(again.is_empty(), "a converged cluster needs no action");
    println!(
        "planner: {} placements over {hosts} hosts in {:.1} ms (cold); steady-state round over {} jobs in {:.1} ms",
        actions.len(),
        cold.as_secs_f64() * 1e3,
        jobs.len(),
        steady.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (hosts, apps, per_app) = (
        args.first().copied().unwrap_or(100),
        args.get(1).copied().unwrap_or(100),
        args.get(2).copied().unwrap_or(100) as u32,
    );
    planner(hosts, apps, per_app);

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await?);
    let rss0 = rss_mib();
    let sched = Scheduler::new(
        store.clone(),
        SchedulerConfig {
            resync_interval: Duration::from_secs(30),
            ..Default::default()
        },
    );
    for i in 0..hosts {
        let mut cfg = AgentConfig::new(dir.path().join(format!("host{i}")));
        cfg.id = format!("host{i:03}");
        let agent = Agent::start(cfg, Arc::new(FakeRuntime::new())).await?;
        sched.add_host(Arc::new(agent)).await?;
    }
    let rss_hosts = rss_mib();
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
    let total = apps * per_app as usize;
    let t0 = Instant::now();
    for (app, rel) in &ids {
        let mut f = FormationUpdate::default();
        f.processes.insert("web".into(), per_app);
        store.put_formation(*app, *rel, &f).await?;
    }
    let formations = t0.elapsed();
    let round = sched.round().await?;
    let round_time = t0.elapsed() - formations;
    tokio::spawn(sched.clone().run());
    loop {
        let up = sched
            .jobs()
            .iter()
            .filter(|j| j.state == JobState::Up)
            .count();
        if up >= total {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not converged after 10 min: {up}/{total} up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = t0.elapsed();
    let rss_up = rss_mib();
    loop {
        let mut n = 0;
        for (app, _) in &ids {
            n += store
                .list_jobs(*app)
                .await?
                .iter()
                .filter(|j| j.state == JobState::Up)
                .count();
        }
        if n >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recorded = t0.elapsed();
    println!(
        "scheduler: {total} jobs over {hosts} fake hosts: formations written in {:.2}s; first round (read formations, plan, dispatch {} starts) {:.1} ms (plan {:.1} ms); all up {:.2}s; all rows in the store {:.2}s",
        formations.as_secs_f64(),
        round.started,
        round_time.as_secs_f64() * 1e3,
        round.plan_time.as_secs_f64() * 1e3,
        converged.as_secs_f64(),
        recorded.as_secs_f64()
    );
    println!(
        "memory: process RSS {rss0:.0} MiB before the hosts, {rss_hosts:.0} MiB with {hosts} idle hosts, {rss_up:.0} MiB with {total} jobs up (the agents' and fake runtime's job tables included)"
    );
    // The scheduler's own share, estimated from what it holds per job: the job row (struct and
    // strings), the formation key (uuid pair + type), and hash map overhead (≈ 2× the entry).
    let jobs = sched.jobs();
    let heap: usize = jobs
        .iter()
        .map(|j| {
            j.id.len()
                + j.host_id.as_ref().map_or(0, String::len)
                + j.process_type.as_ref().map_or(0, String::len) * 2
                + j.host_error.as_ref().map_or(0, String::len)
        })
        .sum();
    let per_entry = std::mem::size_of::<slipway_types::Job>() + std::mem::size_of::<Key>() + 64;
    let est = (jobs.len() * per_entry * 2 + heap) as f64 / (1 << 20) as f64;
    println!(
        "memory: the scheduler's job table ({} jobs) ≈ {est:.1} MiB (estimate: {} B per entry + strings)",
        jobs.len(),
        per_entry
    );
    Ok(())
}
