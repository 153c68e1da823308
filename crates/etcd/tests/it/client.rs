use slipway_etcd::{
    Client, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Error, EventType,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchRequest,
};
use slipway_testkit::etcd::etcd_cluster;
use std::time::Duration;

fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        prev_kv: false,
    }
}

#[tokio::test]
async fn kv_txn_and_leases_on_a_real_etcd() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(etcd) = etcd_cluster(1) else { return };
    let c = Client::connect(&etcd.client_urls()).await.unwrap();

    let r = c.put(&put("/t/a", "1", 0)).await.unwrap();
    let created = r.header.revision;
    c.put(&put("/t/b", "2", 0)).await.unwrap();
    c.put(&put("/u", "x", 0)).await.unwrap();
    let a = c.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision),
        (&b"1"[..], created)
    );
    let all = c.range(&RangeRequest::prefix("/t/")).await.unwrap();
    assert_eq!(
        all.kvs.iter().map(|k| k.key.as_slice()).collect::<Vec<_>>(),
        [&b"/t/a"[..], b"/t/b"]
    );
    assert!(c.get("/nothing").await.unwrap().is_none());

    // A txn whose compare fails runs its failure branch and changes nothing.
    let t = c
        .txn(&TxnRequest {
            compare: vec![Compare::new(
                "/t/a",
                CompareResult::Equal,
                CompareTarget::Create(0),
            )],
            success: vec![RequestOp::Put(put("/t/a", "clobbered", 0))],
            failure: vec![RequestOp::Range(RangeRequest::key("/t/a"))],
        })
        .await
        .unwrap();
    assert!(!t.succeeded);
    let got = t.responses[0].response_range.as_ref().unwrap();
    assert_eq!(got.kvs[0].value, b"1");
    // One that holds runs its success branch.
    let t = c
        .txn(&TxnRequest {
            compare: vec![
                Compare::new(
                    "/t/a",
                    CompareResult::Equal,
                    CompareTarget::Mod(a.mod_revision),
                ),
                Compare::new(
                    "/t/a",
                    CompareResult::Equal,
                    CompareTarget::Value(b"1".to_vec()),
                ),
                Compare::new("/t/a", CompareResult::Equal, CompareTarget::Version(1)),
            ],
            success: vec![RequestOp::Put(put("/t/a", "2", 0))],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(c.get("/t/a").await.unwrap().unwrap().value, b"2");

    let d = c
        .delete_range(&DeleteRangeRequest {
            key: b"/t/b".to_vec(),
            range_end: vec![],
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!((d.deleted, d.prev_kvs[0].value.as_slice()), (1, &b"2"[..]));

    // Leases: a key under a revoked lease is gone; keep-alive of a gone lease says so.
    let lease = c.lease_grant(5).await.unwrap();
    assert!(lease.ttl >= 5);
    c.put(&put("/leased", "v", lease.id)).await.unwrap();
    assert_eq!(c.lease_keep_alive(lease.id).await.unwrap(), Some(lease.ttl));
    assert!(c.lease_time_to_live(lease.id).await.unwrap().unwrap() > 0);
    c.lease_revoke(lease.id).await.unwrap();
    assert!(c.get("/leased").await.unwrap().is_none());
    assert_eq!(c.lease_keep_alive(lease.id).await.unwrap(), None);
    assert_eq!(c.lease_time_to_live(lease.id).await.unwrap(), None);
    c.lease_revoke(lease.id).await.unwrap();
    // A put under a lease that does not exist is refused, naming the endpoint.
    let e = c.put(&put("/x", "v", 42)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Refused { endpoint, .. } if endpoint == &etcd.client_url(0)),
        "{e}"
    );

    let status = c.status_any().await.unwrap();
    assert!(status.version.starts_with("3."), "{status:?}");
    assert_eq!(c.member_list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_watch_replays_from_a_revision_then_follows() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(etcd) = etcd_cluster(1) else { return };
    let c = Client::connect(&etcd.client_urls()).await.unwrap();
    let first = c.put(&put("/w/a", "1", 0)).await.unwrap().header.revision;
    c.delete_range(&DeleteRangeRequest {
        key: b"/w/a".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut w = c.watch(&WatchRequest::prefix("/w/", first)).await.unwrap();
    c.put(&put("/w/b", "2", 0)).await.unwrap();
    c.put(&put("/other", "2", 0)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("watch events within 5 s")
            .unwrap()
            .expect("the watch goes on");
        for e in r.events {
            let value = match e.kind {
                EventType::Put => e.kv.value.clone(),
                EventType::Delete => e.prev_kv.expect("prev_kv asked for").value,
            };
            seen.push((e.kind, String::from_utf8(e.kv.key).unwrap(), value));
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Put, "/w/a".into(), b"1".to_vec()),
            (EventType::Delete, "/w/a".into(), b"1".to_vec()),
            (EventType::Put, "/w/b".into(), b"2".to_vec()),
        ]
    );

    // History that was compacted away is an error, not a silent gap.
    let now = c.put(&put("/w/c", "3", 0)).await.unwrap().header.revision;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v3/kv/compaction", etcd.client_url(0)))
        .body(format!(r#"{{"revision":"{now}"}}"#))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let e = match c.watch(&WatchRequest::prefix("/w/", first)).await {
        Ok(mut w) => w.next().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, Error::Compacted { .. }), "{e}");
}

#[tokio::test]
async fn an_unreachable_etcd_is_named_and_a_dead_member_is_skipped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = Client::connect(&dead).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Unavailable { .. }), "{text}");
    assert!(text.contains(&dead) && text.contains("--etcd"), "{text}");
    for bad in [
        "",
        "etcd:2379",
        "http://h:1/path",
        "http://u:p@h:1",
        "ftp://h:1",
    ] {
        assert!(
            matches!(Client::new(bad), Err(Error::Config(_))),
            "{bad:?} accepted"
        );
    }

    let Some(etcd) = etcd_cluster(1) else { return };
    // The dead endpoint first: calls go on to the live one.
    let c = Client::connect(&format!("{dead},{}", etcd.client_urls()))
        .await
        .unwrap();
    c.put(&put("/k", "v", 0)).await.unwrap();
    assert_eq!(c.get("/k").await.unwrap().unwrap().value, b"v");
    let mut w = c.watch(&WatchRequest::prefix("/k", 0)).await.unwrap();
    assert_eq!(w.endpoint(), etcd.client_url(0));
    c.put(&put("/k", "w", 0)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.events[0].kv.value, b"w");
}

#[tokio::test]
async fn an_endless_watch_line_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A fake member that confirms the watch, then streams one line that never ends.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let created = r#"{"result":{"header":{"revision":"1"},"created":true}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{created}\n{{\"result\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 << 10];
        // Stops when the client hangs up.
        while s.write_all(&chunk).await.is_ok() {}
    });
    let c = Client::new(&url).unwrap();
    let mut w = c.watch(&WatchRequest::prefix("/", 0)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("refused, not buffered without end")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Protocol { .. }) && e.to_string().contains(&url),
        "{e}"
    );
}

