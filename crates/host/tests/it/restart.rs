//! `kill -9` the agent process while 5 jobs run, restart it: the jobs keep running, are adopted
//! with their logs, and a later exit is reported with its exit code. Drives the real
//! `slipway-host-agent daemon` over the HTTP host API.

use crate::harness::*;
use slipway_host::client::HttpHost;
use slipway_host::{HostApi, JobStatus};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn spawn_daemon(names: &Names, data_dir: &Path) -> (Child, HttpHost) {
    let mut child = Command::new(agent_exe())
        .arg("daemon")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--bridge", &names.net.bridge])
        .args([
            "--subnet",
            &names.net.cidr(),
            "--nft-table",
            &names.net.nft_table,
        ])
        .args(["--cgroup-parent", &names.cgroup_parent])
        .arg("--stacks-dir")
        .arg(stacks_dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting slipway-host-agent daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("daemon did not start: {line:?}"))
        .to_string();
    // The daemon made its cluster token in its data dir (it was given none).
    let token = std::fs::read_to_string(data_dir.join("cluster-token")).unwrap();
    (
        child,
        HttpHost::new(&format!("http://{addr}"), token.trim()),
    )
}

pub struct Cleanup(pub Names, pub std::path::PathBuf, pub Option<Child>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.2.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.0.destroy(&self.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_survive_agent_kill_9_and_are_adopted() {
    if skip_unless_root("jobs_survive_agent_kill_9_and_are_adopted") {
        return;
    }
    busybox();
    let dir = tempfile::Builder::new()
        .prefix("slipway-restart")
        .tempdir()
        .unwrap();
    let names = Names::new();
    let (child, api) = spawn_daemon(&names, dir.path());
    let mut guard = Cleanup(names.clone(), dir.path().to_path_buf(), Some(child));

    let mut ids = Vec::new();
    for i in 0..5 {
        let mut j = job(
            &format!("survivor{i}"),
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 7' USR1; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            ],
        );
        j.config.stop_grace_ms = Some(2000);
        let info = api.add_job(j).await.unwrap();
        assert_eq!(info.status, JobStatus::Running, "{info:?}");
        ids.push((info.job.id, info.pid.unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // kill -9 the agent.
    let mut child = guard.2.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(api.status().await.is_err(), "the agent is gone");
    let before: Vec<usize> = {
        let mut v = Vec::new();
        for (id, _) in &ids {
            v.push(slipway_host::logs::read_all(&dir.path().join("logs").join(id)).len());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ((id, pid), n) in ids.iter().zip(&before) {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "job {id} died with the agent"
        );
        let now = slipway_host::logs::read_all(&dir.path().join("logs").join(id)).len();
        assert!(
            now > *n,
            "logs of {id} stopped flowing while the agent was down"
        );
    }

    // Restart: all 5 adopted, still running, logs still flowing.
    let (child, api) = spawn_daemon(&names, dir.path());
    guard.2 = Some(child);
    let jobs = api.list_jobs().await.unwrap();
    assert_eq!(jobs.len(), 5);
    for j in &jobs {
        assert_eq!(j.status, JobStatus::Running, "{j:?}");
    }
    let (first, _) = &ids[0];
    let n1 = log_lines(&api, first).await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n2 = log_lines(&api, first).await.len();
    assert!(n2 > n1, "logs flow after re-adoption ({n1} -> {n2})");
    // Adopted, not started again: the same process (pid), and its counter went on from where
    // it was (a new process would print `tick 0` again).
    for (id, pid) in &ids {
        let j = api.get_job(id).await.unwrap();
        assert_eq!(
            j.pid,
            Some(*pid),
            "{id} is still the process it was before the kill"
        );
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{id}: {pid} is gone"
        );
        let ticks: Vec<u64> = log_lines(&api, id)
            .await
            .iter()
            .filter_map(|l| l.msg.strip_prefix("tick ")?.parse().ok())
            .collect();
        assert!(ticks.len() > 10, "{id}: {ticks:?}");
        assert!(
            ticks.iter().enumerate().all(|(i, t)| *t == i as u64),
            "{id}'s output counts on without starting over: {ticks:?}"
        );
    }

    // A later exit of an adopted job is reported with its exit code.
    api.signal_job(first, libc::SIGUSR1).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), api.wait_job(first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.exit.as_ref().unwrap().code, 7, "{done:?}");
    assert_eq!(done.status, JobStatus::Crashed);
    assert!(log_lines(&api, first).await.iter().any(|l| l.msg == "bye"));

    for (id, _) in &ids[1..] {
        api.stop_job(id).await.unwrap();
    }
    for (id, _) in &ids[1..] {
        let d = api.wait_job(id).await.unwrap();
        assert_eq!(d.status, JobStatus::Done, "{d:?}");
        // The init (tini) is PID 1 and forwards SIGTERM: the shell dies of it at once instead
        // of ignoring it as PID 1 and waiting for SIGKILL (137).
        assert_eq!(d.exit.unwrap().code, 143);
    }
    assert!(mounts_under(dir.path()).is_empty());
}

/// An agent restarted with another subnet (an overlay host whose /24 went to another host while
/// it was down): a job it finds running with an address outside it is stopped and reported,
/// not adopted (nobody can reach it; other hosts route its address to another host's jobs).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_left_outside_the_agents_new_subnet_is_stopped_not_adopted() {
    if skip_unless_root("a_job_left_outside_the_agents_new_subnet_is_stopped_not_adopted") {
        return;
    }
    busybox();
    let dir = tempfile::Builder::new()
        .prefix("slipway-resubnet")
        .tempdir()
        .unwrap();
    let names = Names::new();
    let (child, api) = spawn_daemon(&names, dir.path());
    let mut guard = Cleanup(names.clone(), dir.path().to_path_buf(), Some(child));
    let info = api
        .add_job(job(
            "stranded",
            &["sh", "-c", "while true; do sleep 0.1; done"],
        ))
        .await
        .unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let (id, pid) = (info.job.id.clone(), info.pid.unwrap());
    let mut child = guard.2.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let mut moved = names.clone();
    let o = moved.net.subnet.octets();
    moved.net.subnet = std::net::Ipv4Addr::new(o[0], o[1] ^ 0x40, o[2], 0);
    let (child, api) = spawn_daemon(&moved, dir.path());
    guard.2 = Some(child);
    let done = tokio::time::timeout(Duration::from_secs(10), api.wait_job(&id))
        .await
        .expect("the stranded job is stopped")
        .unwrap();
    assert!(done.status.is_terminal(), "{done:?}");
    let t0 = std::time::Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{pid} still runs"
    );
    // The bridge has the new subnet's gateway only: the old one's route would keep traffic to
    // the old /24 (another host's now) on this bridge.
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &names.net.bridge])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    let gw = format!("{}/24", moved.net.gateway());
    assert_eq!(addrs.matches(" inet ").count(), 1, "{addrs}");
    assert!(addrs.contains(&gw), "{addrs}");
}
