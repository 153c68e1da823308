//! Durability under `kill -9` (issue 17): a client writes in a loop through the real CLI (env
//! set, route add, scale) while the server is killed with SIGKILL at random points 20 times and
//! started again on the same data dir; every write the client saw succeed must be there.
//!
//! What makes it hold is the store's SQLite settings (WAL, `synchronous = FULL`, docs/store.md)
//! and every API write being one transaction committed before the answer. The server runs
//! without a host agent (`--no-host`): a formation write (`scale --no-wait`) is acknowledged
//! once stored, whether or not jobs start, and the env app has no processes, so its deploys
//! complete without jobs.
//!
//! The check runs after every restart, not only at the end, so a scale write lost at one kill
//! cannot be hidden by a later one. While it runs the writer is paused between two commands;
//! the kills themselves never wait for the writer.

use crate::support::{BIN, TestServer, block_on};
use slipway_types::{NewRelease, ProcessType, Route};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
const ENV_APP: &str = "dur-env";
const SCALE_APP: &str = "dur-scale";

/// What the writer tried and what was acknowledged (exit status 0).
#[derive(Default)]
struct Log {
    /// `i` of each acknowledged `env set K{i}=v{i}`.
    env: Vec<u32>,
    /// Each acknowledged `route add http` domain.
    routes: Vec<String>,
    /// Every `scale web=N` tried, in order, and whether it was acknowledged.
    scales: Vec<(u32, bool)>,
    attempts: u32,
    /// Failed commands (the server was down or killed mid-request).
    failed: u32,
}

impl Log {
    fn acknowledged(&self) -> usize {
        self.env.len() + self.routes.len() + self.scales.iter().filter(|s| s.1).count()
    }
}

