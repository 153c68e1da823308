//! The router's HTTP/1.1 proxying pinned down at the byte level: raw TCP clients write exact
//! bytes, scripted backends answer exact bytes (chunked in pieces, close-delimited, 204/304,
//! `Connection: close`, garbage), and what crosses each socket is asserted. Any HTTP/1.1 path
//! of the router (hyper's, or a hand-written fast path) must pass these unchanged.

mod attacks;
mod wire;

use super::*;
use std::time::Instant;
use wire::{Conn, Framing, LIMIT, Reply, Scripted, ok, pattern, scripted};

async fn routed_with(config: Config, b: &Scripted) -> TestRouter {
    let t = start(config).await;
    t.add("web", "b", b.addr).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    t
}

async fn routed(b: &Scripted) -> TestRouter {
    routed_with(Config::default(), b).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: web.test\r\n\r\n")
}

/// The request target of a request the backend received.
fn target(m: &wire::Msg) -> &str {
    m.start_line().split(' ').nth(1).unwrap_or("")
}

/// A backend answering `200` with the request's target as the body.
async fn echo_target() -> Scripted {
    scripted(|req| ok(target(req))).await
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(format!("{}{}{}", get("/one"), get("/two"), get("/three")))
        .await;
    for path in ["/one", "/two", "/three"] {
        let r = c.response(false).await;
        assert_eq!((r.status(), r.text().as_str()), (200, path), "{}", r.head);
    }
    let seen: Vec<String> = b.requests().iter().map(|m| target(m).into()).collect();
    assert_eq!(seen, ["/one", "/two", "/three"]);
}

#[tokio::test]
async fn head_response_keeps_its_length_and_has_no_body() {
    let b = scripted(|req| {
        if req.start_line().starts_with("HEAD ") {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        } else {
            ok("hello")
        }
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("HEAD / HTTP/1.1\r\nHost: web.test\r\n\r\n").await;
    let r = c.response(true).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.get("content-length"), Some("5"), "{}", r.head);
    assert_eq!(r.get("transfer-encoding"), None, "{}", r.head);
    // Body bytes after the head would be read as the next response's start.
    c.send(get("/")).await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "hello"),
        "{}",
        r.head
    );
    assert!(b.requests()[0].start_line().starts_with("HEAD / HTTP/1.1"));
}

#[tokio::test]
async fn no_body_statuses_204_and_304_keep_the_connection_usable() {
    let b = scripted(|req| match target(req) {
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
        "/304" => Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),
        _ => ok("after"),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/204")).await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.get("x-a")), (204, Some("1")), "{}", r.head);
    assert_eq!(r.get("transfer-encoding"), None, "{}", r.head);
    c.send("GET /304 HTTP/1.1\r\nHost: web.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.get("etag")),
        (304, Some("\"v1\"")),
        "{}",
        r.head
    );
    assert_eq!(r.get("transfer-encoding"), None, "{}", r.head);
    c.send(get("/next")).await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "after"),
        "{}",
        r.head
    );
}

