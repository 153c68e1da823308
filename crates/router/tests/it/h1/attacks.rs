//! The plain HTTP/1.1 path (`crates/router/src/h1/`) as a hostile client or a sloppy backend
//! sees it: request smuggling through hop-by-hop stripping, the router's own answers and the
//! framing around them, retries, forwarding headers, and what could leave a pooled upstream
//! connection holding bytes meant for someone else (the next client would get them). Each
//! test names the rule (RFC 9110/9112, or what the hyper path does) it holds the router to.

use super::wire::{Conn, Reply, ok, scripted, scripted_by_connection};
use super::{echo_target, get, routed, routed_with, target};
use crate::*;

/// A new client connection's answer to `GET path`: its status and body.
async fn fresh_get(t: &TestRouter, path: &str) -> (u16, String) {
    let mut c = Conn::connect(t.http).await;
    c.send(get(path)).await;
    let r = c.response(false).await;
    (r.status(), r.text())
}

// ---- Request smuggling and framing of the request -------------------------------------------

/// `Connection: content-length` must not remove the request's framing: the body would reach
/// the backend as a second request that bypassed the router (no `X-Forwarded-*` of ours), and
/// its response would wait on the pooled connection for the next client (RFC 9112 §6.3, §11.2).
#[tokio::test]
async fn connection_naming_content_length_smuggles_no_request() {
    let b = scripted(|req| match target(req) {
        "/slow" => Reply::parts(
            [
                &b""[..],
                &b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"[..],
            ],
            Duration::from_millis(400),
        ),
        t => ok(t),
    })
    .await;
    let t = routed(&b).await;
    let inner = "GET /slow HTTP/1.1\r\nHost: web.test\r\n\r\n";
    let mut a = Conn::connect(t.http).await;
    a.send(format!(
        "POST /a HTTP/1.1\r\nHost: web.test\r\nContent-Length: {}\r\nConnection: content-length\r\n\r\n{inner}",
        inner.len()
    ))
    .await;
    assert_eq!(a.response(false).await.text(), "/a");
    // Another client, a moment later, on the upstream connection the router pooled.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = fresh_get(&t, "/b").await;
    let seen: Vec<String> = b.requests().iter().map(|m| m.head.clone()).collect();
    assert_eq!(
        (status, body.as_str()),
        (200, "/b"),
        "another client got a smuggled request's response; the backend saw: {seen:#?}"
    );
    let first = &b.requests()[0];
    assert_eq!(
        first.get("content-length"),
        Some(inner.len().to_string().as_str()),
        "the POST lost its framing: {}",
        first.head
    );
    assert_eq!(first.body, inner.as_bytes());
}

/// RFC 9112 §3.2: more than one Host line is a 400; routing by one while the app reads
/// another is a host confusion (the plain path routes by the first non-empty one).
#[tokio::test]
async fn duplicate_host_lines_are_refused() {
    let b = echo_target().await;
    let t = routed(&b).await;
    for hosts in [
        "Host: \r\nHost: web.test\r\n",
        "Host: web.test\r\nHost: evil.test\r\n",
    ] {
        let mut c = Conn::connect(t.http).await;
        c.send(format!("GET / HTTP/1.1\r\n{hosts}\r\n")).await;
        let r = c.response(false).await;
        assert_eq!(r.status(), 400, "{hosts:?}: {}", r.head);
    }
    let seen: Vec<String> = b.requests().iter().map(|m| m.head.clone()).collect();
    assert!(seen.is_empty(), "forwarded: {seen:#?}");
}

/// A `#fragment` is no part of a request target (RFC 9112 §3.2); hyper's path drops it and
/// routes `/admin#x` as `/admin`. The plain path routes by the whole string: `/admin#x` goes to
/// the `/` route's service, which may well read it as `/admin`.
#[tokio::test]
async fn a_fragment_in_the_target_does_not_change_the_route() {
    let web = echo_target().await;
    let admin = scripted(|req| ok(format!("admin {}", target(req)))).await;
    let t = routed(&web).await;
    t.add("admin", "a", admin.addr).await;
    t.router.set_routes(&[
        http_route("web.test", "/", "web"),
        http_route("web.test", "/admin/", "admin"),
    ]);
    let mut c = Conn::connect(t.http).await;
    c.send("GET /admin#x HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert!(
        r.status() == 400 || r.text() == "admin /admin",
        "{}: {:?}",
        r.head,
        r.text()
    );
}

