//! Failover between members must never send a write twice: a member that failed after it may
//! have applied a write (its answer broke off, it reported an internal timeout, it hung up
//! after reading the request) leaves the write's outcome unknown, and resending it to the next
//! member would apply it twice (a txn's compare then reports failure for a write that
//! happened). Reads, and writes a member refused before taking them on ("no leader"), still
//! go on to the next member. Fake members (plain TCP), so no etcd is needed.

use slipway_etcd::{Client, Error, PutRequest, RangeRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a fake member does with each request it reads whole.
#[derive(Clone, Copy)]
enum Act {
    /// A 200 whose body breaks off (the member died while answering).
    BreakOff,
    /// A 503 with this gRPC message (as etcd's gateway answers).
    Unavailable(&'static str),
    /// Hangs up without answering.
    HangUp,
    /// A valid answer to a put or range.
    Answer,
}

/// Reads one HTTP request (headers and a Content-Length body); `false` at EOF.
async fn read_request(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A fake member acting `act` on every request; its URL and how many requests it read.
async fn member(act: Act) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                while read_request(&mut s).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = match act {
                        Act::BreakOff => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: 1000\r\n\r\n{\"header\":"
                            .to_string(),
                        Act::Unavailable(m) => {
                            let body = format!(r#"{{"error":"{m}","code":14,"message":"{m}"}}"#);
                            format!(
                                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: \
                                 application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        Act::HangUp => return,
                        Act::Answer => {
                            let body = r#"{"header":{"revision":"7"}}"#;
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                 Content-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        }
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    if matches!(act, Act::BreakOff) {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn put() -> PutRequest {
    PutRequest {
        key: "/k".into(),
        value: "v".into(),
        lease: 0,
        prev_kv: false,
    }
}

#[tokio::test]
async fn a_write_whose_outcome_is_unknown_is_not_sent_to_another_member() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for (act, what) in [
        (Act::BreakOff, "an answer that broke off"),
        (
            Act::Unavailable("etcdserver: request timed out"),
            "etcd's own request timeout",
        ),
        (Act::HangUp, "a hang-up after the request was read"),
    ] {
        let (failing, failing_seen) = member(act).await;
        let (next, next_seen) = member(Act::Answer).await;
        let c = Client::new(&format!("{failing},{next}")).unwrap();
        let e = c.put(&put()).await.unwrap_err();
        assert_eq!(failing_seen.load(Ordering::SeqCst), 1, "{what}");
        assert_eq!(
            next_seen.load(Ordering::SeqCst),
            0,
            "after {what}, the put was sent again to the next member: {e}"
        );
        let text = e.to_string();
        assert!(
            matches!(e, Error::Uncertain { .. })
                && text.contains(&failing)
                && text.contains("may or may not have been applied"),
            "{what}: {text}"
        );
        // A read is safe to repeat: it goes on to the next member.
        c.range(&RangeRequest::key("/k")).await.unwrap();
        assert_eq!(next_seen.load(Ordering::SeqCst), 1, "{what}: read");
    }
}

#[tokio::test]
async fn a_write_refused_for_want_of_a_leader_goes_to_the_next_member() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (alone, alone_seen) = member(Act::Unavailable("etcdserver: no leader")).await;
    let (next, next_seen) = member(Act::Answer).await;
    let c = Client::new(&format!("{alone},{next}")).unwrap();
    let r = c.put(&put()).await.unwrap();
    assert_eq!(r.header.revision, 7);
    assert_eq!(alone_seen.load(Ordering::SeqCst), 1);
    assert_eq!(next_seen.load(Ordering::SeqCst), 1);
}

/// A member that refuses a watch with an error status and then never finishes the error's
/// body must not hold the watch: it is abandoned within the call timeout and the next member
/// is asked.
#[tokio::test]
async fn a_watch_refused_with_a_stalled_body_goes_to_the_next_member() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stalled = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if read_request(&mut s).await {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n{",
                            )
                            .await;
                        // Never more: the body stays unfinished while the connection lives.
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        url
    };
    let good = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if read_request(&mut s).await {
                        let created = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                     Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{created}\n\r\n",
                                    created.len() + 1
                                )
                                .as_bytes(),
                            )
                            .await;
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        url
    };
    let c = Client::with_timeout(
        &format!("{stalled},{good}"),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let w = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.watch(&slipway_etcd::WatchRequest::prefix("/", 0)),
    )
    .await
    .expect("the stalled member held the watch")
    .unwrap();
    assert_eq!(w.endpoint(), good);
    assert_eq!(w.created_revision, 5);
}

/// A fake member that answers every watch with 200 and then `first` as the stream's first
/// line (and keeps the stream open); its URL.
async fn watch_member(first: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if read_request(&mut s).await {
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\n\r\n",
                                first.len() + 1
                            )
                            .as_bytes(),
                        )
                        .await;
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
            });
        }
    });
    url
}

/// A member cut off from its leader answers a new watch's stream with an error line (the
/// gateway has already sent 200): the watch is created on the next member, as a unary call
/// would be, instead of failing while a healthy member is listed.
#[tokio::test]
async fn a_watch_whose_first_line_is_an_error_goes_to_the_next_member() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let alone = watch_member(
        r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
    )
    .await;
    let good = watch_member(r#"{"result":{"header":{"revision":"9"},"created":true}}"#).await;
    let c = Client::new(&format!("{alone},{good}")).unwrap();
    let w = c
        .watch(&slipway_etcd::WatchRequest::prefix("/", 0))
        .await
        .unwrap();
    assert_eq!(w.endpoint(), good);
    assert_eq!(w.created_revision, 9);
    // Compaction is an answer, not a member's failure: it is not asked elsewhere.
    let compacted = watch_member(
        r#"{"result":{"header":{"revision":"9"},"created":true,"canceled":true,"compact_revision":"5"}}"#,
    )
    .await;
    let c = Client::new(&format!("{compacted},{good}")).unwrap();
    let e = c
        .watch(&slipway_etcd::WatchRequest::prefix("/", 1))
        .await
        .err()
        .expect("a compacted watch is an error");
    assert!(matches!(e, Error::Compacted { .. }), "{e}");
}
