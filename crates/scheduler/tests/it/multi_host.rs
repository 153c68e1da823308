//! Placement, tags, lost hosts, blocked jobs, restarts and kills over three or more fake hosts.

use crate::harness::*;
use slipway_types::JobState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const NONE: &[(&str, &[(&str, &str)])] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_spreads_jobs_of_each_type_over_the_hosts() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["run"]), ("worker", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 6), ("worker", 3)], NONE)
        .await;
    let jobs = c
        .wait_jobs(&app, T, "9 up jobs", |j| up(j).len() == 9)
        .await;
    let web: Vec<_> = jobs
        .iter()
        .filter(|j| j.process_type.as_deref() == Some("web"))
        .cloned()
        .collect();
    let worker: Vec<_> = jobs
        .iter()
        .filter(|j| j.process_type.as_deref() == Some("worker"))
        .cloned()
        .collect();
    let h = |n| {
        vec![
            ("ha".to_string(), n),
            ("hb".to_string(), n),
            ("hc".to_string(), n),
        ]
    };
    assert_eq!(per_host(&web), h(2));
    assert_eq!(per_host(&worker), h(1));
    // Flynn's job id form: <host id>-<uuid>.
    assert!(jobs.iter().all(|j| {
        j.id.starts_with(&format!("{}-", j.host_id.as_ref().unwrap()))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_stops_the_newest_jobs() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 1)], NONE).await;
    let first = c.wait_jobs(&app, T, "1 up", |j| up(j).len() == 1).await[0]
        .id
        .clone();
    c.scale(&app, &rel, &[("web", 3)], NONE).await;
    c.wait_jobs(&app, T, "3 up", |j| up(j).len() == 3).await;
    c.scale(&app, &rel, &[("web", 1)], NONE).await;
    let jobs = c
        .wait_jobs(&app, T, "1 up, 2 down", |j| {
            up(j).len() == 1 && j.iter().filter(|j| j.state == JobState::Down).count() == 2
        })
        .await;
    assert_eq!(up(&jobs)[0].id, first, "the oldest job stays");
    c.scale(&app, &rel, &[("web", 0)], NONE).await;
    c.wait_jobs(&app, T, "all down", |j| {
        j.iter().all(|j| j.state == JobState::Down)
    })
    .await;
    let deadline = Instant::now() + T;
    while c.hosts.iter().map(|h| h.runtime.live()).sum::<usize>() > 0 {
        assert!(Instant::now() < deadline, "a job is left running on a host");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_pin_jobs_and_a_tag_change_re_pins_them() {
    let c = Cluster::new(
        &[
            ("ha", &[("disk", "hdd")]),
            ("hb", &[("disk", "ssd")]),
            ("hc", &[]),
        ],
        fast(),
    )
    .await;
    let (app, rel) = c.app(&[("db", &["run"])]).await;
    c.scale(&app, &rel, &[("db", 2)], &[("db", &[("disk", "ssd")])])
        .await;
    let jobs = c.wait_jobs(&app, T, "2 up", |j| up(j).len() == 2).await;
    assert_eq!(per_host(&jobs), vec![("hb".to_string(), 2)]);
    // The ssd moves from hb to hc: the jobs follow it.
    c.hosts[1].set_tags(&[("disk", "hdd")]);
    c.hosts[2].set_tags(&[("disk", "ssd")]);
    let on_hb_down = |j: &[slipway_types::Job]| {
        j.iter()
            .filter(|j| j.state == JobState::Down && j.host_id.as_deref() == Some("hb"))
            .count()
    };
    let jobs = c
        .wait_jobs(&app, T, "2 up on hc, hb's 2 down", |j| {
            per_host(j) == vec![("hc".to_string(), 2)] && on_hb_down(j) == 2
        })
        .await;
    // Between the two heartbeats no host may match: replacements are then blocked first and
    // placed on hc when its tag arrives (their blocked rows end as down, with no host).
    assert!(
        jobs.iter().all(
            |j| (j.state == JobState::Up && j.host_id.as_deref() == Some("hc"))
                || (j.state == JobState::Down && j.host_id.as_deref() != Some("hc"))
        ),
        "{:#?}",
        summary(&jobs)
    );
    // A formation can also name its host.
    c.scale(&app, &rel, &[("db", 1)], &[("db", &[("host", "ha")])])
        .await;
    c.wait_jobs(&app, T, "1 up on ha", |j| {
        per_host(j) == vec![("ha".to_string(), 1)]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_jobs_start_when_a_matching_host_appears() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("gpu", &["run"])]).await;
    c.scale(&app, &rel, &[("gpu", 2)], &[("gpu", &[("gpu", "yes")])])
        .await;
    let jobs = c
        .wait_jobs(&app, T, "2 blocked", |j| {
            j.iter().filter(|j| j.state == JobState::Blocked).count() == 2
        })
        .await;
    assert!(jobs.iter().all(|j| j.host_id.is_none()));
    assert_eq!(
        jobs[0].host_error.as_deref(),
        Some("no host matches the formation's tags: waiting for one")
    );
    let hd = TestHost::new("hd", &[("gpu", "yes")]).await;
    c.sched.add_host(hd.clone()).await.unwrap();
    let jobs = c
        .wait_jobs(&app, T, "2 up on hd", |j| {
            per_host(j) == vec![("hd".to_string(), 2)]
        })
        .await;
    assert_eq!(
        jobs.iter().filter(|j| j.state == JobState::Blocked).count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hosts_jobs_move_to_other_hosts_within_15s() {
    // Flynn's numbers: a check per second, lost after 10 failures.
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], Default::default()).await;
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 3)], NONE).await;
    c.wait_jobs(&app, T, "3 up", |j| up(j).len() == 3).await;
    let t0 = Instant::now();
    c.hosts[0].down.store(true, Ordering::SeqCst);
    let jobs = c
        .wait_jobs(&app, Duration::from_secs(15), "3 up on hb and hc", |j| {
            let p = per_host(j);
            up(j).len() == 3 && p.iter().all(|(h, _)| h != "ha")
        })
        .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "a host is lost after ~10 failed checks, not {took:?}"
    );
    let lost: Vec<_> = jobs
        .iter()
        .filter(|j| j.host_id.as_deref() == Some("ha"))
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].state, JobState::Down);
    assert_eq!(
        lost[0].host_error.as_deref(),
        Some("host ha was lost: it missed 10 health checks")
    );
    assert_eq!(c.sched.hosts().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_host_hands_its_jobs_over() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 3)], NONE).await;
    c.wait_jobs(&app, T, "3 up", |j| up(j).len() == 3).await;
    c.sched.drain_host("hb");
    let jobs = c
        .wait_jobs(&app, T, "none on hb", |j| {
            up(j).len() == 3
                && j.iter()
                    .all(|j| j.host_id.as_deref() != Some("hb") || j.state == JobState::Down)
        })
        .await;
    assert_eq!(per_host(&jobs).len(), 2);
    let deadline = Instant::now() + T;
    while c.hosts[1].runtime.live() > 0 {
        assert!(Instant::now() < deadline, "hb still runs jobs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_is_replaced_and_one_off_jobs_are_not_restarted() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 2)], NONE).await;
    let jobs = c.wait_jobs(&app, T, "2 up", |j| up(j).len() == 2).await;
    let victim = jobs[0].id.clone();
    c.sched.stop_job(app.id, &victim).await.unwrap();
    let jobs = c
        .wait_jobs(&app, T, "victim down, 2 up", |j| {
            up(j).len() == 2
                && j.iter()
                    .any(|x| x.id == victim && x.state == JobState::Down)
        })
        .await;
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter().all(|j| j.restarts == 0),
        "a kill is not a crash"
    );
    let err = c.sched.stop_job(app.id, &victim).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {victim} has already finished (down)")
    );
    assert_eq!(
        c.sched
            .stop_job(app.id, "nope")
            .await
            .unwrap_err()
            .to_string(),
        "job nope not found"
    );

    let one = c
        .sched
        .run_job(
            &app,
            &rel,
            &["exit".into(), "3".into()],
            &Default::default(),
        )
        .await
        .unwrap();
    let jobs = c
        .wait_jobs(&app, T, "one-off crashed", |j| {
            j.iter()
                .any(|x| x.id == one.id && x.state == JobState::Crashed)
        })
        .await;
    assert_eq!(
        jobs.iter().find(|j| j.id == one.id).unwrap().exit_status,
        Some(3)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = c.store.list_jobs(app.id).await.unwrap();
    assert_eq!(
        jobs.iter().filter(|j| j.process_type.is_none()).count(),
        1,
        "one-off jobs are never restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_job_restarts_at_once_five_times_then_after_10s() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["exit", "1"])]).await;
    c.scale(&app, &rel, &[("web", 1)], NONE).await;
    let jobs = c
        .wait_jobs(&app, T, "restart 5 crashed", |j| {
            j.iter()
                .any(|x| x.restarts == 5 && x.state == JobState::Crashed)
        })
        .await;
    let fifth = jobs
        .iter()
        .find(|x| x.restarts == 5)
        .unwrap()
        .updated_at
        .unix_millis();
    let mut counts: Vec<u32> = jobs.iter().map(|j| j.restarts).collect();
    counts.sort();
    assert_eq!(
        counts,
        [0, 1, 2, 3, 4, 5],
        "restart counts are visible per job"
    );
    // "At once": each of restarts 1-5 starts within a few hundred ms of the one before (a
    // backoff of even 1 s would take 1000 ms per step).
    let mut by_restart = jobs.clone();
    by_restart.sort_by_key(|j| j.restarts);
    let steps: Vec<i128> = by_restart
        .windows(2)
        .map(|w| w[1].created_at.unix_millis() - w[0].created_at.unix_millis())
        .collect();
    assert!(
        steps.iter().all(|ms| *ms < 500),
        "restarts 1-5 each start within 500 ms of the one before, took {steps:?} ms"
    );
    let jobs = c
        .wait_jobs(&app, Duration::from_secs(15), "restart 6", |j| {
            j.iter().any(|x| x.restarts == 6)
        })
        .await;
    let sixth = jobs
        .iter()
        .find(|x| x.restarts == 6)
        .unwrap()
        .created_at
        .unix_millis();
    let gap = sixth - fifth;
    assert!(
        (9_000..13_000).contains(&gap),
        "the 6th restart waits 10 s, waited {gap} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_jobs_no_host_reports_are_marked_down_at_start() {
    let c = Cluster::new(&[("ha", &[])], fast()).await;
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 1)], NONE).await;
    let live = c.wait_jobs(&app, T, "1 up", |j| up(j).len() == 1).await[0].clone();
    // A row left by an earlier scheduler for a job that is gone.
    let mut ghost = live.clone();
    ghost.id = "ha-ghost".into();
    c.store.put_job(&ghost).await.unwrap();
    assert_eq!(c.sched.mark_lost_rows().await.unwrap(), 1);
    let jobs = c.store.list_jobs(app.id).await.unwrap();
    let ghost = jobs.iter().find(|j| j.id == "ha-ghost").unwrap();
    assert_eq!(ghost.state, JobState::Down);
    assert!(
        ghost
            .host_error
            .as_deref()
            .unwrap()
            .starts_with("no host reports this job")
    );
    assert_eq!(
        jobs.iter().find(|j| j.id == live.id).unwrap().state,
        JobState::Up
    );
}

