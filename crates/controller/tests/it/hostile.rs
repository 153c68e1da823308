//! Issue 14's API findings, at the controller: each test failed before its fix (the note on each
//! says how).

use crate::{KEY, Server};
use reqwest::Method;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Limits have upper bounds: `memory` = u64::MAX meant no limit at all, `cpu` = u64::MAX a runc
/// restart loop. (Before: 201 for each.)
#[tokio::test]
async fn limits_have_upper_bounds() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "lim"})))
        .await;
    for (key, value, contains) in [
        ("memory", u64::MAX, "above the maximum of 1TB"),
        ("memory", (1u64 << 40) + 1, "above the maximum"),
        ("cpu", u64::MAX, "above the maximum of 256000"),
        ("max_fd", 1 << 40, "above the maximum of 1048576"),
        ("max_procs", u64::MAX, "above the maximum"),
    ] {
        let body = json!({"processes": {"web": {"resources": {key: value}}}});
        s.err(
            Method::POST,
            "/apps/lim/releases",
            Some(body),
            422,
            "validation_error",
            contains,
        )
        .await;
    }
    // The largest allowed values still pass.
    let body = json!({"processes": {"web": {"resources":
        {"memory": 1u64 << 40, "cpu": 256_000, "max_fd": 1 << 20, "max_procs": 4 << 20}}}});
    s.ok(Method::POST, "/apps/lim/releases", Some(body)).await;
}

/// `PUT /apps/:app/jobs/:job` wrote a job row nothing ran, stuck `up`. (Before: 200 and the
/// phantom job listed as up.)
#[tokio::test]
async fn jobs_cannot_be_written_through_the_api() {
    let s = Server::sqlite().await;
    let app = s
        .ok(Method::POST, "/apps", Some(json!({"name": "ph"})))
        .await;
    let job = json!({"id": "x", "app_id": app["id"], "release_id": "00000000-0000-0000-0000-000000000000",
                     "state": "up", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    s.err(
        Method::PUT,
        "/apps/ph/jobs/host1-x",
        Some(job),
        405,
        "method_not_allowed",
        "PUT",
    )
    .await;
    assert_eq!(s.ok(Method::GET, "/apps/ph/jobs", None).await, json!([]));
}

/// Every body must be a JSON object: `[]` scaled an app to 0 and created an app. (Before: 200 and
/// 201.)
#[tokio::test]
async fn bodies_must_be_objects() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "obj"})))
        .await;
    let r = s
        .ok(
            Method::POST,
            "/apps/obj/releases",
            Some(json!({"processes": {"web": {"args": ["sleep", "100"]}}})),
        )
        .await;
    let formation = format!("/apps/obj/formations/{}", r["id"].as_str().unwrap());
    s.ok(
        Method::PUT,
        &formation,
        Some(json!({"processes": {"web": 2}})),
    )
    .await;
    for body in ["[]", "[{}]", "null", "\"x\"", "42", "true"] {
        for (method, path) in [(Method::PUT, formation.as_str()), (Method::POST, "/apps")] {
            let resp = s
                .req(method.clone(), path)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 422, "{method} {path} {body}");
            let json: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(json["code"], "validation_error");
            assert!(
                json["message"].as_str().unwrap().contains("JSON object"),
                "{json}"
            );
        }
    }
    // Still malformed JSON: 400.
    let resp = s
        .req(Method::POST, "/apps")
        .header("content-type", "application/json")
        .body("[1,")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        s.ok(Method::GET, &formation, None).await["processes"]["web"],
        2
    );
    assert_eq!(
        s.ok(Method::GET, "/apps", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A raw request (the path as bytes, so it can be invalid UTF-8): the status and the body.
fn raw_get(url: &str, path: &[u8]) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    c.write_all(&req).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// A path that is not UTF-8 got axum's plain-text 400. (Before: `response is not JSON: 400
/// "Invalid URL: ..."`.)
#[tokio::test]
async fn path_rejections_are_json() {
    let s = Server::sqlite().await;
    let url = s.url.clone();
    for path in [
        &b"/apps/%FF"[..],
        b"/apps/%C3%28/releases",
        b"/releases/%FF%FE",
        b"/apps/x/jobs/%80",
    ] {
        let url = url.clone();
        let p = path.to_vec();
        let (status, head, body) = tokio::task::spawn_blocking(move || raw_get(&url, &p))
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(path);
        assert_eq!(status, 400, "{shown}: {head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{shown}: {head}"
        );
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{shown}: response is not JSON: {body:?}"));
        assert_eq!(json["code"], "bad_request", "{shown}: {json}");
        assert!(!json["message"].as_str().unwrap().is_empty());
    }
}

/// User-controlled sizes are bounded (env, args, meta, route paths, process types, ports,
/// health checks). (Before: each was accepted.)
#[tokio::test]
async fn user_input_sizes_are_bounded() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "big"})))
        .await;
    let many_env: serde_json::Map<String, serde_json::Value> =
        (0..1001).map(|i| (format!("V{i}"), json!("x"))).collect();
    let many_types: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("t{i}"), json!({}))).collect();
    let many_meta: serde_json::Map<String, serde_json::Value> =
        (0..201).map(|i| (format!("m{i}"), json!("x"))).collect();
    for (path, body, contains) in [
        (
            "/apps/big/releases",
            json!({"env": many_env}),
            "environment variables is more than",
        ),
        (
            "/apps/big/releases",
            json!({"env": {"BIG": "x".repeat(65 << 10)}}),
            "more than the maximum of 65536",
        ),
        (
            "/apps/big/releases",
            json!({"env": (0..5).map(|i| (format!("V{i}"), json!("x".repeat(60 << 10)))).collect::<serde_json::Map<_, _>>()}),
            "the environment is",
        ),
        (
            "/apps/big/releases",
            json!({"processes": many_types}),
            "process types is more than",
        ),
        (
            "/apps/big/releases",
            json!({"processes": {"web": {"args": vec!["a"; 1001]}}}),
            "arguments is more than",
        ),
        (
            "/apps/big/releases",
            json!({"processes": {"web": {"ports": vec![json!({}); 65]}}}),
            "ports is more than",
        ),
        (
            "/apps/big/releases",
            json!({"processes": {"web": {"ports": [{"service": {"name": "big-web",
            "check": {"type": "tcp", "start_timeout_ms": u64::MAX}}}]}}}),
            "at most 3600000 ms",
        ),
        (
            "/apps/big/releases",
            json!({"meta": many_meta}),
            "meta entries",
        ),
        (
            "/apps",
            json!({"name": "m", "meta": {"k": "x".repeat(9000)}}),
            "meta value",
        ),
        (
            "/apps/big/routes",
            json!({"type": "http", "domain": "x.com", "path": "/a".repeat(600)}),
            "route path is",
        ),
        (
            "/apps/big/jobs",
            json!({"args": vec!["a"; 1001]}),
            "arguments is more than",
        ),
    ] {
        s.err(
            Method::POST,
            path,
            Some(body),
            422,
            "validation_error",
            contains,
        )
        .await;
    }
}

