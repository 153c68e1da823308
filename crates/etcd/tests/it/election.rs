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