/// A watch held by a member that loses its cluster's leader ends (etcd's "require leader"),
/// so the caller re-watches through another member instead of following a silent stream.
#[tokio::test]
async fn a_watch_on_a_member_without_a_leader_ends() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(mut etcd) = etcd_cluster(3) else {
        return;
    };
    let c = Client::connect(&etcd.client_url(0)).await.unwrap();
    let mut w = c.watch(&WatchRequest::prefix("/w/", 0)).await.unwrap();
    // Two of three gone: member 0 has no quorum, so no leader after its election timeout.
    etcd.stop_member(1);
    etcd.stop_member(2);
    let end = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("the watch ends once its member has no leader");
    assert!(
        matches!(end, Ok(None) | Err(Error::Refused { .. })),
        "{:?}",
        end.map(|r| r.map(|r| r.events.len()))
    );
}

/// A member without a leader refuses at once, and a client listing it first goes on to the
/// next member instead of waiting out etcd's request timeout.
#[tokio::test]
async fn a_member_without_a_leader_refuses_at_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(mut etcd) = etcd_cluster(3) else {
        return;
    };
    let alone = Client::connect(&etcd.client_url(0)).await.unwrap();
    alone.put(&put("/k", "v", 0)).await.unwrap();
    etcd.stop_member(1);
    etcd.stop_member(2);
    // Member 0 notices after its election timeout (1 s by default); a request caught in the
    // transition may wait for etcd's own timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !matches!(alone.get("/k").await, Err(e) if e.to_string().contains("no leader")) {
        assert!(
            std::time::Instant::now() < deadline,
            "member 0 still serves"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let asked = std::time::Instant::now();
    let e = alone.get("/k").await.unwrap_err();
    let took = asked.elapsed();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}: {e}");
    // Its own status is still readable (for `cluster status`).
    assert!(alone.status_any().await.is_ok());
}

/// A member that floods a watch with empty lines is read through (lines are no longer drained
/// one by one from the buffer's front, which moved the rest of the buffer for every line): the
/// event after 16 MiB of newlines arrives (3.1 s before on an idle machine, 0.6 s now).
#[tokio::test]
async fn a_flood_of_empty_watch_lines_is_read_through() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let created = r#"{"result":{"header":{"revision":"1"},"created":true}}"#;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{created}\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let newlines = vec![b'\n'; 1 << 20];
        for _ in 0..16 {
            if s.write_all(&newlines).await.is_err() {
                return;
            }
        }
        let event = r#"{"result":{"header":{"revision":"2"},"events":[{"kv":{"key":"L2s=","value":"dg==","mod_revision":"2"}}]}}"#;
        let _ = s.write_all(format!("{event}\n").as_bytes()).await;
        let _ = s.shutdown().await;
    });
    let c = Client::new(&url).unwrap();
    let mut w = c.watch(&WatchRequest::prefix("/", 0)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("the event after the newlines within 20 s")
        .unwrap()
        .unwrap();
    assert_eq!(r.events[0].kv.key, b"/k");
}

/// A line that grows in small pieces up to the limit is refused in time linear in its size:
/// each byte is looked at for a newline once (it was looked at again with every piece: 2.4 s
/// for the 4 MiB limit on an idle machine, 0.1 s now).
#[tokio::test]
async fn a_long_watch_line_is_refused_promptly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let created = r#"{"result":{"header":{"revision":"1"},"created":true}}"#;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{created}\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let piece = vec![b' '; 4 << 10];
        while s.write_all(&piece).await.is_ok() {}
    });
    let c = Client::new(&url).unwrap();
    let mut w = c.watch(&WatchRequest::prefix("/", 0)).await.unwrap();
    let asked = std::time::Instant::now();
    let e = w.next().await.unwrap_err();
    let took = asked.elapsed();
    assert!(matches!(&e, Error::Protocol { .. }), "{e}");
    assert!(
        took < Duration::from_millis(1500),
        "a {} MiB line took {took:?} to refuse",
        slipway_etcd::MAX_WATCH_LINE >> 20
    );
}