/// xorshift64: random enough for kill points, no dependency; the seed is printed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the CLI as a user would (the config file the server registered itself in); success or not.
fn cli(config: &PathBuf, home: &PathBuf, work: &PathBuf, args: &[&str]) -> bool {
    assert_cmd::Command::new(BIN)
        .current_dir(work)
        .env("SLIPWAY_CONFIG", config)
        .env("HOME", home)
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .timeout(Duration::from_secs(60))
        .write_stdin("")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every acknowledged write is in the store; the formation is the last acknowledged scale or
/// one tried after it (a write can be committed and the server killed before it answers).
fn check(s: &TestServer, scale_release: slipway_types::Id, log: &Log, round: usize) {
    let client = s.client();
    block_on(async {
        let env = client
            .current_release(ENV_APP)
            .await
            .expect("current release")
            .map(|r| r.env)
            .unwrap_or_default();
        for i in &log.env {
            assert_eq!(
                env.get(&format!("K{i}")).map(String::as_str),
                Some(format!("v{i}").as_str()),
                "after kill {round}: acknowledged `env set K{i}=v{i}` is lost (env: {env:?})"
            );
        }
        let routes: Vec<String> = client
            .routes(ENV_APP)
            .await
            .expect("routes")
            .into_iter()
            .filter_map(|r| match r {
                Route::Http(h) => Some(h.domain),
                Route::Tcp(_) => None,
            })
            .collect();
        for d in &log.routes {
            assert!(
                routes.contains(d),
                "after kill {round}: acknowledged route {d} is lost"
            );
        }
        if let Some(last) = log.scales.iter().rposition(|s| s.1) {
            let allowed: Vec<u32> = log.scales[last..].iter().map(|s| s.0).collect();
            let f = client
                .formation(SCALE_APP, scale_release)
                .await
                .unwrap_or_else(|e| {
                    panic!("after kill {round}: acknowledged scale, no formation: {e}")
                });
            let web = f.processes.get("web").copied().unwrap_or(0);
            assert!(
                allowed.contains(&web),
                "after kill {round}: web={web}, but the last acknowledged scale was web={} \
                 (and only {allowed:?} were tried since)",
                allowed[0]
            );
        }
    });
}

/// No deployment the kills interrupted stays unfinished (the restarted deployer fails and
/// rolls back one it finds `running`), and the app's current release is the one its newest
/// complete deployment made current: `complete` and the current release are one write.
fn deployments_are_whole(s: &TestServer) {
    let client = s.client();
    block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let deployments = loop {
            let ds = client.deployments(ENV_APP).await.expect("deployments");
            if ds.iter().all(|d| d.status.is_finished()) {
                break ds;
            }
            assert!(
                Instant::now() < deadline,
                "deployments still unfinished 30 s after the last restart: {ds:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let newest_complete = deployments
            .iter()
            .find(|d| d.status == slipway_types::DeploymentStatus::Complete)
            .expect("a complete deployment");
        let app = client.app(ENV_APP).await.expect("app");
        assert_eq!(
            app.release,
            Some(newest_complete.new_release_id),
            "the current release is not the newest complete deployment's"
        );
        println!(
            "{} deployments, {} complete, {} failed",
            deployments.len(),
            deployments
                .iter()
                .filter(|d| d.status == slipway_types::DeploymentStatus::Complete)
                .count(),
            deployments
                .iter()
                .filter(|d| d.status == slipway_types::DeploymentStatus::Failed)
                .count()
        );
    });
}

#[test]
fn every_acknowledged_write_survives_twenty_kill_9s() {
    let mut s = TestServer::start();
    s.create_app(ENV_APP);
    s.create_app(SCALE_APP);
    let client = s.client();
    let scale_release = block_on(async {
        let mut new = NewRelease::default();
        new.processes.insert("web".into(), ProcessType::default());
        let release = client.create_release(SCALE_APP, &new).await.unwrap();
        client.set_app_release(SCALE_APP, release.id).await.unwrap();
        release.id
    });

    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop, pause) = (log.clone(), stop.clone(), pause.clone());
        let (config, home, work) = (s.config.clone(), s.dir.path().to_path_buf(), s.work.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                // Held for the whole command: the check never sees one half-recorded.
                let mut log = log.lock().unwrap();
                i += 1;
                log.attempts += 1;
                let ok = match i % 3 {
                    0 => {
                        let pair = format!("K{i}=v{i}");
                        let ok = cli(&config, &home, &work, &["-a", ENV_APP, "env", "set", &pair]);
                        if ok {
                            log.env.push(i);
                        }
                        ok
                    }
                    1 => {
                        let domain = format!("r{i}.durable.test");
                        let args = ["-a", ENV_APP, "route", "add", "http", &domain];
                        let ok = cli(&config, &home, &work, &args);
                        if ok {
                            log.routes.push(domain);
                        }
                        ok
                    }
                    _ => {
                        // Consecutive tries differ, so a lost one shows.
                        let n = (log.scales.len() as u32 % 9) + 1;
                        let web = format!("web={n}");
                        let args = ["-a", SCALE_APP, "scale", "--no-wait", &web];
                        let ok = cli(&config, &home, &work, &args);
                        log.scales.push((n, ok));
                        ok
                    }
                };
                if !ok {
                    log.failed += 1;
                }
            }
        })
    };

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill points seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut acked_before = 0;
    let mut rounds_with_writes = 0;
    for round in 1..=KILLS {
        // Up for 100-900 ms: a few writes, the kill lands anywhere in one.
        std::thread::sleep(Duration::from_millis(100 + rng.below(800)));
        s.restart();
        pause.store(true, Ordering::SeqCst);
        {
            let log = log.lock().unwrap();
            check(&s, scale_release, &log, round);
            if log.acknowledged() > acked_before {
                rounds_with_writes += 1;
            }
            acked_before = log.acknowledged();
        }
        pause.store(false, Ordering::SeqCst);
    }
    // A last round of writes against the last server, then a final check.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread");
    let log = log.lock().unwrap();
    check(&s, scale_release, &log, KILLS);
    deployments_are_whole(&s);

    println!(
        "{} writes acknowledged ({} env set, {} route add, {} scale) of {} tried, {} failed; \
         {KILLS} kill -9s in {:.1}s",
        log.acknowledged(),
        log.env.len(),
        log.routes.len(),
        log.scales.iter().filter(|s| s.1).count(),
        log.attempts,
        log.failed,
        started.elapsed().as_secs_f64()
    );
    // The test means something only if writes were acknowledged between the kills and some
    // were cut by them.
    assert!(
        rounds_with_writes >= KILLS / 4,
        "writes were acknowledged before only {rounds_with_writes} of {KILLS} kills"
    );
    assert!(
        !log.env.is_empty() && !log.routes.is_empty() && log.scales.iter().any(|s| s.1),
        "every kind of write must have been acknowledged at least once"
    );
    assert!(log.failed > 0, "no write was ever cut by a kill");
}