#[tokio::test]
async fn chunked_response_in_pieces_is_relayed_and_both_connections_are_reused() {
    // Split inside a chunk, inside a chunk's CRLF and before the final CRLF.
    let b = scripted(|_| {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let parts = [
            format!("{head}5\r\nhel"),
            "lo\r\n6\r\n wor".into(),
            "ld\r\n0\r".into(),
            "\n\r\n".into(),
        ];
        Reply::parts(parts, Duration::from_millis(50))
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    for path in ["/a", "/b", "/c"] {
        c.send(get(path)).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (200, "hello world"),
            "{}",
            r.head
        );
    }
    assert_eq!(
        b.accepted(),
        1,
        "3 chunked responses in a row used {} upstream connections",
        b.accepted()
    );
}

/// The same through hyper's path (an h2c client: HTTP/2 requests are hyper's): a chunked
/// body's end gives its upstream connection back to the pool too.
#[tokio::test]
async fn chunked_responses_on_the_hyper_path_reuse_their_upstream_connection() {
    let b = scripted(|_| {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        Reply::parts(
            [format!("{head}5\r\nhello\r\n"), "0\r\n\r\n".into()],
            Duration::from_millis(20),
        )
    })
    .await;
    let t = routed(&b).await;
    let mut tx = h2c(t.http).await;
    for path in ["/a", "/b", "/c"] {
        let req = hyper::Request::get(format!("http://web.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    assert_eq!(
        b.accepted(),
        1,
        "3 chunked responses used {} upstream connections",
        b.accepted()
    );
}

#[tokio::test]
async fn close_delimited_response_is_relayed_whole() {
    let body = pattern(100_000);
    let sent = body.clone();
    let b = scripted(move |_| {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        let (first, rest) = sent.split_at(30_000);
        let parts = [[head, first.to_vec()].concat(), rest.to_vec()];
        Reply::parts(parts, Duration::from_millis(50)).close()
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert!(
        matches!(r.framing, Framing::Chunked | Framing::Close),
        "{:?}: {}",
        r.framing,
        r.head
    );
    assert_eq!(r.body.len(), body.len(), "{}", r.head);
    assert!(r.body == body, "the body arrived changed");
    if r.framing == Framing::Chunked {
        // The end was marked, so the connection goes on.
        c.send(get("/")).await;
        assert_eq!(c.response(false).await.body.len(), body.len());
    }
}

#[tokio::test]
async fn backend_connection_close_does_not_close_the_client_connection() {
    let b = scripted(|req| {
        let body = target(req);
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n";
        Reply::raw(format!(
            "{head}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .close()
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    for path in ["/1", "/2", "/3"] {
        c.send(get(path)).await;
        let r = c.response(false).await;
        assert_eq!((r.status(), r.text().as_str()), (200, path), "{}", r.head);
        assert_eq!(
            r.get("connection"),
            None,
            "the backend's close is its hop's: {}",
            r.head
        );
    }
    assert_eq!(b.accepted(), 3, "a new upstream connection per request");
}

#[tokio::test]
async fn http10_and_connection_close_requests_are_answered_then_closed() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("GET /ten HTTP/1.0\r\nHost: web.test\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.start_line().starts_with("HTTP/1."), "{}", r.head);
    assert_eq!((r.status(), r.text().as_str()), (200, "/ten"), "{}", r.head);
    let (closed, extra) = c.close_within(LIMIT).await;
    assert!(
        closed && extra.is_empty(),
        "closed: {closed}, then: {extra:?}"
    );
    // Upstream it is an HTTP/1.1 request like any other.
    assert!(b.requests()[0].start_line().ends_with(" HTTP/1.1"));

    let mut c = Conn::connect(t.http).await;
    c.send("GET /close HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "/close"),
        "{}",
        r.head
    );
    assert_eq!(r.get("connection"), Some("close"), "{}", r.head);
    let (closed, extra) = c.close_within(LIMIT).await;
    assert!(
        closed && extra.is_empty(),
        "closed: {closed}, then: {extra:?}"
    );
}

#[tokio::test]
async fn request_bodies_reach_the_backend_byte_for_byte() {
    let b = scripted(|req| ok(req.body.len().to_string())).await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("POST /small HTTP/1.1\r\nHost: web.test\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "11"), "{}", r.head);

    let big = pattern(1 << 20);
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: web.test\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    c.send([head.as_bytes(), &big].concat()).await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "1048576"),
        "{}",
        r.head
    );

    let seen = b.requests();
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[0].get("content-length"), Some("11"));
    assert_eq!(seen[1].framing, Framing::Length, "{}", seen[1].head);
    assert_eq!(seen[1].body.len(), big.len());
    assert!(seen[1].body == big, "the 1 MiB body arrived changed");
}

#[tokio::test]
async fn duplicate_headers_pass_both_ways_in_order() {
    let b = scripted(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send("GET / HTTP/1.1\r\nHost: web.test\r\nX-Custom: one\r\nX-Custom: two\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(
        r.all("set-cookie"),
        ["a=1; Path=/", "b=2; Path=/; HttpOnly"],
        "{}",
        r.head
    );
    let seen = &b.requests()[0];
    assert_eq!(seen.all("x-custom"), ["one", "two"], "{}", seen.head);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let b = scripted(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nConnection: x-internal\r\nKeep-Alive: timeout=5\r\nX-Internal: secret\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(
        "GET / HTTP/1.1\r\nHost: web.test\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "ok"), "{}", r.head);
    for name in [
        "x-internal",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "connection",
    ] {
        assert_eq!(r.get(name), None, "{name} reached the client: {}", r.head);
    }
    assert_eq!(r.get("x-kept"), Some("yes"), "{}", r.head);
    let seen = &b.requests()[0];
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "connection",
    ] {
        assert_eq!(
            seen.get(name),
            None,
            "{name} reached the backend: {}",
            seen.head
        );
    }
    assert_eq!(seen.get("x-kept"), Some("yes"), "{}", seen.head);
    // An `Upgrade` without `Connection: upgrade` asked for nothing: the connection goes on.
    c.send(get("/again")).await;
    assert_eq!(c.response(false).await.status(), 200);
}

/// An IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_http_date(d: &str) -> bool {
    let b = d.as_bytes();
    d.len() == 29 && d.ends_with(" GMT") && b[3] == b',' && b[19] == b':' && b[22] == b':'
}

#[tokio::test]
async fn responses_carry_exactly_one_date_header() {
    let b = scripted(|req| match target(req) {
        "/dated" => Reply::raw(
            "HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
        ),
        _ => ok("ok"),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    for path in ["/undated", "/dated"] {
        c.send(get(path)).await;
        let r = c.response(false).await;
        let dates = r.all("date");
        assert_eq!(dates.len(), 1, "{path}: {}", r.head);
        assert!(is_http_date(dates[0]), "{path}: {}", r.head);
    }
    // The router's own answers too.
    c.send("GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 404, "{}", r.head);
    assert!(r.get("date").is_some_and(is_http_date), "{}", r.head);
}

/// A raw request the router must refuse: what it sent before closing (at most 5 s), and
/// whether the backend saw anything.
async fn refused(t: &TestRouter, b: &Scripted, req: &[u8]) -> String {
    let mut c = Conn::connect(t.http).await;
    // The router may close (reset) while the bytes are still going in.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut c.s, req).await;
    let (closed, got) = c.close_within(LIMIT).await;
    assert!(
        b.requests().is_empty(),
        "it reached the backend; the client got {got:?}"
    );
    assert!(closed, "the router kept the connection open; sent: {got:?}");
    // Other connections are served as before.
    let mut c = Conn::connect(t.http).await;
    c.send(get("/fine")).await;
    assert_eq!(c.response(false).await.text(), "/fine");
    got
}

/// A request whose one header value is `kib` KiB long must be refused: 431 or 400, or a close.
async fn oversized_head_is_refused(kib: usize) {
    let b = echo_target().await;
    let t = routed(&b).await;
    let big = "a".repeat(kib * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: {big}\r\n\r\n");
    let got = refused(&t, &b, req.as_bytes()).await;
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 431") || got.starts_with("HTTP/1.1 400"),
        "{got:?}"
    );
}

#[tokio::test]
async fn request_head_of_1_mib_is_refused_before_the_backend() {
    oversized_head_is_refused(1024).await;
}

#[tokio::test]
async fn request_head_of_200_kib_is_refused_before_the_backend() {
    oversized_head_is_refused(200).await;
}

#[tokio::test]
async fn garbage_request_line_is_refused_and_the_router_keeps_serving() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let got = refused(&t, &b, b"HELLO\r\n\r\n").await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 400"), "{got:?}");
}

#[tokio::test]
async fn backend_closing_idle_connections_causes_no_502() {
    let b = scripted(|_| ok("fresh").close_after(Duration::from_millis(100))).await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    for i in 0..3 {
        c.send(get("/")).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (200, "fresh"),
            "#{i}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The same on a new client connection.
        let mut other = Conn::connect(t.http).await;
        other.send(get("/")).await;
        let r = other.response(false).await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (200, "fresh"),
            "#{i}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn garbage_from_the_backend_is_502_saying_which_backend_failed() {
    let b = scripted(|req| match target(req) {
        "/bad" => Reply::raw("NOT HTTP\r\n\r\n").close(),
        _ => ok("fine"),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/bad")).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 502, "{r:?}");
    let text = r.text();
    assert!(
        text.contains("502 Bad Gateway") && text.contains("backend web"),
        "{text}"
    );
    // The client's connection was not the one at fault.
    c.send(get("/good")).await;
    assert_eq!(c.response(false).await.text(), "fine");
}

async fn short_header_timeout(b: &Scripted) -> TestRouter {
    let mut config = Config::default();
    config.limits.header_read_timeout = Duration::from_millis(300);
    routed_with(config, b).await
}

/// Waits for the router to close `c`: how long it took, and what it sent first.
async fn closed_after(c: &mut Conn, since: Instant) -> (Duration, String) {
    let (closed, got) = c.close_within(LIMIT).await;
    assert!(
        closed,
        "still open 5 s after a 300 ms header read timeout; sent: {got:?}"
    );
    (since.elapsed(), got)
}

#[tokio::test]
async fn stalled_request_head_is_closed_at_the_header_read_timeout() {
    let b = echo_target().await;
    let t = short_header_timeout(&b).await;
    let mut c = Conn::connect(t.http).await;
    let since = Instant::now();
    c.send("GET / HTTP/1.1\r\nHost: x").await;
    let (took, got) = closed_after(&mut c, since).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(b.requests().is_empty());
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_the_header_read_timeout() {
    let b = echo_target().await;
    let t = short_header_timeout(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/")).await;
    assert_eq!(c.response(false).await.status(), 200);
    let since = Instant::now();
    let (took, got) = closed_after(&mut c, since).await;
    // Not at once (it is a keep-alive connection), but not beyond the timeout either.
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn silent_connection_is_closed_at_the_header_read_timeout() {
    let b = echo_target().await;
    let t = short_header_timeout(&b).await;
    let mut c = Conn::connect(t.http).await;
    let since = Instant::now();
    let (took, got) = closed_after(&mut c, since).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn expect_100_continue_gets_100_then_the_final_response() {
    let b = scripted(|req| ok(req.body.clone())).await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(
        "POST /up HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // As curl does: wait up to 1 s for the 100, then send the body anyway.
    let interim = tokio::time::timeout(Duration::from_secs(1), c.response(false)).await;
    c.send("hello").await;
    let interim = interim.expect("no 100 Continue within 1 s");
    assert_eq!(interim.start_line(), "HTTP/1.1 100 Continue", "{interim:?}");
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "hello"), "{r:?}");
    assert_eq!(b.requests()[0].body, b"hello");
}

#[tokio::test]
async fn absolute_form_target_routes_like_origin_form() {
    let web = echo_target().await;
    let shop = scripted(|req| ok(format!("shop {}", target(req)))).await;
    let t = routed(&web).await;
    t.add("shop", "s", shop.addr).await;
    t.router.set_routes(&[
        http_route("web.test", "/", "web"),
        http_route("shop.test", "/", "shop"),
    ]);
    let mut c = Conn::connect(t.http).await;
    c.send("GET http://shop.test/x?y=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "shop /x?y=1"),
        "{r:?}"
    );
    let seen = &shop.requests()[0];
    assert_eq!(seen.start_line(), "GET /x?y=1 HTTP/1.1", "{}", seen.head);
    assert_eq!(seen.get("host"), Some("shop.test"), "{}", seen.head);
    // The target's authority wins over a different Host (RFC 9112 §3.2.2), for the route and
    // for the Host the backend gets.
    c.send("GET http://shop.test/z HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "shop /z"), "{r:?}");
    let seen = &shop.requests()[1];
    assert_eq!(seen.get("host"), Some("shop.test"), "{}", seen.head);
}

#[tokio::test]
async fn large_response_streams_intact_and_the_connection_is_reused() {
    let big = pattern(4 << 20);
    let sent = big.clone();
    let b = scripted(move |req| match target(req) {
        "/big" => ok(&sent),
        _ => ok("small"),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/big")).await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.get("content-length"), Some("4194304"), "{}", r.head);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big, "the 4 MiB body arrived changed");
    c.send(get("/small")).await;
    assert_eq!(c.response(false).await.text(), "small");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused too");
}

#[tokio::test]
async fn request_line_and_headers_reach_the_backend_in_order_byte_for_byte() {
    let b = echo_target().await;
    let t = routed(&b).await;
    let sent = [
        ("Host", "web.test"),
        ("User-Agent", "raw/1.0 (test; +https://x.test/a?b=c)"),
        (
            "Accept",
            "text/html, application/xhtml+xml;q=0.9, */*;q=0.8",
        ),
        ("X-Spaces", "a,  b ;c=\"d e\" ,,  f"),
        ("Cookie", "a=1; b=2;c=3"),
        ("X-Utf8", "café ☕"),
        ("Authorization", "Bearer abc.def-ghi_jkl=="),
        ("X-Last", "z"),
    ];
    let mut req = "GET /a%2Fb/./c?x=1&y=%20&z HTTP/1.1\r\n".to_string();
    for (k, v) in sent {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut c = Conn::connect(t.http).await;
    c.send(format!("{req}\r\n")).await;
    assert_eq!(c.response(false).await.status(), 200);
    let seen = &b.requests()[0];
    assert_eq!(
        seen.start_line(),
        "GET /a%2Fb/./c?x=1&y=%20&z HTTP/1.1",
        "{}",
        seen.head
    );
    // The client's headers in the client's order (names compare case-insensitively); the
    // router's own `X-Forwarded-*` and `X-Request-*` come on top.
    let theirs: Vec<(String, &str)> = seen
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| !k.starts_with("x-forwarded-") && !k.starts_with("x-request-"))
        .collect();
    let ours: Vec<(String, &str)> = sent
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    assert_eq!(theirs, ours, "{}", seen.head);
}

/// A client that leaves while the backend has not answered: the router drops the backend's
/// connection at once (nginx's 499) rather than holding it until the response timeout, and
/// counts the request.
#[tokio::test]
async fn a_client_gone_before_the_answer_drops_the_backend_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            head.extend_from_slice(&b[..n]);
        }
        // Thinking; the router should close this connection before the answer is ready.
        let t0 = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
        let _ = tx.send((closed.map(|r| r.ok()), t0.elapsed()));
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            .await;
    });
    let t = start(Config::default()).await;
    t.add("web", "b", addr).await;
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let mut c = Conn::connect(t.http).await;
    c.send(get("/think")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    let (closed, after) = rx.await.unwrap();
    assert_eq!(
        closed,
        Ok(Some(0)),
        "the backend's connection stayed open ({after:?} after the request)"
    );
    assert!(
        after < Duration::from_secs(1),
        "closed only after {after:?}"
    );
    let line = "slipway_router_requests_total{route=\"web.test/\",status=\"4xx\"} 1";
    assert!(t.router.metrics().contains(line), "{}", t.router.metrics());
}

/// A request the client pipelines while the previous one waits for its backend is read then,
/// kept, and answered after it.
#[tokio::test]
async fn a_request_sent_while_the_previous_one_waits_is_answered_after_it() {
    let b = scripted(|req| match target(req) {
        "/slow" => Reply::parts(
            ["HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", "slow"],
            Duration::from_millis(300),
        ),
        other => ok(other),
    })
    .await;
    let t = routed(&b).await;
    let mut c = Conn::connect(t.http).await;
    c.send(get("/slow")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(get("/fast")).await;
    assert_eq!(c.response(false).await.text(), "slow");
    assert_eq!(c.response(false).await.text(), "/fast");
}
