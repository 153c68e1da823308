//! Issue 14: the router's listeners under a hostile client — a cap on open connections, TCP
//! routes outside the allowed range or on a port another process holds (a state that says
//! so, nothing listening), and the admin endpoint's header timeout (its event stream lives on).

use super::*;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the peer closes (true) or `within` passes (false); what it sent.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> (bool, String) {
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

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_slots_come_back() {
    let t = start(Config {
        max_connections: 3,
        ..Config::default()
    })
    .await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(t.http).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.router.open_connections() < 3 {
        assert!(Instant::now() < deadline, "3 connections never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fourth = tokio::net::TcpStream::connect(t.http).await.unwrap();
    let (closed, got) = closed_within(&mut fourth, Duration::from_secs(5)).await;
    assert!(closed, "the connection past the cap stayed open: {got:?}");
    assert!(
        got.starts_with("HTTP/1.1 503 ") && got.contains("too many open connections"),
        "{got:?}"
    );
    assert_eq!(t.router.open_connections(), 3);
    // One closes: its slot serves the next client.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = tokio::net::TcpStream::connect(t.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (_, got) = closed_within(&mut s, Duration::from_secs(5)).await;
        if got.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port no one listens on now (picked by the kernel, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn tcp_routes_outside_the_range_or_on_a_held_port_are_not_listened_for_and_say_why() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let (outside, ok) = (free_port(), free_port());
    let lo = held_port.min(ok);
    let hi = held_port.max(ok);
    let t = start(Config {
        tcp_bind: "127.0.0.1".parse().unwrap(),
        tcp_ports: lo..=hi,
        ..Config::default()
    })
    .await;
    // `outside` must really be outside [lo, hi] for the test to mean anything.
    let outside = if (lo..=hi).contains(&outside) {
        if lo > 1024 { lo - 1 } else { hi + 1 }
    } else {
        outside
    };
    t.router.set_routes(&[
        tcp_route(outside, "svc"),
        tcp_route(held_port, "svc"),
        tcp_route(ok, "svc"),
    ]);
    let state = |p| t.router.tcp_listener_state(p).unwrap_or_default();
    assert_eq!(
        state(outside),
        format!("failed: port {outside} is outside the TCP route range {lo}-{hi}")
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", outside))
            .await
            .is_err(),
        "nothing listens on a port outside the range"
    );
    assert!(
        state(held_port).starts_with("failed: ") && state(held_port).contains("in use"),
        "{}",
        state(held_port)
    );
    assert_eq!(state(ok), "listening");
    assert_eq!(t.router.tcp_listener_state(1), None);
    // Once the other process lets go, the next change of routes listens.
    drop(held);
    t.router.set_routes(&[tcp_route(held_port, "svc")]);
    assert_eq!(state(held_port), "listening");
    assert_eq!(t.router.tcp_listener_state(ok), None);
}

#[tokio::test]
async fn the_admin_endpoint_closes_silent_connections_but_not_its_event_stream() {
    let mut config = Config::default();
    config.limits.header_read_timeout = Duration::from_millis(300);
    let t = start(config).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    let r = t.router.clone();
    tokio::spawn(async move { r.serve_admin(l).await });

    let since = Instant::now();
    let mut half = tokio::net::TcpStream::connect(admin).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: a")
        .await
        .unwrap();
    let (closed, _) = closed_within(&mut half, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent request stayed open 5 s");
    assert!(
        since.elapsed() < Duration::from_secs(3),
        "{:?}",
        since.elapsed()
    );

    let mut events = tokio::net::TcpStream::connect(admin).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.add("web", "late", backend("b").await).await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"late\"") {
        match tokio::time::timeout_at(deadline, events.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "the event stream ended or stalled past the header timeout ({other:?}): {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}
