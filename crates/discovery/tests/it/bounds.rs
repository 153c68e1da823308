//! What the HTTP client reads from a discovery server is bounded: a peer streaming a reply or
//! a watch event without end is cut off, not buffered until the process runs out of memory.

use slipway_discovery::{HttpRegistry, Registry};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering one connection with `chunk` (HTTP chunked framing) over and over, until
/// the client hangs up (or 64 MiB, far over every limit); the second value is the bytes it
/// wrote then (0 until it stopped).
async fn endless(content_type: &'static str, chunk: &'static str) -> (String, Arc<AtomicUsize>) {
    let written = Arc::new(AtomicUsize::new(0));
    let done = written.clone();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; 4096];
                let _ = conn.read(&mut req).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\
                     transfer-encoding: chunked\r\n\r\n"
                );
                conn.write_all(head.as_bytes()).await.unwrap();
                let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                let mut n = 0;
                while n < 64 << 20 && conn.write_all(framed.as_bytes()).await.is_ok() {
                    n += chunk.len();
                }
                done.store(n, Ordering::SeqCst);
            });
        }
    });
    (url, written)
}

/// Waits for the server to stop, and checks the client hung up before `max` bytes (the
/// client's limit plus what socket buffers take in, well under 64 MiB).
async fn assert_cut_off(written: &AtomicUsize, max: usize) {
    let mut n = 0;
    for _ in 0..400 {
        n = written.load(Ordering::SeqCst);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        n > 0 && n < max,
        "the client read {n} bytes before hanging up"
    );
}

fn filler() -> &'static str {
    Box::leak("x".repeat(16 << 10).into_boxed_str())
}

#[tokio::test]
async fn an_endless_instances_reply_is_refused() {
    let (url, written) = endless("application/json", filler()).await;
    let reg = HttpRegistry::new(&url, "k");
    let err = tokio::time::timeout(Duration::from_secs(20), reg.instances("app-web"))
        .await
        .expect("the read is cut off, not run to the end")
        .unwrap_err();
    assert!(err.to_string().contains("byte limit"), "{err}");
    assert_cut_off(&written, slipway_discovery::http::MAX_BODY + (16 << 20)).await;
}

#[tokio::test]
async fn an_endless_watch_line_ends_the_watch() {
    let (url, written) = endless("text/event-stream", filler()).await;
    let reg = HttpRegistry::new(&url, "k");
    let mut watch = reg.watch(Some("app-web")).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.recv()).await;
    assert!(matches!(ended, Ok(None)), "the watch is still buffering");
    assert_cut_off(&written, slipway_discovery::http::MAX_EVENT + (16 << 20)).await;
}

/// A watch on a connection that went silent (the server's machine gone without a FIN: not even
/// its keep-alive comments come) ends, so the router reopens it rather than keep stale
/// backends forever.
#[tokio::test]
async fn a_silent_watch_ends() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = l.accept().await.unwrap();
        let mut req = [0u8; 4096];
        let _ = conn.read(&mut req).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        conn.write_all(head.as_bytes()).await.unwrap();
        // Then nothing, with the connection held open.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(conn);
    });
    let reg = HttpRegistry::new(&url, "k").with_watch_idle(Duration::from_millis(300));
    let mut watch = reg.watch(None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.recv()).await;
    assert!(matches!(ended, Ok(None)), "the silent watch is still open");
}
