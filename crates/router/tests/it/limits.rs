//! The limits that act while bodies stream: a chunked request body over `max_request_body`,
//! and the total request time (slow response head, slow upload, slow download), which does
//! not apply to upgraded connections. Raw TCP clients, so what reaches the wire is what is
//! asserted.

use super::*;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn router_with(limits: impl FnOnce(&mut slipway_router::Limits)) -> TestRouter {
    let mut config = Config::default();
    limits(&mut config.limits);
    let t = start(config).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    t
}

/// Opens a chunked upload to `path` (head only; chunks follow with [`chunk`]).
async fn chunked_post(t: &TestRouter, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(t.http).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn chunk(s: &mut TcpStream, len: usize) {
    let mut c = format!("{len:x}\r\n").into_bytes();
    c.extend(std::iter::repeat_n(b'x', len));
    c.extend(b"\r\n");
    s.write_all(&c).await.unwrap();
}

/// Everything the router sends until it closes the connection (at most 5 s).
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the router kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let t = router_with(|l| l.max_request_body = 1000).await;
    // Under the limit: the backend reads the whole body.
    let mut s = chunked_post(&t, "/sink").await;
    chunk(&mut s, 600).await;
    chunk(&mut s, 300).await;
    s.write_all(b"0\r\n\r\nGET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.contains("\r\n\r\n900"),
        "the backend got 900 bytes: {got}"
    );

    // Over it, no length declared: cut off when the 1001st byte arrives.
    let mut s = chunked_post(&t, "/sink").await;
    chunk(&mut s, 600).await;
    chunk(&mut s, 600).await;
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(
        got.contains("over the router's limit of 1000 bytes"),
        "says why: {got}"
    );
}

#[tokio::test]
async fn chunked_body_over_the_limit_after_the_response_started_closes_the_connection() {
    let t = router_with(|l| l.max_request_body = 1000).await;
    // `/echo` answers at once and streams the body back: the 200 is out before the limit.
    let mut s = chunked_post(&t, "/echo").await;
    chunk(&mut s, 600).await;
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(&"x".repeat(600)) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the first 600 bytes come back")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    chunk(&mut s, 600).await;
    let rest = read_to_close(&mut s).await;
    assert!(
        !rest.contains("0\r\n\r\n"),
        "the response must not look complete: {rest}"
    );
    assert!(
        rest.matches('x').count() < 600,
        "the bytes over the limit are not passed on: {rest}"
    );
}

#[tokio::test]
async fn slow_response_head_is_504_at_the_total_request_time() {
    let t = router_with(|l| l.request_timeout = Duration::from_millis(300)).await;
    assert_eq!(
        get(t.http, "web.test", "/").await,
        (StatusCode::OK, "b".into())
    );
    let started = Instant::now();
    let (status, body) = get(t.http, "web.test", "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("300ms for the whole request"), "{body}");
    // 504, not the backend's 200 at 500 ms: the limit cut it (the bound is loose for loaded CI).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn slow_upload_is_408_at_the_total_request_time() {
    let t = router_with(|l| l.request_timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut s = chunked_post(&t, "/sink").await;
    chunk(&mut s, 100).await;
    // …and nothing more: the backend waits for the rest.
    let got = read_to_close(&mut s).await;
    let took = started.elapsed();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("total request time limit of 1s"), "{got}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test]
async fn slow_download_is_cut_off_at_the_total_request_time() {
    let t = router_with(|l| l.request_timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(t.http).await.unwrap();
    s.write_all(b"GET /drip HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .unwrap();
    // `/drip` sends a dot every 100 ms for 10 s.
    let got = read_to_close(&mut s).await;
    let took = started.elapsed();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let dots = got.matches('.').count();
    assert!(
        (3..=11).contains(&dots),
        "{dots} dots before the cut: {got}"
    );
    assert!(!got.ends_with("0\r\n\r\n"), "must not look complete: {got}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test]
async fn upgraded_connections_outlive_the_request_time_limit() {
    let t = router_with(|l| l.request_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(t.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let msg = format!("still here {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}
