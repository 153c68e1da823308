//! `--roles`: the router runs as a process of its own. One `slipway server --roles
//! controller,scheduler,host,discovery` runs the app; a second, `--roles router`, follows the
//! first one's routes (the controller's API and event stream) and backends (discovery's HTTP
//! API) and serves the app. Splits that cannot work yet are refused before anything starts.

use crate::support::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `slipway server --roles router` process, killed on drop; its log in `dir/router.log`.
struct RouterProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl RouterProcess {
    fn start(dir: &Path, controller: &str, discovery: &str, key: &str) -> RouterProcess {
        let log = dir.join("router.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "router", "--no-register"])
            .args(["--controller-url", controller])
            .args(["--discovery-url", discovery])
            .arg("--data-dir")
            .arg(dir.join("router-data"))
            .args(loopback_router(&["--router-admin", "127.0.0.1:0"]))
            // The key from the environment, as a service manager would give it.
            .env("SLIPWAY_API_KEY", key)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the router process");
        RouterProcess { child, log }
    }

    /// The router's HTTP address, from its log.
    fn http_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let marker = "router: HTTP on ";
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = log.split(marker).nth(1) {
                return rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
            }
            assert!(Instant::now() < deadline, "no {marker:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /` with `Host: host` on a new connection: the status line and the body.
fn get(addr: &str, host: &str) -> (String, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return ("no connection".into(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.trim().to_string())
}

/// Repeats `GET` until `want(status, body)` holds (20 s at most); returns the last answer.
fn until(
    router: &RouterProcess,
    addr: &str,
    host: &str,
    what: &str,
    want: impl Fn(&str, &str) -> bool,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, host);
        if want(&status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "{host}: expected {what}, got {status:?} {body:?}; the router's log:\n{}",
            router.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_router_process_serves_what_another_process_deploys_and_follows_its_changes() {
    if skip_unless_root("a_router_process_serves_what_another_process_deploys") {
        return;
    }
    let n = 3200 + std::process::id() % 100;
    let hs = HostServer::start(
        n,
        &[
            "--roles".to_string(),
            "controller,scheduler,host,discovery".to_string(),
            "--discovery-listen".to_string(),
            "127.0.0.1:0".to_string(),
        ],
    );
    let s = &hs.s;
    let discovery = logged_addr(s, "discovery API on http://");
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(
        !log.contains("router: HTTP on"),
        "the first process runs no router:\n{log}"
    );
    let router = RouterProcess::start(
        s.dir.path(),
        &s.url,
        &format!("http://{discovery}"),
        &s.key(),
    );
    let addr = router.http_addr();

    // Deployed through the first process, after the router started: the route arrives as an
    // event, the backend through discovery.
    s.create_app("rt");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo $SLIPWAY_RELEASE_ID > /tmp/www/index.html && \
                     exec httpd -f -p 8080 -h /tmp/www"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release("rt", &r).await.unwrap();
        c.set_app_release("rt", r.id).await.unwrap();
        r.id.to_string()
    });
    s.ok(&["-a", "rt", "scale", "web=1"]);
    let default_host = format!("rt.{DOMAIN}");
    until(
        &router,
        &addr,
        &default_host,
        "the first release",
        |st, b| st.starts_with("HTTP/1.1 200") && b == first,
    );

    // A new route reaches the app; a removed one no longer does.
    s.ok(&["-a", "rt", "route", "add", "http", "other.example.test"]);
    until(
        &router,
        &addr,
        "other.example.test",
        "the new route",
        |st, b| st.starts_with("HTTP/1.1 200") && b == first,
    );
    let routes = s.json(&["-a", "rt", "route", "--json"]);
    let default = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == default_host.as_str())
        .unwrap_or_else(|| panic!("no default route in {routes}"));
    let id = default["id"].as_str().unwrap().to_string();
    s.ok(&["-a", "rt", "route", "remove", &format!("http/{id}")]);
    until(&router, &addr, &default_host, "no route", |st, _| {
        st.starts_with("HTTP/1.1 404")
    });

    // A deploy and a scale change the backends: the router follows discovery.
    let out = s.ok(&["-a", "rt", "env", "set", "V=2"]);
    let second = created_release(out.lines().last().unwrap_or_default());
    assert_ne!(second, first);
    s.ok(&["-a", "rt", "scale", "web=2"]);
    until(
        &router,
        &addr,
        "other.example.test",
        "the second release",
        |st, b| st.starts_with("HTTP/1.1 200") && b == second,
    );
    s.ok(&["-a", "rt", "scale", "web=0"]);
    let (status, _) = until(
        &router,
        &addr,
        "other.example.test",
        "no backend",
        |st, _| !st.starts_with("HTTP/1.1 200"),
    );
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
}

/// `slipway server` with `args`: it must fail at once, before it creates its data dir.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started = Instant::now();
    let err = fails(
        assert_cmd::Command::new(BIN)
            .arg("server")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("HOME", dir.path())
            .env_remove("SLIPWAY_API_KEY")
            .env_remove("SLIPWAY_ROLES")
            .timeout(Duration::from_secs(30)),
    );
    assert!(
        !data.exists(),
        "{args:?} created the data dir before refusing"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
    err
}

#[test]
fn splits_that_cannot_work_yet_are_refused_before_anything_starts() {
    let cases: &[(&[&str], &str)] = &[
        (&["--roles", "host,discovery"], "add `scheduler`"),
        (&["--roles", "controller,scheduler,host"], "add `discovery`"),
        (&["--roles", "scheduler"], "name both or neither"),
        (&["--roles", "logs"], "add `controller`"),
        (
            &["--roles", "controller,scheduler,builder"],
            "add `blobstore`",
        ),
        (&["--roles", "router"], "--controller-url"),
        (
            &[
                "--roles",
                "router",
                "--controller-url",
                "http://127.0.0.1:1",
                "--discovery-url",
                "http://127.0.0.1:1",
            ],
            "--api-key-file",
        ),
    ];
    for (args, fix) in cases {
        let err = refused(args);
        assert!(err.contains("--roles "), "{args:?}: {err}");
        assert!(err.contains(fix), "{args:?}: expected {fix:?} in: {err}");
    }
    // The key itself is never a flag: a command line is readable by every user (`ps`).
    let out = std::process::Command::new(BIN)
        .args(["server", "--roles", "router", "--api-key", "secret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unexpected argument '--api-key'"), "{err}");
    let err = refused(&["--roles", "controller,routr"]);
    assert!(err.contains("unknown role \"routr\""), "{err}");
}
