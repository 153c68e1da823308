use slipway_etcd::{Client, Election, Error, PutRequest, RequestOp, TxnRequest};
use slipway_testkit::etcd::etcd_cluster;
use std::time::{Duration, Instant};

fn put(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease: 0,
        prev_kv: false,
    })
}

async fn client(urls: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::connect(urls).await.unwrap()
}

#[tokio::test]
async fn one_of_two_leads_and_the_other_takes_over_when_it_resigns() {
    let Some(etcd) = etcd_cluster(1) else { return };
    let c = client(&etcd.client_urls()).await;
    let election = Election::new(c.clone(), "scheduler").unwrap();
    let a = election.campaign("a").await.unwrap();
    assert!(a.is_current());
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"a");

    let b_election = Election::new(client(&etcd.client_urls()).await, "scheduler").unwrap();
    let mut b = tokio::spawn(async move { b_election.campaign("b").await });
    // B waits while A leads.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut b)
            .await
            .is_err(),
        "b won while a leads"
    );
    a.txn_if_leader(vec![put("/state", "by a")]).await.unwrap();
    // Another election name is independent.
    let other = Election::new(c.clone(), "blob-gc").unwrap();
    other.campaign("x").await.unwrap();

    let a_epoch = a.epoch();
    a.resign().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), b)
        .await
        .expect("b leads once a resigned")
        .unwrap()
        .unwrap();
    assert!(b.is_current());
    assert!(
        b.epoch() > a_epoch,
        "epochs increase: {} after {a_epoch}",
        b.epoch()
    );
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"b");
    b.txn_if_leader(vec![put("/state", "by b")]).await.unwrap();
    assert_eq!(c.get("/state").await.unwrap().unwrap().value, b"by b");
}

#[tokio::test]
async fn a_dropped_leader_steps_down_and_a_bad_name_is_refused() {
    let Some(etcd) = etcd_cluster(1) else { return };
    let c = client(&etcd.client_urls()).await;
    assert!(matches!(
        Election::new(c.clone(), "a/b"),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Election::new(c.clone(), ""),
        Err(Error::Config(_))
    ));
    let election = Election::new(c.clone(), "gc").unwrap();
    let a = election.campaign("a").await.unwrap();
    let b_election = election.clone();
    let b = tokio::spawn(async move { b_election.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a);
    let b = tokio::time::timeout(Duration::from_secs(5), b)
        .await
        .expect("b leads once a's leadership is dropped")
        .unwrap()
        .unwrap();
    assert!(b.is_current());
}

/// A leader whose process stops (its runtime thread blocked: no keep-alive runs) past its
/// TTL is replaced; once it runs again it knows it does not lead, and its writes are refused
/// by the local check and by etcd's compare alike.
#[tokio::test]
async fn a_paused_leader_is_replaced_and_fenced() {
    let Some(etcd) = etcd_cluster(1) else { return };
    let urls = etcd.client_urls();
    let ttl = Duration::from_secs(2);
    let (won_tx, won_rx) = std::sync::mpsc::channel();
    let paused = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = client(&urls).await;
            let election = Election::new(c.clone(), "scheduler").unwrap().with_ttl(ttl);
            let a = election.campaign("a").await.unwrap();
            won_tx.send(a.epoch()).unwrap();
            // The pause: nothing on this runtime runs, keep-alives included.
            std::thread::sleep(Duration::from_secs(5));
            let current = a.is_current();
            let local = a.txn_if_leader(vec![put("/state", "by a")]).await;
            // etcd's side alone: the fence compare in a plain transaction.
            let remote = c
                .txn(&TxnRequest {
                    compare: vec![a.fence()],
                    success: vec![put("/state", "by a, unfenced")],
                    failure: vec![],
                })
                .await
                .unwrap();
            (current, local.map(|_| ()), remote.succeeded)
        })
    });
    let a_epoch = tokio::task::spawn_blocking(move || won_rx.recv().unwrap())
        .await
        .unwrap();

    let c = client(&etcd.client_urls()).await;
    let election = Election::new(c.clone(), "scheduler").unwrap().with_ttl(ttl);
    let started = Instant::now();
    let b = tokio::time::timeout(Duration::from_secs(10), election.campaign("b"))
        .await
        .expect("b leads once a's lease expired")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "b led after {:?}, before a's lease could expire",
        started.elapsed()
    );
    assert!(b.epoch() > a_epoch);
    b.txn_if_leader(vec![put("/state", "by b")]).await.unwrap();

    let (current, local, remote) = tokio::task::spawn_blocking(move || paused.join().unwrap())
        .await
        .unwrap();
    assert!(!current, "the paused leader still believes it leads");
    assert!(
        matches!(local, Err(Error::NotLeader { epoch, .. }) if epoch == a_epoch),
        "{local:?}"
    );
    assert!(!remote, "etcd ran a write fenced by a lost leadership");
    assert_eq!(c.get("/state").await.unwrap().unwrap().value, b"by b");
}

/// A TCP proxy to `upstream` that holds back the answer to a lease grant by `delay` and, once
/// `cut` is set, drops every connection and refuses new ones (a partition). Its URL.
async fn slow_grant_proxy(
    upstream: String,
    delay: Duration,
    cut: tokio::sync::watch::Receiver<bool>,
) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            if *cut.borrow() {
                continue;
            }
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let grant = Arc::new(AtomicBool::new(false));
            let (g, mut c1, mut c2) = (grant.clone(), cut.clone(), cut.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = tokio::select! {
                        r = cr.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                        _ = c1.wait_for(|c| *c) => return,
                    };
                    if buf[..n].windows(15).any(|w| w == b"/v3/lease/grant") {
                        g.store(true, Ordering::SeqCst);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = tokio::select! {
                        r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                        _ = c2.wait_for(|c| *c) => return,
                    };
                    if grant.swap(false, Ordering::SeqCst) {
                        tokio::time::sleep(delay).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// The lease's TTL runs at etcd from the moment it granted it, not from when its answer
/// arrived: a leader whose grant answer was slow, then cut off from etcd, must not believe it
/// leads once etcd expired its lease (another may lead by then).
#[tokio::test]
async fn a_slow_grant_does_not_stretch_the_local_deadline() {
    let Some(etcd) = etcd_cluster(1) else { return };
    let direct = client(&etcd.client_urls()).await;
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let delay = Duration::from_secs(3);
    let proxy = slow_grant_proxy(etcd.client_url(0), delay, cut_rx).await;
    let c = client(&proxy).await;
    let election = Election::new(c, "scheduler")
        .unwrap()
        .with_ttl(Duration::from_secs(5));
    let asked = Instant::now();
    let a = election.campaign("a").await.unwrap();
    assert!(asked.elapsed() >= delay, "the grant was not slowed");
    // Cut off from etcd: no keep-alive reaches it any more.
    cut_tx.send_replace(true);
    // etcd deletes the leader's key when it expires the lease.
    let seen = Election::new(direct, "scheduler").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.leader().await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "etcd never expired the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !a.is_current(),
        "etcd expired the lease {:?} after the campaign began, yet the leader still believes it \
         leads",
        asked.elapsed()
    );
}
