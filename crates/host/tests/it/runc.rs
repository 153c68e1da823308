//! Jobs on real runc: HTTP on the job's own IP, env, limits, OOM, stop/grace, health checks.

use crate::harness::*;
use futures_util::StreamExt;
use slipway_host::{EventKind, HealthCheck, HostApi, JobStatus, PortSpec, Resources};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn busybox_httpd_answers_on_its_own_ip_with_the_env_asked() {
    if skip_unless_root("busybox_httpd_answers_on_its_own_ip_with_the_env_asked") {
        return;
    }
    let h = TestHost::start().await;
    let mut events = h.agent.events().await.unwrap();
    let mut j = job(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && env > /tmp/www/env.txt && exec httpd -f -p $PORT -h /tmp/www",
        ],
    );
    j.config.env.insert("GREETING".into(), "hello world".into());
    j.config.stop_grace_ms = Some(300);
    j.config.ports.push(PortSpec {
        port: 5000,
        proto: "tcp".into(),
        check: Some(HealthCheck {
            status: Some(404),
            ..HealthCheck::http("/missing")
        }),
    });
    let info = h.agent.add_job(j.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let ip = info.ip.expect("job has its own IP");
    assert!(
        h.names.net.contains(ip),
        "{ip} outside {}",
        h.names.net.cidr()
    );
    let (code, body) = http_get((ip, 5000).into(), "/env.txt", Duration::from_secs(10)).await;
    assert_eq!(code, 200, "{body}");
    for want in [
        "PORT=5000",
        "GREETING=hello world",
        "SLIPWAY_APP_NAME=testapp",
        "SLIPWAY_APP_ID=app-1",
        "SLIPWAY_RELEASE_ID=rel-1",
        "SLIPWAY_PROCESS_TYPE=web",
        &format!("SLIPWAY_JOB_ID={}", j.id),
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(
            body.lines().any(|l| l == want),
            "{want:?} not in env:\n{body}"
        );
    }
    // The MAC is derived from the IP.
    let mac = std::fs::read_to_string(format!(
        "/proc/{}/root/sys/class/net/eth0/address",
        info.pid.unwrap()
    ))
    .unwrap_or_default();
    assert_eq!(mac.trim(), slipway_host::runc::network::mac_for(ip));
    // The health check (expects 404 on /missing) passes: the job is up, and that is an event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut kinds = Vec::new();
    while !kinds.contains(&EventKind::Up) {
        let e = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("no up event")
            .unwrap();
        kinds.push(e.kind);
    }
    assert_eq!(kinds[..2], [EventKind::Create, EventKind::Start]);
    assert!(h.agent.get_job(&j.id).await.unwrap().up);
    h.agent.stop_job(&j.id).await.unwrap();
    let done = h.agent.wait_job(&j.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_read_back_inside_the_job() {
    if skip_unless_root("limits_read_back_inside_the_job") {
        return;
    }
    let h = TestHost::start().await;
    let mut j = job(
        "limits",
        &[
            "sh",
            "-c",
            "echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
             echo shares=$(cat /sys/fs/cgroup/cpu,cpuacct/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.shares); \
             echo pids=$(cat /sys/fs/cgroup/pids/pids.max); echo nofile=$(ulimit -n); \
             echo uid=$(id -u); echo caps=$(grep CapBnd /proc/self/status); \
             echo nnp=$(grep NoNewPrivs /proc/self/status); \
             echo tmp=$(grep -c ' /tmp tmpfs ' /proc/mounts) shm=$(grep -c ' /dev/shm tmpfs ' /proc/mounts); \
             echo timer_list=$(wc -c < /proc/timer_list); echo devs=$(ls /dev | sort | tr '\\n' ' '); \
             (mknod /tmp/sda b 8 0 && head -c1 /tmp/sda >/dev/null 2>&1 && echo disk=readable) || echo disk=denied",
        ],
    );
    j.resources = Resources {
        memory_bytes: Some(300 << 20),
        cpu_milli: Some(500),
        max_fd: Some(4096),
        max_procs: Some(123),
        ..Default::default()
    };
    h.agent.add_job(j.clone()).await.unwrap();
    let done = h.agent.wait_job(&j.id).await.unwrap();
    assert_eq!(done.exit.as_ref().unwrap().code, 0, "{done:?}");
    let out: Vec<String> = log_lines(&h.agent, &j.id)
        .await
        .into_iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.msg)
        .collect();
    for want in [
        format!("mem={}", 300u64 << 20),
        "shares=512".into(),
        "pids=123".into(),
        "nofile=4096".into(),
        // A job on a stack runs unprivileged unless it names a user.
        "uid=1000".into(),
        // Docker's default capabilities less NET_RAW, MKNOD, AUDIT_WRITE, SETFCAP.
        "caps=CapBnd: 00000000000405fb".into(),
        "nnp=NoNewPrivs: 1".into(),
        "tmp=1 shm=1".into(),
        // Masked by runc's default masked paths.
        "timer_list=0".into(),
        // Only the standard devices; no node of another can be made (no CAP_MKNOD) or read.
        "devs=fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero".into(),
        "disk=denied".into(),
    ] {
        assert!(out.contains(&want), "{want:?} not in {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_fd_above_the_host_limit_is_clamped_with_a_warning() {
    if skip_unless_root("max_fd_above_the_host_limit_is_clamped_with_a_warning") {
        return;
    }
    let h = TestHost::start().await;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let mut j = job("nofile", &["sh", "-c", "echo nofile=$(ulimit -n)"]);
    j.resources.max_fd = Some(u32::MAX as u64);
    h.agent.add_job(j.clone()).await.unwrap();
    let done = h.agent.wait_job(&j.id).await.unwrap();
    assert_eq!(done.exit.unwrap().code, 0);
    let logs = log_lines(&h.agent, &j.id).await;
    let want = format!("nofile={}", lim.rlim_max);
    assert!(logs.iter().any(|l| l.msg == want), "{want} not in {logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.stream == "init" && l.msg.contains("above the host's hard limit")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_memory_limit_is_reported_oom_killed() {
    if skip_unless_root("a_job_past_its_memory_limit_is_reported_oom_killed") {
        return;
    }
    let h = TestHost::start().await;
    let mut j = job(
        "oom",
        &["sh", "-c", "x=0123456789; while true; do x=$x$x; done"],
    );
    j.resources.memory_bytes = Some(32 << 20);
    h.agent.add_job(j.clone()).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), h.agent.wait_job(&j.id))
        .await
        .unwrap()
        .unwrap();
    let exit = done.exit.clone().unwrap();
    assert!(exit.oom_killed, "{done:?}");
    assert_eq!(exit.code, 137);
    assert_eq!(done.status, JobStatus::Crashed);
    assert_eq!(
        done.error.as_deref(),
        Some("exit 137: killed, out of memory (limit 32 MiB)")
    );
    let logs = log_lines(&h.agent, &j.id).await;
    assert!(
        logs.iter()
            .any(|l| l.stream == "init" && l.msg.contains("out of memory")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_seen_by_a_trap_and_ignorers_are_killed_after_the_grace() {
    if skip_unless_root("sigterm_is_seen_by_a_trap_and_ignorers_are_killed_after_the_grace") {
        return;
    }
    let h = TestHost::start().await;
    // A job that ignores SIGTERM must get SIGKILL after the grace period.
    let mut ignorer = job(
        "ignore",
        &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
    );
    ignorer.config.stop_grace_ms = Some(1500);
    // A plain command has no handler, but it is not PID 1 (the init is), so SIGTERM's default
    // action ends it at once (before the init, `sleep` as PID 1 ignored it for the whole grace).
    let mut plain = job("plain", &["sleep", "1000"]);
    plain.config.stop_grace_ms = Some(20_000);
    h.agent.add_job(plain.clone()).await.unwrap();
    let mut trapper = job(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo got SIGTERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    trapper.config.stop_grace_ms = Some(20_000);
    h.agent.add_job(ignorer.clone()).await.unwrap();
    h.agent.add_job(trapper.clone()).await.unwrap();
    let a = h.agent.clone();
    let tid = trapper.id.clone();
    let mut ready = false;
    for _ in 0..100 {
        ready = log_lines(&a, &tid).await.iter().any(|l| l.msg == "ready");
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    let t0 = Instant::now();
    h.agent.stop_job(&ignorer.id).await.unwrap();
    h.agent.stop_job(&trapper.id).await.unwrap();
    let t = h.agent.wait_job(&trapper.id).await.unwrap();
    let trap_time = t0.elapsed();
    let i = h.agent.wait_job(&ignorer.id).await.unwrap();
    let ignore_time = t0.elapsed();
    assert_eq!(t.exit.as_ref().unwrap().code, 3, "{t:?}");
    assert!(trap_time < Duration::from_secs(5), "{trap_time:?}");
    assert!(
        log_lines(&h.agent, &trapper.id)
            .await
            .iter()
            .any(|l| l.msg == "got SIGTERM")
    );
    let ie = i.exit.unwrap();
    assert_eq!((ie.code, ie.signal), (137, Some(9)));
    let t0 = Instant::now();
    h.agent.stop_job(&plain.id).await.unwrap();
    let p = h.agent.wait_job(&plain.id).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(
        p.exit.unwrap().code,
        143,
        "128 + SIGTERM, reported by the init"
    );
    assert_eq!(p.status, slipway_host::JobStatus::Done);
    assert!(
        ignore_time >= Duration::from_millis(1400),
        "{ignore_time:?}"
    );
    assert!(ignore_time < Duration::from_secs(10), "{ignore_time:?}");
    assert_eq!(i.status, JobStatus::Done, "a requested stop is not a crash");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_health_check_that_never_passes_kills_the_job_with_kill_down() {
    if skip_unless_root("a_health_check_that_never_passes_kills_the_job_with_kill_down") {
        return;
    }
    let h = TestHost::start().await;
    let mut events = h.agent.events().await.unwrap();
    let mut j = job("unhealthy", &["sleep", "1000"]);
    j.config.ports.push(PortSpec {
        port: 8080,
        proto: "tcp".into(),
        check: Some(HealthCheck {
            start_timeout_ms: 1000,
            kill_down: true,
            ..HealthCheck::tcp()
        }),
    });
    let t0 = Instant::now();
    h.agent.add_job(j.clone()).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), h.agent.wait_job(&j.id))
        .await
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(done.status, JobStatus::Crashed, "{done:?}");
    assert_eq!(done.exit.as_ref().unwrap().signal, Some(9));
    assert!(!done.up);
    let err = done.error.unwrap();
    assert!(
        err.contains("did not pass within") && err.contains("kill_down"),
        "{err}"
    );
    let mut kinds = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        kinds.push(e.kind);
    }
    assert!(kinds.contains(&EventKind::Down), "{kinds:?}");
    assert!(!kinds.contains(&EventKind::Up), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_errors_are_reported_and_leave_nothing_behind() {
    if skip_unless_root("start_errors_are_reported_and_leave_nothing_behind") {
        return;
    }
    let h = TestHost::start().await;
    let j = job("missing", &["/no/such/binary"]);
    let info = h.agent.add_job(j.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Failed);
    let err = info.error.unwrap();
    assert!(
        err.contains("could not start") && err.contains("/no/such/binary"),
        "{err}"
    );
    let mut nostack = job("nostack", &["true"]);
    nostack.config.stack = "nope".into();
    let info = h.agent.add_job(nostack).await.unwrap();
    assert!(
        info.error
            .unwrap()
            .contains("slipway host stack build nope")
    );
    assert!(mounts_under(h.data_dir()).is_empty());
    assert!(
        h.names.job_cgroups().is_empty(),
        "{:?}",
        h.names.job_cgroups()
    );
    let left: Vec<_> = std::fs::read_dir(h.data_dir().join("containers"))
        .unwrap()
        .collect();
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_until_exit_and_host_network_jobs_use_the_host_ip() {
    if skip_unless_root("logs_follow_until_exit_and_host_network_jobs_use_the_host_ip") {
        return;
    }
    let h = TestHost::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = job(
        "hostnet",
        &[
            "sh",
            "-c",
            "echo hostnet > /tmp/index.html; exec httpd -f -p 127.0.0.1:$PORT -h /tmp",
        ],
    );
    web.config.host_network = true;
    web.config.stop_grace_ms = Some(200);
    web.config.ports.push(PortSpec {
        port,
        proto: "tcp".into(),
        check: None,
    });
    let info = h.agent.add_job(web.clone()).await.unwrap();
    assert_eq!(info.ip, None, "host network jobs get no own IP");
    let (code, body) = http_get(([127, 0, 0, 1], port).into(), "/", Duration::from_secs(10)).await;
    assert_eq!((code, body.trim()), (200, "hostnet"));
    h.agent.stop_job(&web.id).await.unwrap();

    // Follow: every line, in order, with stream names, and the stream ends when the job exits.
    let long = "x".repeat(25_000);
    let printer = job(
        "printer",
        &[
            "sh",
            "-c",
            &format!(
                "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo oops >&2; echo {long}"
            ),
        ],
    );
    h.agent.add_job(printer.clone()).await.unwrap();
    let lines: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        h.agent
            .logs(&printer.id, true)
            .await
            .unwrap()
            .collect::<Vec<_>>(),
    )
    .await
    .expect("follow ends when the job exits");
    // Order holds within a stream (across streams it depends on when each pipe is read).
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.msg.as_str())
        .collect();
    let err: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == "stderr")
        .map(|l| l.msg.as_str())
        .collect();
    assert_eq!(out[..3], ["line 1", "line 2", "line 3"]);
    assert_eq!(err, ["oops"]);
    // 25,000 bytes come as lines of at most 10,000.
    let lens: Vec<usize> = out[3..].iter().map(|m| m.len()).collect();
    assert_eq!(lens, [10_000, 10_000, 5_000]);
    assert!(lines.windows(2).all(|w| w[0].ts <= w[1].ts));
    h.agent.wait_job(&web.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_runc_is_one_clear_startup_error() {
    if skip_unless_root("a_missing_runc_is_one_clear_startup_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new();
    let mut rc = names.runc_config(dir.path());
    rc.runc = "/nonexistent/runc".into();
    let err = match slipway_host::runc::RuncRuntime::new(rc) {
        Ok(_) => panic!("started without runc"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("runc was not found") && err.contains("apt-get install runc"),
        "{err}"
    );
    names.destroy(dir.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn netns_plumbing_over_netlink_matches_what_ip_would_do() {
    if skip_unless_root("netns_plumbing_over_netlink_matches_what_ip_would_do") {
        return;
    }
    use slipway_host::runc::{netlink, network};
    let h = TestHost::start().await; // owns the bridge
    let net = &h.names.net;
    let id = format!("nl-{}", std::process::id());
    let ip = std::net::Ipv4Addr::from(u32::from(net.subnet) + 77);
    let path = network::netns_path(net, &id);
    netlink::create(&netlink::NetnsSpec {
        netns_path: &path,
        bridge: &net.bridge,
        veth: &network::veth_name(net, &id),
        mac: &network::mac_for(ip),
        ip,
        prefix: net.prefix,
        gateway: net.gateway(),
        mtu: None,
    })
    .expect("netlink plumbing");
    let ns = network::netns_name(net, &id);
    let show = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let addr = show(&["-n", &ns, "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{ip}/{}", net.prefix)), "{addr}");
    let link = show(&["-n", &ns, "link", "show", "eth0"]);
    assert!(
        link.contains(&network::mac_for(ip)) && link.contains("UP"),
        "{link}"
    );
    let route = show(&["-n", &ns, "route"]);
    assert!(
        route.contains(&format!("default via {}", net.gateway())),
        "{route}"
    );
    let veth = show(&["link", "show", &network::veth_name(net, &id)]);
    assert!(veth.contains(&format!("master {}", net.bridge)), "{veth}");
    // The gateway (the bridge) answers from inside the netns.
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "ping", "-c1", "-W2"])
        .arg(net.gateway().to_string())
        .output();
    if let Ok(p) = ping
        && !String::from_utf8_lossy(&p.stderr).contains("No such file")
    {
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stdout));
    }
    network::remove_netns(&id);
    assert!(!path.exists());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(show(&["link", "show", &network::veth_name(net, &id)]).is_empty());
}
