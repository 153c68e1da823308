//! What a job may do to the host, read from inside real jobs: its user, capabilities, seccomp
//! filter and pids limits (see docs/security.md, "Containers").

use crate::harness::*;
use slipway_host::{HostApi, JobStatus, Resources};

async fn stdout_of(h: &TestHost, j: slipway_host::HostJob) -> (Vec<String>, Vec<String>) {
    let info = h.agent.add_job(j.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let done = h.agent.wait_job(&j.id).await.unwrap();
    let lines = log_lines(&h.agent, &j.id).await;
    let pick = |s: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.stream == s)
            .map(|l| l.msg.clone())
            .collect()
    };
    assert_eq!(done.exit.as_ref().unwrap().code, 0, "{done:?} {lines:?}");
    (pick("stdout"), pick("init"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_job_keeps_few_capabilities_and_cannot_make_namespaces() {
    if skip_unless_root("a_root_job_keeps_few_capabilities_and_cannot_make_namespaces") {
        return;
    }
    let h = TestHost::start().await;
    let mut j = job(
        "root",
        &[
            "sh",
            "-c",
            "grep -E '^(Uid|Seccomp|CapEff|CapBnd):' /proc/self/status; \
             unshare -r true 2>/dev/null || echo unshare=denied; \
             unshare -n true 2>/dev/null || echo unshare-net=denied; \
             mount -t tmpfs none /mnt 2>/dev/null || echo mount=denied; \
             arping -c1 -w1 -I eth0 10.0.0.1 2>&1 | grep -q 'Operation not permitted' && echo packet=denied; \
             sh -c 'echo forked'",
        ],
    );
    j.config.uid = Some(0);
    let (out, _) = stdout_of(&h, j).await;
    for want in [
        "Uid:\t0\t0\t0\t0",
        "Seccomp:\t2",
        // Chown, DacOverride, Fowner, Fsetid, Kill, Setgid, Setuid, Setpcap, NetBindService,
        // SysChroot.
        "CapEff:\t00000000000405fb",
        "CapBnd:\t00000000000405fb",
        "unshare=denied",
        "unshare-net=denied",
        "mount=denied",
        "packet=denied",
        // clone3 says ENOSYS, and the fallback to clone works.
        "forked",
    ] {
        assert!(out.iter().any(|l| l == want), "{want:?} not in {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_caps_all_jobs_pids_and_clamps_a_job_above_it() {
    if skip_unless_root("the_agent_caps_all_jobs_pids_and_clamps_a_job_above_it") {
        return;
    }
    let h = TestHost::start().await;
    let parent = format!("/sys/fs/cgroup/pids/{}/pids.max", h.names.cgroup_parent);
    let cap = std::fs::read_to_string(&parent).unwrap();
    assert_eq!(
        cap.trim(),
        slipway_host::runc::default_jobs_max_procs().to_string()
    );
    // Removed under the agent: the next job puts it back, capped.
    let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/pids/{}", h.names.cgroup_parent));
    let mut j = job(
        "pids",
        &["sh", "-c", "echo pids=$(cat /sys/fs/cgroup/pids/pids.max)"],
    );
    j.resources = Resources {
        max_procs: Some(10_000_000),
        ..Default::default()
    };
    let (out, init) = stdout_of(&h, j).await;
    let cap = slipway_host::runc::default_jobs_max_procs();
    assert_eq!(out, [format!("pids={cap}")]);
    assert!(
        init.iter().any(|l| l.contains(&format!(
            "max_procs 10000000 is above this host's limit for all jobs together ({cap})"
        ))),
        "{init:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&parent).unwrap().trim(),
        cap.to_string()
    );
    // The default for a job that sets nothing.
    let (out, _) = stdout_of(
        &h,
        job("pids2", &["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max"]),
    )
    .await;
    assert_eq!(out, ["512"]);
}
