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
        let v = veth_name(id);
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
    let bad_veth = veth_name(&bad.id);
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
