//! Several controllers, one cluster: the API key and the cluster token live in the store, so
//! every controller on one PostgreSQL answers the same ones; a key from a data dir of before is
//! imported; a process presenting a wrong cluster token to discovery stops at start, saying so.

use crate::support::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Flags for a controller without host or router, its discovery on a free port.
fn controller_flags(database_url: Option<&str>) -> Vec<String> {
    let mut flags: Vec<String> = ["--no-host", "--no-router", "--no-register"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    flags.extend(["--discovery-listen".into(), "127.0.0.1:0".into()]);
    if let Some(url) = database_url {
        flags.extend(["--database-url".into(), url.to_string()]);
    }
    flags
}

fn data_file(s: &TestServer, name: &str) -> String {
    std::fs::read_to_string(s.dir.path().join("data").join(name))
        .unwrap_or_else(|e| panic!("{name} in the data dir: {e}"))
        .trim()
        .to_string()
}

/// `GET /apps` with `key`: 200, or the error's status code.
fn status(s: &TestServer, key: &str) -> u16 {
    block_on(async {
        let client = slipway_client::Client::new(&s.url, key).unwrap();
        match client.apps().await {
            Ok(_) => 200,
            Err(slipway_client::ClientError::Api { status, .. }) => status,
            Err(e) => panic!("{e}"),
        }
    })
}

#[test]
fn two_controllers_on_one_postgres_share_key_token_and_events() {
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let a = TestServer::start_with(&controller_flags(Some(&db.url)));
    let b = TestServer::start_with(&controller_flags(Some(&db.url)));
    let (key_a, key_b) = (data_file(&a, "api-key"), data_file(&b, "api-key"));
    assert_eq!(key_a, key_b, "two controllers on one database, two keys");
    assert_eq!(key_a.len(), 64);
    assert_eq!(
        data_file(&a, "cluster-token"),
        data_file(&b, "cluster-token")
    );
    assert_eq!(data_file(&a, "cluster-token").len(), 64);
    assert_ne!(data_file(&a, "cluster-token"), key_a);
    // An event stream on B sees an app created through A (LISTEN/NOTIFY between the two
    // processes; their streams no longer poll on PostgreSQL).
    block_on(async {
        use slipway_client::StreamExt;
        let on_b = slipway_client::Client::new(&b.url, &key_a).unwrap();
        let filter = slipway_types::EventFilter {
            object_types: vec![slipway_types::ObjectType::App],
            ..Default::default()
        };
        let mut events = Box::pin(on_b.events_stream(&filter, None).await.unwrap());
        let on_a = slipway_client::Client::new(&a.url, &key_a).unwrap();
        let new = slipway_types::NewApp {
            name: Some("made-on-a".into()),
            ..Default::default()
        };
        let app = on_a.create_app(&new).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("no event on B within 10 s")
            .expect("the stream ended")
            .unwrap();
        assert_eq!(event.object_id, app.id.to_string());
    });
    for s in [&a, &b] {
        assert_eq!(status(s, &key_a), 200);
        assert_eq!(status(s, "wrong"), 401);
        use std::os::unix::fs::PermissionsExt;
        for f in ["api-key", "cluster-token"] {
            let meta = std::fs::metadata(s.dir.path().join("data").join(f)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
}

/// A token given to the first controller (hosts provisioned before the cluster) becomes the
/// cluster's; a later controller given another one keeps the store's.
#[test]
fn a_cluster_token_given_at_creation_is_the_clusters() {
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "provisioned-token\n").unwrap();
    let mut flags = controller_flags(Some(&db.url));
    flags.extend([
        "--cluster-token-file".into(),
        token_file.display().to_string(),
    ]);
    let a = TestServer::start_with(&flags);
    assert_eq!(data_file(&a, "cluster-token"), "provisioned-token");
    std::fs::write(&token_file, "another-token\n").unwrap();
    let b = TestServer::start_with(&flags);
    assert_eq!(data_file(&b, "cluster-token"), "provisioned-token");
}

#[test]
fn a_key_from_the_old_data_dir_file_survives_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let old = "an-old-key-from-before-the-store-had-one";
    std::fs::write(data.join("api-key"), format!("{old}\n")).unwrap();
    let mut s = TestServer::start_in(dir, &controller_flags(None));
    assert_eq!(status(&s, old), 200);
    // Imported into the store: gone from the data dir, it comes back from the store.
    std::fs::remove_file(s.dir.path().join("data/api-key")).unwrap();
    s.restart();
    assert_eq!(status(&s, old), 200);
    assert_eq!(data_file(&s, "api-key"), old);
}

#[test]
fn a_process_with_a_wrong_cluster_token_stops_at_start_saying_so() {
    let s = TestServer::start_with(&controller_flags(None));
    let discovery = logged_addr(&s, "discovery API on http://");
    let start = |token: &str| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("router.log");
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "router", "--no-register"])
            .args(["--controller-url", &s.url])
            .args(["--discovery-url", &format!("http://{discovery}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(loopback_router(&["--router-admin", "127.0.0.1:0"]))
            .env("SLIPWAY_API_KEY", s.key_from_data_dir())
            .env("SLIPWAY_CLUSTER_TOKEN", token)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log, dir)
    };
    let (mut child, log, _dir) = start("not-the-cluster-token");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running with a wrong token:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!exit.success());
    assert!(
        err.contains("--discovery-url") && err.contains("cluster token"),
        "{err}"
    );

    // With the controller's token it starts and serves.
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster-token")).unwrap();
    let (mut child, log, _dir) = start(token.trim());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("router: HTTP on") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "exited:\n{text}");
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `git_url` (and so `slipway info`) names `--advertise`: an IP with the listening port, or
/// a URL as given.
#[test]
fn git_url_names_the_advertised_address() {
    let info = |s: &TestServer| {
        block_on(async {
            slipway_client::Client::new(&s.url, &s.key_from_data_dir())
                .unwrap()
                .cluster_info()
                .await
                .unwrap()
        })
    };
    // Registered in the CLI's config (no --no-register), for `slipway info`.
    let flags: Vec<String> = [
        "--no-host",
        "--no-router",
        "--discovery-listen",
        "127.0.0.1:0",
        "--advertise",
        "203.0.113.7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let s = TestServer::start_with(&flags);
    let port = s.url.rsplit(':').next().unwrap().to_string();
    assert_eq!(info(&s).git_url, format!("http://203.0.113.7:{port}"));
    s.create_app("adv");
    let out = s.ok(&["info", "-a", "adv"]);
    assert!(
        out.contains(&format!("Git URL: http://203.0.113.7:{port}/adv.git")),
        "{out}"
    );

    let mut flags = controller_flags(None);
    flags.extend(["--advertise".into(), "https://slipway.example.com/".into()]);
    let s = TestServer::start_with(&flags);
    assert_eq!(info(&s).git_url, "https://slipway.example.com");

    // Without it, on loopback: loopback, as before.
    let s = TestServer::start_with(&controller_flags(None));
    assert_eq!(info(&s).git_url, s.url);
}

/// Listening on 0.0.0.0 the controller never advertises 0.0.0.0 (nor, with a default route,
/// 127.0.0.1): it names the address this machine sends from.
#[test]
fn listening_on_all_addresses_advertises_a_reachable_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0"])
        .args(controller_flags(None))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("Listening on ")
        .unwrap()
        .to_string();
    let key = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(k) = std::fs::read_to_string(dir.path().join("data/api-key")) {
                break k.trim().to_string();
            }
            assert!(Instant::now() < deadline, "no api-key");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let info = block_on(async {
        let client = slipway_client::Client::new(&url, &key).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.cluster_info().await {
                Ok(i) => break i,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let port = url.rsplit(':').next().unwrap();
    let host = info
        .git_url
        .strip_prefix("http://")
        .and_then(|h| h.strip_suffix(&format!(":{port}")))
        .unwrap_or_else(|| panic!("{}", info.git_url));
    let ip: std::net::IpAddr = host.parse().unwrap();
    assert!(!ip.is_unspecified(), "{}", info.git_url);
    // The test's machine: the address it sends from on its default route, if it has one.
    let route = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    match route {
        Ok(src) if !src.is_loopback() => assert_eq!(ip, src),
        _ => assert!(ip.is_loopback(), "{}", info.git_url),
    }
}

/// `POST /internal/apps/{app}/build-jobs` (a build job handed over by a controller whose
/// scheduler does not lead) takes the API key and the cluster token: its body may mount host
/// paths, which the API key alone must not reach. With both, a body that is no build job is a 400.
#[test]
fn build_jobs_from_other_controllers_need_the_cluster_token() {
    let s = TestServer::start();
    let token = data_file(&s, "cluster-token");
    let path = format!("/internal/apps/{}/build-jobs", slipway_types::Id::new_v4());
    let addr = s.url.trim_start_matches("http://").to_string();
    // Plain HTTP/1.1 over a socket: what the request carries is exactly what is written here.
    let post = |bearer: Option<&str>, token: Option<&str>, body: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
        if let Some(t) = token {
            auth.push_str(&format!("Slipway-Cluster-Token: {t}\r\n"));
        }
        write!(
            c,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer)
    };
    let (status, body) = post(None, Some(&token), "{}");
    assert_eq!(status, 401, "the token alone is not enough: {body}");
    let (status, body) = post(Some(&s.key()), None, "{}");
    assert_eq!(status, 401, "the API key alone is not enough: {body}");
    assert!(body.contains("cluster token"), "{body}");
    let (status, body) = post(Some(&s.key()), Some("wrong"), "{}");
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(Some(&s.key()), Some(&token), "{\"not\": \"a job\"}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a build job"), "{body}");
}
