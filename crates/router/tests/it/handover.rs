//! One client connection moving from the router's plain HTTP/1.1 path to hyper's: the
//! requests the plain path does not take (chunked uploads, Upgrade, h2c) are served by hyper
//! from the bytes already read, and what came before and after is still answered in order.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn routed() -> TestRouter {
    let t = start(Config::default()).await;
    t.add("web", "b", backend("b").await).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    t
}

/// Reads one response (`Content-Length` or chunked body) from `s`, keeping what follows in
/// `buf`. Returns the status line and the body.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(5), async {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            fill(s, buf).await;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        buf.drain(..head_end);
        let status = head.lines().next().unwrap_or("").to_string();
        let mut body = Vec::new();
        if head.contains("transfer-encoding: chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    fill(s, buf).await;
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&buf[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                buf.drain(..line_end + 2);
                while buf.len() < size + 2 {
                    fill(s, buf).await;
                }
                body.extend(buf.drain(..size));
                buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < len {
                fill(s, buf).await;
            }
            body.extend(buf.drain(..len));
        }
        (status, body)
    })
    .await
    .expect("no complete response within 5 s")
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut b = [0u8; 4096];
    let n = s.read(&mut b).await.unwrap();
    assert!(n > 0, "the router closed the connection mid-response");
    buf.extend_from_slice(&b[..n]);
}

const GET: &[u8] = b"GET /plain HTTP/1.1\r\nHost: web.test\r\n\r\n";
const CHUNKED_ECHO: &[u8] = b"POST /echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";

#[tokio::test]
async fn a_chunked_upload_after_plain_requests_is_served_on_the_same_connection() {
    let t = routed().await;
    let mut s = TcpStream::connect(t.http).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(GET).await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf).await,
        ("http/1.1 200 ok".into(), b"b".to_vec())
    );
    s.write_all(CHUNKED_ECHO).await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf).await,
        ("http/1.1 200 ok".into(), b"hello, world".to_vec())
    );
    // hyper has the connection now, and keeps serving it.
    s.write_all(GET).await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf).await,
        ("http/1.1 200 ok".into(), b"b".to_vec())
    );
}

/// The bytes the plain path read past its last request (here: a whole chunked request) are
/// the first hyper reads.
#[tokio::test]
async fn pipelined_requests_across_the_handover_are_answered_in_order() {
    let t = routed().await;
    let mut s = TcpStream::connect(t.http).await.unwrap();
    let mut all = GET.to_vec();
    all.extend_from_slice(CHUNKED_ECHO);
    all.extend_from_slice(GET);
    s.write_all(&all).await.unwrap();
    let mut buf = Vec::new();
    let bodies = [
        response(&mut s, &mut buf).await.1,
        response(&mut s, &mut buf).await.1,
        response(&mut s, &mut buf).await.1,
    ];
    assert_eq!(
        bodies,
        [b"b".to_vec(), b"hello, world".to_vec(), b"b".to_vec()]
    );
}

#[tokio::test]
async fn a_websocket_upgrade_after_a_plain_request_is_spliced() {
    let t = routed().await;
    let mut s = TcpStream::connect(t.http).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(GET).await.unwrap();
    assert_eq!(response(&mut s, &mut buf).await.1, b"b");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let (status, _) = response(&mut s, &mut buf).await;
    assert!(status.starts_with("http/1.1 101"), "{status}");
    s.write_all(b"raw bytes both ways").await.unwrap();
    while buf.len() < 19 {
        fill(&mut s, &mut buf).await;
    }
    assert_eq!(&buf[..], b"raw bytes both ways");
}

/// HTTP/2 with prior knowledge (h2c) on the plain port: hyper's from the first byte.
#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let t = routed().await;
    let mut tx = h2c(t.http).await;
    for path in ["/one", "/two"] {
        let req = Request::get(format!("http://web.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"b");
    }
}
