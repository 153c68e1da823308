//! A follower that stops reading is dropped instead of having its lines pile up in the server
//! (issue 14, finding 7). Before the bound: the follower was never dropped (the test timed out
//! waiting for `followers_dropped`).

use crate::{open, src};
use slipway_store::Store;
use slipway_types::{NewApp, Timestamp};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_dropped_and_a_reader_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        slipway_store::open(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap(),
    );
    let app = store
        .create_app("demo", &NewApp::default(), None)
        .await
        .unwrap();
    let agg = open(&dir.path().join("logs"), 100_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = slipway_logs::http::router(agg.clone(), store);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let follow = move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        write!(
            c,
            "GET /apps/demo/log?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // The response head comes once the follow is subscribed.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        c
    };
    let mut stalled = tokio::task::spawn_blocking(follow).await.unwrap();
    let mut reader = tokio::task::spawn_blocking(follow).await.unwrap();
    // The reader reads everything as it comes, until the last line.
    let total = 20_000usize;
    let last = format!("\"msg\":\"{} x", total - 1).into_bytes();
    let reading = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(n) = reader.read(&mut buf) {
                all.extend_from_slice(&buf[..n]);
                let tail = &all[all.len().saturating_sub(n + last.len())..];
                if tail.windows(last.len()).any(|w| w == last.as_slice()) {
                    break;
                }
            }
        }
        count_lines(&all)
    });
    let line = "x".repeat(1000);
    for i in 0..total {
        agg.append(
            &src(&app.id.to_string(), "web", "job1"),
            Timestamp::now(),
            "stdout",
            &format!("{i} {line}"),
        )
        .unwrap();
    }
    // The stalled one is dropped once it has left FOLLOW_BACKLOG lines waiting for FOLLOW_STALL.
    let deadline = Instant::now() + slipway_logs::http::FOLLOW_STALL + Duration::from_secs(20);
    while slipway_logs::http::followers_dropped() == 0 {
        assert!(
            Instant::now() < deadline,
            "the follower that does not read was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its connection then ends after what was already on its way (well short of every line).
    let got = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "the dropped follower's stream never ended"
            );
            let mut buf = vec![0u8; 64 << 10];
            match stalled.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        count_lines(&all)
    })
    .await
    .unwrap();
    assert!(
        got < total,
        "the dropped follower got {got} of {total} lines"
    );
    assert!(
        reading.await.unwrap() >= total,
        "the reading follower got every line"
    );
    assert_eq!(
        slipway_logs::http::followers_dropped(),
        1,
        "only the stalled one"
    );
}

/// Log lines in a response body: one `"msg":"` per entry (chunk framing has newlines too).
fn count_lines(body: &[u8]) -> usize {
    body.windows(7).filter(|w| w == b"\"msg\":\"").count()
}
