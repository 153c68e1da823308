use crate::*;
use slipway_discovery::Registry;

#[tokio::test]
async fn routes_by_host_wildcard_and_longest_path() {
    let t = start(Config::default()).await;
    t.add("site", "s1", backend("site").await).await;
    t.add("api", "a1", backend("api").await).await;
    t.add("wild", "w1", backend("wild").await).await;
    t.router.set_routes(&[
        http_route("app.test", "/", "site"),
        http_route("app.test", "/api/", "api"),
        http_route("*.wild.test", "/", "wild"),
    ]);
    assert_eq!(get(t.http, "app.test", "/").await.1, "site");
    assert_eq!(get(t.http, "APP.Test:1234", "/about").await.1, "site");
    assert_eq!(get(t.http, "app.test", "/api/users?x=1").await.1, "api");
    assert_eq!(get(t.http, "app.test", "/apiary").await.1, "site");
    assert_eq!(get(t.http, "x.wild.test", "/").await.1, "wild");
    assert_eq!(get(t.http, "a.b.wild.test", "/z").await.1, "wild");
}

#[tokio::test]
async fn unknown_host_is_404_and_no_backend_is_503() {
    let t = start(Config::default()).await;
    t.router
        .set_routes(&[http_route("empty.test", "/", "nobody")]);
    let (status, body) = get(t.http, "nothing.test", "/x").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for nothing.test/x"), "{body}");
    let (status, body) = get(t.http, "empty.test", "/").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("no backend is up for service nobody"),
        "{body}"
    );
}

#[tokio::test]
async fn dead_backend_is_retried_elsewhere_and_load_is_spread() {
    let t = start(Config::default()).await;
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    t.add("web", "dead", dead).await;
    t.add("web", "b1", backend("b1").await).await;
    t.add("web", "b2", backend("b2").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let (mut b1, mut b2) = (0, 0);
    for _ in 0..40 {
        let (status, body) = get(t.http, "web.test", "/").await;
        assert_eq!(
            status, 200,
            "a dead backend must never reach the client: {body}"
        );
        match body.as_str() {
            "b1" => b1 += 1,
            "b2" => b2 += 1,
            other => panic!("unexpected body {other}"),
        }
    }
    assert!(
        b1 > 0 && b2 > 0,
        "both live backends get traffic: b1={b1} b2={b2}"
    );
}

#[tokio::test]
async fn forwarded_headers_request_id_and_hop_by_hop() {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let req = Request::get("/headers")
        .header("host", "web.test")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .header("keep-alive", "timeout=5")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let h = body_string(send(t.http, req).await).await;
    assert!(
        h.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{h}"
    );
    assert!(h.contains("x-forwarded-proto: http\n"), "{h}");
    assert!(
        h.contains(&format!("x-forwarded-port: {}\n", t.http.port())),
        "{h}"
    );
    assert!(h.contains("x-custom: kept\n"), "{h}");
    assert!(h.contains("host: web.test\n"), "{h}");
    assert!(
        !h.contains("x-secret"),
        "headers named by Connection are hop-by-hop: {h}"
    );
    assert!(!h.contains("keep-alive"), "{h}");
    let start_ms: u64 = h
        .lines()
        .find_map(|l| l.strip_prefix("x-request-start: "))
        .expect("x-request-start")
        .parse()
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now_ms - start_ms < 5000, "{start_ms} vs {now_ms}");
    let id = h
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id is added");
    let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4, "{id}");
    assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
    assert_eq!(id, uuid.hyphenated().to_string(), "lower-case hex");

    let req = Request::get("/headers")
        .header("host", "web.test")
        .header("x-request-id", "mine-123")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let h = body_string(send(t.http, req).await).await;
    assert!(
        h.contains("x-request-id: mine-123\n"),
        "a client's id is kept: {h}"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    // A chunked upload (no Content-Length) of 8 MiB, echoed back through the router.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..128u32)
        .map(|i| {
            Ok(hyper::body::Frame::data(Bytes::from(vec![
                (i % 251) as u8;
                65536
            ])))
        })
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let s = tokio::net::TcpStream::connect(t.http).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/echo")
        .header("host", "web.test")
        .body(body)
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 128 * 65536);
    assert!(
        got.chunks(65536)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == (i as u32 % 251) as u8))
    );
}

#[tokio::test]
async fn oversized_request_is_413() {
    let mut config = Config::default();
    config.limits.max_request_body = 1000;
    let t = start(config).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let req = Request::post("/echo")
        .header("host", "web.test")
        .body(Full::new(Bytes::from(vec![0u8; 2000])))
        .unwrap();
    let resp = send(t.http, req).await;
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn websocket_upgrade_is_spliced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let mut s = tokio::net::TcpStream::connect(t.http).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"world, twice"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg);
    }
}