/// A request split at every byte (a small body, then a pipelined request) is the same request.
#[tokio::test]
async fn request_split_at_every_byte_is_served_whole_and_in_order() {
    let b = scripted(|req| {
        ok(format!(
            "{} {}",
            target(req),
            String::from_utf8_lossy(&req.body)
        ))
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.s.set_nodelay(true).unwrap();
    let req = "POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nhelloGET /g HTTP/1.1\r\nHost: web.test\r\n\r\n";
    for byte in req.as_bytes() {
        c.send([*byte]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(c.response(false).await.text(), "/p hello");
    assert_eq!(c.response(false).await.text(), "/g ");
}

/// Heads whose framing is ambiguous or malformed (RFC 9112 §5.1, §5.2, §6.3) are refused (400,
/// or a close) and never reach the backend; a bare-LF head, which is unambiguous, is served
/// and goes upstream with CRLFs.
#[tokio::test]
async fn ambiguous_or_malformed_framing_never_reaches_the_backend() {
    let b = echo_target().await;
    let t = routed(&b).await;
    for head in [
        "Content-Length : 5\r\n",
        "X-A: 1\r\n Content-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 0x5\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "X-A: a\rContent-Length: 5\r\n",
        "X-A: a\0b\r\nContent-Length: 5\r\n",
    ] {
        let mut c = Conn::connect(t.http).await;
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: web.test\r\n{head}\r\nhelloGET /y HTTP/1.1\r\nHost: web.test\r\n\r\n"
        );
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.s, req.as_bytes()).await;
        let (closed, got) = c.close_within(Duration::from_secs(2)).await;
        assert!(
            closed && (got.is_empty() || got.starts_with("HTTP/1.1 400 ")),
            "{head:?}: closed: {closed}: {got:?}"
        );
        let seen: Vec<String> = b.requests().iter().map(|m| m.head.clone()).collect();
        assert!(seen.is_empty(), "{head:?} reached the backend: {seen:#?}");
    }
    let mut c = Conn::connect(t.http).await;
    c.send("GET /lf HTTP/1.1\nHost: web.test\n\n").await;
    assert_eq!(c.response(false).await.text(), "/lf");
}

// ---- The router's own answers ---------------------------------------------------------------

/// RFC 9110 §9.3.2: no content in an answer to HEAD. The 404/503 bodies the router writes after
/// such a head are read by the client as the start of its next response (hyper drops them).
#[tokio::test]
async fn own_answers_to_head_carry_no_body() {
    let b = echo_target().await;
    let t = routed(&b).await;
    t.router.set_routes(&[
        http_route("web.test", "/", "web"),
        http_route("empty.test", "/", "nobody"),
    ]);
    let mut c = Conn::connect(t.http).await;
    for (host, status) in [("nowhere.test", 404), ("empty.test", 503)] {
        c.send(format!("HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .await;
        let r = c.response(true).await;
        assert_eq!(r.status(), status, "{}", r.head);
        let (closed, extra) = c.close_within(Duration::from_millis(300)).await;
        assert!(
            extra.is_empty(),
            "HEAD {host}: the answer had a body: {extra:?}"
        );
        assert!(!closed, "HEAD {host}: closed");
    }
    c.send(get("/next")).await;
    assert_eq!(c.response(false).await.text(), "/next");
}

/// RFC 9112 §9.6: a request with `Connection: close` gets `Connection: close` and then the
/// close, its 404 too (it now stays open until the header read timeout).
#[tokio::test]
async fn own_answers_honour_the_clients_connection_close() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 404, "{}", r.head);
    assert_eq!(r.get("connection"), Some("close"), "{}", r.head);
    let (closed, extra) = c.close_within(Duration::from_secs(2)).await;
    assert!(closed, "still open 2 s after the 404; then: {extra:?}");
}

/// Own 4xx answers count in the route's metrics, as on the hyper path: a 413 for a routed host
/// (now counted as `unmatched`) and a 408 for a body that stopped coming (not counted at all).
#[tokio::test]
async fn own_4xx_answers_are_counted_under_their_route() {
    let b = echo_target().await;
    let mut config = Config::default();
    config.limits.max_request_body = 100;
    config.limits.request_timeout = Duration::from_millis(300);
    let t = routed_with(config, &b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1000\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status(), 413);
    let mut c = Conn::connect(t.http).await;
    c.send("POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    assert_eq!(c.response(false).await.status(), 408);
    let m = t.router.metrics();
    let line = "slipway_router_requests_total{route=\"web.test/\",status=\"4xx\"} 2";
    assert!(m.contains(line), "no {line:?} in:\n{m}");
}

// ---- Retries --------------------------------------------------------------------------------

/// A backend that restarted: every pooled connection closes on the next request without an
/// answer. A GET is sent again on a new connection, not on the next pooled one (which would be
/// just as dead: four of them used up every attempt, and the client got a 503).
#[tokio::test]
async fn after_a_dead_pooled_connection_the_request_goes_on_a_new_one() {
    let b = scripted_by_connection(|req, conn, nth| match (conn, nth) {
        // The first five connections: one slow answer each (so the five overlap), then the
        // backend "restarts" and drops them at their next request.
        (0..5, 0) => Reply::parts(
            [
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n".to_string(),
                "old".into(),
            ],
            Duration::from_millis(300),
        ),
        (0..5, _) => Reply::raw("").close(),
        _ => ok(format!("new {}", target(req))),
    })
    .await;
    let t = routed(&b).await;
    let first: Vec<_> = (0..5)
        .map(|_| {
            let addr = t.http;
            tokio::spawn(async move {
                let mut c = Conn::connect(addr).await;
                c.send(get("/one")).await;
                c.response(false).await.text()
            })
        })
        .collect();
    for f in first {
        assert_eq!(f.await.unwrap(), "old");
    }
    assert_eq!(b.accepted(), 5, "the five requests did not overlap");
    // The pool holds five connections the backend will drop unanswered.
    let (status, body) = fresh_get(&t, "/two").await;
    assert_eq!((status, body.as_str()), (200, "new /two"));
}

/// RFC 9110 §9.2.2: "A proxy MUST NOT automatically retry non-idempotent requests." A method
/// the router does not know is not known to be idempotent; once sent, it is not sent again.
#[tokio::test]
async fn a_sent_request_of_unknown_method_is_not_sent_again() {
    let b = scripted(|req| {
        if req.start_line().starts_with("CHARGE ") {
            Reply::raw("").close() // took it, then died without answering
        } else {
            ok("fine")
        }
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    assert_eq!(c.response(false).await.text(), "fine"); // now pooled
    c.send("CHARGE /card HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 502, "{}", r.head);
    let charges = b
        .requests()
        .iter()
        .filter(|m| m.start_line().starts_with("CHARGE "))
        .count();
    assert_eq!(charges, 1, "the card was charged {charges} times");
}

// ---- Forwarding headers ---------------------------------------------------------------------

/// A client's `X-Forwarded-Proto`/`-Port`/`X-Request-Start` never reach the backend: ours do.
#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("GET / HTTP/1.1\r\nHost: web.test\r\nX-Forwarded-Proto: https\r\nx-forwarded-port: 443\r\nX-Request-Start: 1\r\nX-FORWARDED-PROTO: https\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    let seen = &b.requests()[0];
    assert_eq!(seen.all("x-forwarded-proto"), ["http"], "{}", seen.head);
    let port = t.http.port().to_string();
    assert_eq!(
        seen.all("x-forwarded-port"),
        [port.as_str()],
        "{}",
        seen.head
    );
    let start = seen.all("x-request-start");
    assert!(start.len() == 1 && start[0] != "1", "{}", seen.head);
}

/// RFC 9110 §5.3: several `X-Forwarded-For` lines are one list. Keeping the first line only
/// drops the later hops, e.g. the one a proxy in front of the router added on its own line,
/// and keeps the client's forged one next to ours (the hyper path does the same).
#[tokio::test]
async fn x_forwarded_for_lines_are_one_list() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("GET / HTTP/1.1\r\nHost: web.test\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    let seen = &b.requests()[0];
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["198.51.100.1, 203.0.113.7, 127.0.0.1"],
        "{}",
        seen.head
    );
}

// ---- Responses: framing as the client sees it -----------------------------------------------

/// A backend's `Connection: content-length` must not leave the client without the body's end:
/// the plain path drops the length but keeps the connection open (hyper writes one back).
#[tokio::test]
async fn response_connection_naming_content_length_keeps_the_body_framed() {
    let b = scripted(|_| {
        Reply::raw("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    let (closed, got) = c.close_within(Duration::from_secs(1)).await;
    let head = got.to_ascii_lowercase();
    let framed = head.contains("\r\ncontent-length: 2\r\n")
        || head.contains("\r\ntransfer-encoding: chunked\r\n")
        || (closed && head.contains("\r\nconnection: close\r\n"));
    assert!(
        framed,
        "no way to find the end of the body (closed: {closed}): {got:?}"
    );
}

/// hyper's client takes up to 100 header lines; a response with 80 is relayed, not a 502.
#[tokio::test]
async fn response_with_80_header_lines_is_relayed() {
    let b = scripted(|_| {
        let mut r = "HTTP/1.1 200 OK\r\n".to_string();
        for i in 0..80 {
            r.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        Reply::raw(r + "Content-Length: 2\r\n\r\nok")
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(r.get("x-h79"), Some("79"), "{}", r.head);
}

/// RFC 9110 §8.6: `Content-Length: 2, 2` may be taken as 2 (hyper does); not a 502.
#[tokio::test]
async fn response_length_listing_one_value_twice_is_relayed() {
    let b = scripted(|_| Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")).await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    let (_, got) = c.close_within(Duration::from_millis(500)).await;
    assert!(
        got.starts_with("HTTP/1.1 200 ") && got.ends_with("\r\n\r\nok"),
        "{got:?}"
    );
    // Passed on as one value: the client may not take lists.
    assert!(got.contains("content-length: 2\r\n"), "{got:?}");
}

/// A request's `Content-Length: 5, 5` reaches the backend as one value.
#[tokio::test]
async fn request_length_listing_one_value_twice_goes_out_as_one() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5, 5\r\n\r\nhello")
        .await;
    assert_eq!(c.response(false).await.status(), 200);
    let seen = &b.requests()[0];
    assert_eq!(seen.all("content-length"), ["5"], "{}", seen.head);
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, on both paths (a chunked upload
/// goes to hyper's), and reaches no backend.
#[tokio::test]
async fn a_request_without_host_is_400_on_both_paths() {
    let b = echo_target().await;
    let t = routed(&b).await;
    for req in [
        "GET / HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = Conn::connect(t.http).await;
        c.send(req).await;
        let r = c.response(false).await;
        assert_eq!(r.status(), 400, "{req:?}: {r:?}");
        assert!(r.text().contains("Host"), "{req:?}: {r:?}");
    }
    assert!(b.requests().is_empty());
}

/// A chunked body malformed in its first bytes: nothing went to the client yet, so it gets a
/// 502 saying which backend failed, not a silent close.
#[tokio::test]
async fn a_malformed_chunked_body_from_the_start_is_502() {
    let b = scripted(|_| {
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n")
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 502, "{r:?}");
    assert!(r.text().contains("the backend web failed"), "{r:?}");
}

/// Interim 100 and 103 heads, a chunk extension and trailers, each byte in its own write:
/// the client gets the final response whole, and the upstream connection is used again.
#[tokio::test]
async fn response_split_at_every_byte_is_relayed_and_its_connection_reused() {
    let resp = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;n=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
    let b = scripted(move |_| {
        let bytes: Vec<Vec<u8>> = resp.bytes().map(|c| vec![c]).collect();
        Reply::parts(bytes, Duration::from_millis(1))
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    for path in ["/1", "/2"] {
        c.send(get(path)).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (200, "hello world"),
            "{}",
            r.head
        );
    }
    assert_eq!(b.accepted(), 1, "the upstream connection was not reused");
}

// ---- The pool: no response reaches a client it was not for ----------------------------------

/// Bytes a backend sends beyond a response's end (past its `Content-Length`, a body on a
/// HEAD or 204 answer, an unasked response later on) never reach the next client.
#[tokio::test]
async fn bytes_beyond_a_responses_end_never_reach_another_client() {
    const STOLEN: &str = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen";
    let b = scripted(|req| match target(req) {
        "/extra" => Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok{STOLEN}"
        )),
        "/head" => Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{STOLEN}",
            STOLEN.len()
        )),
        "/204" => Reply::raw(format!("HTTP/1.1 204 No Content\r\n\r\n{STOLEN}")),
        "/late" => Reply::parts(
            ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", STOLEN],
            Duration::from_millis(100),
        ),
        t => ok(t),
    })
    .await;
    let t = routed(&b).await;
    for (method, path) in [
        ("GET", "/extra"),
        ("HEAD", "/head"),
        ("GET", "/204"),
        ("GET", "/late"),
    ] {
        let mut c = Conn::connect(t.http).await;
        c.send(format!(
            "{method} {path} HTTP/1.1\r\nHost: web.test\r\n\r\n"
        ))
        .await;
        let r = c.response(method == "HEAD").await;
        assert!(matches!(r.status(), 200 | 204), "{path}: {}", r.head);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            fresh_get(&t, "/mine").await,
            (200, "/mine".into()),
            "after {path}"
        );
    }
}

/// A response that came after its 504 stays on the dropped connection.
#[tokio::test]
async fn a_late_response_after_a_504_never_reaches_another_client() {
    let b = scripted(|req| match target(req) {
        "/slow" => Reply::parts(
            [
                &b""[..],
                &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"[..],
            ],
            Duration::from_millis(500),
        ),
        t => ok(t),
    })
    .await;
    let mut config = Config::default();
    config.limits.response_timeout = Duration::from_millis(200);
    let t = routed_with(config, &b).await;
    assert_eq!(fresh_get(&t, "/slow").await.0, 504);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fresh_get(&t, "/mine").await, (200, "/mine".into()));
}

/// A client gone mid-body: its upstream connection, with the rest of that body still coming,
/// is not pooled.
#[tokio::test]
async fn a_client_leaving_mid_body_does_not_poison_the_pool() {
    let b = scripted(|req| match target(req) {
        "/big" => Reply::parts(
            [
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{}",
                    "a".repeat(1000)
                )
                .into_bytes(),
                vec![b'b'; 999_000],
            ],
            Duration::from_millis(300),
        ),
        t => ok(t),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/big")).await;
    let mut first = [0u8; 64];
    let n = tokio::io::AsyncReadExt::read(&mut c.s, &mut first)
        .await
        .unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(c);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fresh_get(&t, "/mine").await, (200, "/mine".into()));
}

/// A backend gone mid-body: the client sees its connection close before the end (never a
/// body that looks complete), and the next request is served.
#[tokio::test]
async fn a_backend_leaving_mid_body_closes_the_client_connection() {
    let b = scripted(|req| match target(req) {
        "/cut" => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").close(),
        t => ok(t),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/cut")).await;
    let (closed, got) = c.close_within(Duration::from_secs(2)).await;
    assert!(
        closed && got.ends_with("\r\n\r\nhello"),
        "closed: {closed}: {got:?}"
    );
    assert_eq!(fresh_get(&t, "/mine").await, (200, "/mine".into()));
}

/// Issue 14: a malformed chunk size in the client's upload is the client's fault: 400 saying
/// so, not the 502 that blames the backend — on a connection's first request (the plain path
/// hands chunked uploads to hyper) and on one hyper already serves.
#[tokio::test]
async fn a_malformed_chunk_size_from_the_client_is_400_on_both_paths() {
    let b = scripted(|req| ok(req.body.clone())).await;
    let t = routed(&b).await;
    let bad = "POST /up HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    // First request: the plain path hands it over.
    let mut c = Conn::connect(t.http).await;
    c.send(bad).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 400, "{r:?}");
    assert!(r.text().contains("request body"), "{r:?}");
    // A good chunked upload first keeps the connection on hyper's path; then the bad one.
    let mut c = Conn::connect(t.http).await;
    c.send("POST /up HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "hello"), "{r:?}");
    c.send(bad.replace("zz", "ffffffffffffffffffff")).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 400, "{r:?}");
    // Counted as the client's errors, not the backend's.
    let metrics = t.router.metrics();
    assert!(
        metrics.contains("route=\"web.test/\",status=\"4xx\"} 2")
            && metrics.contains("route=\"web.test/\",status=\"5xx\"} 0"),
        "{metrics}"
    );
}