/// Reads SSE from a raw socket: ids seen and whether the stream said it dropped us.
fn read_sse(c: &mut std::net::TcpStream, until: impl Fn(&[i64]) -> bool) -> (Vec<i64>, bool, bool) {
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "stream still open after 120 s; ids {}",
            ids.len()
        );
        let n = match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        ids = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        if until(&ids) {
            return (ids, text.contains(": dropped"), false);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    (ids, text.contains(": dropped"), true)
}

fn subscribe(url: &str, rcvbuf: Option<i32>) -> std::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    if let Some(size) = rcvbuf {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid socket and a c_int option value of the right size.
        unsafe {
            libc_setsockopt(c.as_raw_fd(), size);
        }
    }
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(
        c,
        "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    c
}

/// Sets SO_RCVBUF on `fd` (the controller's tests do not depend on libc).
///
/// # Safety
/// `fd` must be an open socket the caller owns.
unsafe fn libc_setsockopt(fd: i32, size: i32) {
    // SAFETY: the declaration matches setsockopt(2)'s C prototype on Linux (socklen_t is u32).
    unsafe extern "C" {
        fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            val: *const std::ffi::c_void,
            len: u32,
        ) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    // SAFETY: the caller's fd; the value is an i32 as SO_RCVBUF takes.
    unsafe {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, (&size as *const i32).cast(), 4);
    }
}

/// A subscriber that stops reading is dropped once it is more than MAX_LAG (1000) events behind,
/// and one that reads gets every event. (Before: the slow one was never dropped: it read every
/// event to the end and was never told.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_event_subscribers_are_dropped_fast_ones_keep_up() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "feed"})))
        .await;
    let url = s.url.clone();
    let mut slow = subscribe(&url, Some(64 << 10));
    let mut fast = subscribe(&url, None);
    // Both are connected once the first event reaches the fast one.
    s.ok(
        Method::POST,
        "/apps/feed",
        Some(json!({"meta": {"n": "0"}})),
    )
    .await;
    let (mut fast, first) = tokio::task::spawn_blocking(move || {
        let (ids, _, _) = read_sse(&mut fast, |ids| !ids.is_empty());
        (fast, ids[0])
    })
    .await
    .unwrap();
    const N: usize = 2000;
    let fast_reader = tokio::task::spawn_blocking(move || {
        let last = first + N as i64;
        read_sse(&mut fast, move |ids| ids.last().is_some_and(|l| *l >= last))
    });
    let blob = "x".repeat(8000);
    for i in 1..=N {
        s.ok(
            Method::POST,
            "/apps/feed",
            Some(json!({"meta": {"n": i.to_string(), "pad": blob}})),
        )
        .await;
    }
    let (fast_ids, fast_dropped, _) = fast_reader.await.unwrap();
    assert!(!fast_dropped, "the reading subscriber was dropped");
    assert_eq!(fast_ids.len(), N, "the reading subscriber got every event");
    // The slow one now reads: what was buffered for it, then the notice, then the end.
    let (slow_ids, slow_dropped, closed) =
        tokio::task::spawn_blocking(move || read_sse(&mut slow, |_| false))
            .await
            .unwrap();
    assert!(
        slow_dropped && closed && slow_ids.len() < N,
        "slow subscriber: ids {}, dropped {slow_dropped}, closed {closed}",
        slow_ids.len()
    );
    // It can resume from its last id, without a gap.
    let last = *slow_ids.last().unwrap();
    let resumed = s
        .ok(
            Method::GET,
            &format!("/events?since_id={last}&count=10"),
            None,
        )
        .await;
    assert_eq!(resumed[0]["id"], last + 1);
}