#[tokio::test]
async fn leader_routes_go_to_the_oldest_instance_only() {
    let t = start(Config::default()).await;
    t.add("db", "first", backend("first").await).await;
    t.add("db", "second", backend("second").await).await;
    let mut r = http_route("db.test", "/", "db");
    if let Route::Http(h) = &mut r {
        h.leader = true;
    }
    t.router.set_routes(&[r]);
    for _ in 0..10 {
        assert_eq!(get(t.http, "db.test", "/").await.1, "first");
    }
    let mut ev = t.router.events();
    t.registry.deregister("db", "first").await.unwrap();
    wait_event(&mut ev, "backend-down", "first").await;
    assert_eq!(get(t.http, "db.test", "/").await.1, "second");
}

#[tokio::test]
async fn draining_backend_finishes_in_flight_requests_then_reports_drained() {
    let t = start(Config::default()).await;
    t.add("web", "old", backend("old").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let mut ev = t.router.events();
    let addr = t.http;
    let slow: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(addr, "web.test", "/slow").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.registry.deregister("web", "old").await.unwrap();
    wait_event(&mut ev, "backend-down", "old").await;
    // New requests no longer go there…
    assert_eq!(get(t.http, "web.test", "/").await.0, 503);
    // …and the ones in flight all complete, after which it is drained.
    for s in slow {
        let (status, body) = s.await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "old"));
    }
    wait_event(&mut ev, "backend-drained", "old").await;
}

#[tokio::test]
async fn sticky_sessions_keep_a_client_on_one_backend() {
    let t = start(Config::default()).await;
    for name in ["s1", "s2", "s3"] {
        t.add("web", name, backend(name).await).await;
    }
    let mut r = http_route("web.test", "/", "web");
    if let Route::Http(h) = &mut r {
        h.sticky = true;
    }
    t.router.set_routes(&[r]);
    let first = send(
        t.http,
        Request::get("/")
            .header("host", "web.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("_backend=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let chosen = body_string(first).await;
    for _ in 0..20 {
        let req = Request::get("/")
            .header("host", "web.test")
            .header("cookie", format!("theme=dark; {pair}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send(t.http, req).await;
        assert!(
            !resp.headers().contains_key("set-cookie"),
            "a valid cookie is not replaced"
        );
        assert_eq!(body_string(resp).await, chosen);
    }
    // A forged cookie is ignored (and replaced), never an error.
    let req = Request::get("/")
        .header("host", "web.test")
        .header("cookie", "_backend=00112233")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(t.http, req).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status_class() {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    for _ in 0..3 {
        assert_eq!(get(t.http, "web.test", "/").await.0, 200);
    }
    assert_eq!(get(t.http, "nope.test", "/").await.0, 404);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    let r = t.router.clone();
    tokio::spawn(async move { r.serve_admin(l).await });
    let (status, m) = get(admin, "admin", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        m.contains("slipway_router_requests_total{route=\"web.test/\",status=\"2xx\"} 3\n"),
        "{m}"
    );
    assert!(
        m.contains("slipway_router_requests_total{route=\"unmatched\",status=\"4xx\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("slipway_router_request_duration_seconds_count{route=\"web.test/\"} 3\n"),
        "{m}"
    );
    assert!(
        m.contains(
            "slipway_router_request_duration_seconds_bucket{route=\"web.test/\",le=\"+Inf\"} 3\n"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let t = start(Config::default()).await;
    // A backend that counts the connections it accepts.
    let accepted = Arc::new(AtomicUsize::new(0));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    t.add("web", "counted", addr).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    for _ in 0..30 {
        assert_eq!(
            get(t.http, "web.test", "/").await,
            (StatusCode::OK, "ok".into())
        );
    }
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n <= 3,
        "30 sequential requests used {n} upstream connections"
    );
}

#[tokio::test]
async fn per_core_listeners_serve_http_and_https() {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let (http, https) = t
        .router
        .spawn_per_core(
            "127.0.0.1:0".parse().unwrap(),
            Some("127.0.0.1:0".parse().unwrap()),
            2,
        )
        .unwrap();
    for _ in 0..10 {
        assert_eq!(
            get(http, "web.test", "/").await,
            (StatusCode::OK, "b".into())
        );
    }
    assert_ne!(https.unwrap().port(), 0);
    assert!(tokio::net::TcpStream::connect(https.unwrap()).await.is_ok());
}

#[tokio::test]
async fn per_core_listeners_refuse_a_port_already_taken() {
    let t = start(Config::default()).await;
    let (http, _) = t
        .router
        .spawn_per_core("127.0.0.1:0".parse().unwrap(), None, 2)
        .unwrap();
    let err = t.router.spawn_per_core(http, None, 2).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn admin_events_stream_reports_backends_over_sse() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start(Config::default()).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    let r = t.router.clone();
    tokio::spawn(async move { r.serve_admin(l).await });
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    // The stream is subscribed once the response head is out.
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let mut b = [0u8; 512];
        let n = s.read(&mut b).await.unwrap();
        got.extend_from_slice(&b[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("text/event-stream"));
    t.add("web", "w1", backend("w1").await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"kind\":\"backend-up\"") {
        let mut b = [0u8; 512];
        let n = tokio::time::timeout_at(deadline, s.read(&mut b))
            .await
            .expect("event within 5s")
            .unwrap();
        got.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("data: {\"kind\":\"backend-up\",\"service\":\"web\",\"instance\":\"w1\""),
        "{text}"
    );
}