/// A build job (a one-off with a process type, `build`) found on a host by a scheduler that did
/// not start it — after a restart, or a follower that takes over — is tracked as a one-off with
/// its metadata: not stopped as a job no formation wants, not counted in a `build` formation
/// of the app's release. It used to be adopted as a formation job of type `build`, stopped by
/// the new scheduler's first round (a live build of another controller too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_build_job_stays_a_one_off_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    let store: std::sync::Arc<dyn slipway_store::Store> =
        std::sync::Arc::new(slipway_store::open(&url).await.unwrap());
    let host = TestHost::new("ha", &[]).await;
    // The scheduler that starts the build job, then "dies" (it never runs a round).
    let first = slipway_scheduler::Scheduler::new(store.clone(), fast());
    first.add_host(host.clone()).await.unwrap();
    let c = Cluster::from_parts(store.clone(), first.clone(), vec![host.clone()], dir);
    let (app, rel) = c.app(&[("web", &["run"]), ("build", &["run"])]).await;
    let job = slipway_host::HostJob {
        id: String::new(),
        app_id: String::new(),
        app_name: String::new(),
        release_id: String::new(),
        process_type: "build".into(),
        metadata: [("slipway.build".to_string(), "b1".to_string())].into(),
        config: slipway_host::JobConfig::new("busybox", &["run"]),
        resources: Default::default(),
    };
    let started = first.run_host_job(&app, Some(rel.id), job).await.unwrap();
    let deadline = Instant::now() + T;
    while host.runtime.live() == 0 {
        assert!(Instant::now() < deadline, "the build job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next scheduler adopts it from the host and runs its rounds.
    let second = slipway_scheduler::Scheduler::new(store.clone(), fast());
    second.add_host(host.clone()).await.unwrap();
    tokio::spawn(second.clone().run());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(host.runtime.live(), 1, "the adopted build job was stopped");
    let adopted = second
        .jobs()
        .into_iter()
        .find(|j| j.id == started.id)
        .expect("the second scheduler tracks the build job");
    assert_eq!(adopted.process_type.as_deref(), Some("build"));
    assert_eq!(
        adopted.meta.get("slipway.build").map(String::as_str),
        Some("b1")
    );
    assert!(adopted.meta.contains_key(slipway_scheduler::ONE_OFF_META));
    // A `build` formation of the same release gets a job of its own: the build is not one.
    c.scale(&app, &rel, &[("build", 1)], NONE).await;
    second.wake();
    let deadline = Instant::now() + T;
    while host.runtime.live() < 2 {
        assert!(
            Instant::now() < deadline,
            "the build formation counted the build job as its own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its starter (the builder) stops it; nothing replaces a one-off.
    second.stop_job(app.id, &started.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.runtime.live(), 1);
}
