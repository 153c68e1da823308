//! The jobs' bridge filter (`src/runc/filter.rs`) follows the jobs: a started job's port is
//! listed with its own MAC and IP, an isolated job's IP jumps to its app's group, a job that
//! fails after its netns was prepared leaves nothing, and nothing is left once the jobs are gone.

use crate::harness::*;
use slipway_host::runc::network::{mac_for, veth_name};
use slipway_host::{HostApi, JobStatus};
use std::time::{Duration, Instant};

fn table(name: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "bridge", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_bridge_filter_is_added_with_it_and_removed_with_it() {
    if skip_unless_root("a_jobs_bridge_filter_is_added_with_it_and_removed_with_it") {
        return;
    }
    let h = TestHost::start().await;
    let t = h.names.net.nft_table.clone();
    let flat = h
        .agent
        .add_job(job("flat", &["sleep", "1000"]))
        .await
        .unwrap();
    let mut j = job("iso", &["sleep", "1000"]);
    j.app_id = "isolated-app".into();
    j.config.isolated = true;
    let iso = h.agent.add_job(j).await.unwrap();
    assert_eq!(
        (flat.status, iso.status),
        (JobStatus::Running, JobStatus::Running)
    );
    let (fip, iip) = (flat.ip.unwrap(), iso.ip.unwrap());
    let listed = table(&t);
    for (id, ip) in [(&flat.job.id, fip), (&iso.job.id, iip)] {
        let v = veth_name(&h.names.net, id);
        assert!(
            listed.contains(&format!("\"{v}\" . {}", mac_for(ip)))
                && listed.contains(&format!("\"{v}\" . {ip}")),
            "{id}'s port with its MAC and IP:\n{listed}"
        );
    }
    let group = slipway_host::runc::filter::group_for("isolated-app");
    assert!(
        listed.contains(&format!("{iip} : jump {group}")) && !listed.contains(&format!("{fip} :")),
        "only the isolated job jumps to its group:\n{listed}"
    );

    // Fails after its netns (and filter) were prepared: the command is missing.
    let bad = job("bad", &["/no/such/command"]);
    let bad_veth = veth_name(&h.names.net, &bad.id);
    if let Ok(info) = h.agent.add_job(bad).await {
        assert_ne!(info.status, JobStatus::Running, "{info:?}");
    }

    for id in [&flat.job.id, &iso.job.id] {
        h.agent.stop_job(id).await.unwrap();
        h.agent.wait_job(id).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = table(&t);
    while (left.contains("elements") || left.contains(&group)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = table(&t);
    }
    assert!(
        !left.contains("elements") && !left.contains(&group) && !left.contains(&bad_veth),
        "left behind:\n{left}"
    );
    assert!(left.contains("chain prerouting"), "{left}");
}

/// Multicast packets the job's netns received (`IpExt: InMcastPkts`), read from the host.
fn multicast_in(net: &slipway_host::runc::network::NetworkConfig, job_id: &str) -> u64 {
    let ns = slipway_host::runc::network::netns_name(net, job_id);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "cat", "/proc/net/netstat"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = text.lines().filter(|l| l.starts_with("IpExt:"));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InMcastPkts")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Multicast (and broadcast) frames are flooded to every port of the bridge, past the
/// destination-IP check that guards an isolated app's jobs: a job of another app sending UDP to
/// 224.0.0.1 (all hosts, which every interface joins) reached the isolated app's jobs, e.g. a
/// UDP listener on `0.0.0.0`. The control: the same packets from a job of the isolated app
/// itself arrive.
#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_apps_jobs_get_no_multicast_from_another_app() {
    if skip_unless_root("an_isolated_apps_jobs_get_no_multicast_from_another_app") {
        return;
    }
    let h = TestHost::start().await;
    let mut target = job("iso", &["sleep", "1000"]);
    target.app_id = "isolated-app".into();
    target.config.isolated = true;
    let info = h.agent.add_job(target.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    // Sends DNS queries (UDP) to the all-hosts group; each waits a second for an answer.
    let send = async |name: &str, app: &str| {
        let mut j = job(
            name,
            &[
                "sh",
                "-c",
                "for i in 1 2 3; do timeout 1 nslookup x 224.0.0.1 >/dev/null 2>&1; done; true",
            ],
        );
        j.app_id = app.into();
        j.config.isolated = app == "isolated-app";
        let info = h.agent.add_job(j.clone()).await.unwrap();
        assert_eq!(info.status, JobStatus::Running, "{info:?}");
        h.agent.wait_job(&j.id).await.unwrap();
    };
    let before = multicast_in(&h.names.net, &target.id);
    send("other", "other-app").await;
    let from_other = multicast_in(&h.names.net, &target.id) - before;
    send("sibling", "isolated-app").await;
    let from_own = multicast_in(&h.names.net, &target.id) - before - from_other;
    assert!(from_own > 0, "the control: the app's own multicast arrives");
    assert_eq!(
        from_other, 0,
        "another app's multicast reached the isolated app's job"
    );
}
