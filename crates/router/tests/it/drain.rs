//! Issue 17: a router told to stop (`Router::drain`) closes its listener, closes idle
//! keep-alive connections, lets requests in flight finish (their responses say
//! `Connection: close`) and returns once no connection is open.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the peer closes (true) or `within` passes (false); what it sent.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> (bool, String) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&got).into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, String::from_utf8_lossy(&got).into()),
        }
    }
}

/// Reads one response with a `Content-Length` (the connection stays open).
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_draining_router_finishes_what_is_in_flight_closes_idle_connections_and_stops_accepting()
{
    let t = start(Config::default()).await;
    assert!(
        !t.router.wait_loaded(Duration::from_millis(100)).await,
        "no routes yet: not loaded"
    );
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    assert!(t.router.wait_loaded(Duration::from_secs(1)).await);

    // A kept-alive connection, idle after one request.
    let mut idle = tokio::net::TcpStream::connect(t.http).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut idle).await;
    assert!(
        first.starts_with("HTTP/1.1 200 ") && first.ends_with("b"),
        "{first}"
    );
    // A request in flight (the backend answers after 500 ms) when the drain starts.
    let mut busy = tokio::net::TcpStream::connect(t.http).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(t.router.open_connections(), 2);

    let router = t.router.clone();
    let drained = tokio::spawn(async move { router.drain(Duration::from_secs(10)).await });
    let (closed, got) = read_until_closed(&mut idle, Duration::from_secs(2)).await;
    assert!(
        closed && got.is_empty(),
        "the idle connection: {closed} {got:?}"
    );
    // The listener is closed: a new connection is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(t.http).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (closed, got) = read_until_closed(&mut busy, Duration::from_secs(5)).await;
    assert!(closed, "the busy connection stayed open: {got:?}");
    assert!(
        got.starts_with("HTTP/1.1 200 ") && got.ends_with("b"),
        "{got:?}"
    );
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got:?}"
    );
    assert!(drained.await.unwrap(), "drain timed out");
    assert_eq!(t.router.open_connections(), 0);
}

#[tokio::test]
async fn a_drain_that_times_out_says_so() {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    // A streaming response (10 s) outlasts a 300 ms drain.
    let mut s = tokio::net::TcpStream::connect(t.http).await.unwrap();
    s.write_all(b"GET /drip HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert!(!t.router.drain(Duration::from_millis(300)).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(t.router.open_connections(), 1);
}
