//! EtcdRegistry beyond the conformance suite: a dead registrant's instances expire by etcd's
//! lease, and a 3-member etcd with one member down still serves registrations and watches.

use slipway_discovery::{EtcdRegistry, EventKind, NewInstance, Registry, Watch};
use slipway_testkit::etcd::etcd_cluster;
use std::time::{Duration, Instant};

fn inst(addr: &str) -> NewInstance {
    NewInstance {
        addr: addr.into(),
        ..Default::default()
    }
}

async fn next(w: &mut Watch, within: Duration) -> slipway_discovery::Event {
    tokio::time::timeout(within, w.recv())
        .await
        .expect("watch event in time")
        .expect("watch stream still open")
}

async fn registry(urls: &str, ttl: Duration) -> EtcdRegistry {
    let _ = rustls::crypto::ring::default_provider().install_default();
    EtcdRegistry::new(slipway_etcd::Client::connect(urls).await.unwrap(), ttl)
}

#[tokio::test]
async fn a_dead_registrants_instance_expires_by_its_lease() {
    let Some(etcd) = etcd_cluster(1) else { return };
    let ttl = Duration::from_secs(2);
    let watcher = registry(&etcd.client_urls(), ttl).await;
    let mut w = watcher.watch(Some("web")).await.unwrap();
    while next(&mut w, Duration::from_secs(5)).await.kind != EventKind::Current {}
    let registering = Instant::now();
    {
        // The registrant goes away without deregistering (as a crashed process): only
        // etcd's lease can expire its instance.
        let gone = registry(&etcd.client_urls(), ttl).await;
        gone.register("web", "a", &inst("10.0.0.1:80"))
            .await
            .unwrap();
    }
    assert_eq!(
        next(&mut w, Duration::from_secs(5)).await.kind,
        EventKind::Up
    );
    assert_eq!(
        next(&mut w, Duration::from_secs(5)).await.kind,
        EventKind::Leader
    );
    let e = next(&mut w, Duration::from_secs(10)).await;
    let waited = registering.elapsed();
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Down, "a")
    );
    // etcd checks leases every 0.5 s; 0.5 s more for a busy machine.
    assert!(
        waited >= ttl && waited <= ttl + Duration::from_millis(1000),
        "expired after {waited:?} (TTL {ttl:?})"
    );
}

#[tokio::test]
async fn three_members_one_down_register_and_watch_still_work() {
    let Some(mut etcd) = etcd_cluster(3) else {
        return;
    };
    let r = registry(&etcd.client_urls(), Duration::from_secs(10)).await;
    r.register("api", "a", &inst("10.0.0.1:80")).await.unwrap();
    // The first member listed (the one the client prefers) crashes.
    etcd.stop_member(0);
    let mut w = r.watch(Some("api")).await.unwrap();
    let mut snapshot = Vec::new();
    loop {
        let e = next(&mut w, Duration::from_secs(10)).await;
        if e.kind == EventKind::Current {
            break;
        }
        snapshot.push((e.kind, e.instance.unwrap().id));
    }
    assert_eq!(
        snapshot,
        [(EventKind::Up, "a".into()), (EventKind::Leader, "a".into())]
    );
    let b = r.register("api", "b", &inst("10.0.0.2:80")).await.unwrap();
    let e = next(&mut w, Duration::from_secs(10)).await;
    assert_eq!(
        (e.kind, e.instance.unwrap().index),
        (EventKind::Up, b.index)
    );
    // Heartbeats renew the lease through the remaining members.
    r.register("api", "a", &inst("10.0.0.1:80")).await.unwrap();
    let ids: Vec<String> = r
        .instances("api")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);

    // The member comes back on its data dir and serves what was written without it.
    etcd.start_member(0).unwrap();
    let only = registry(&etcd.client_url(0), Duration::from_secs(10)).await;
    let ids: Vec<String> = only
        .instances("api")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

/// Discovery's DNS answers from etcd as from the in-process registry.
#[tokio::test]
async fn dns_answers_from_etcd() {
    use hickory_server::proto::rr::RecordType;
    use std::net::Ipv4Addr;
    let Some(etcd) = etcd_cluster(1) else { return };
    let r = registry(&etcd.client_urls(), Duration::from_secs(10)).await;
    r.register("web", "a", &inst("10.0.0.1:8080"))
        .await
        .unwrap();
    r.register("web", "b", &inst("10.0.0.2:8081"))
        .await
        .unwrap();
    let dns = slipway_discovery::dns::serve(
        slipway_discovery::dns::DnsHandler::new(std::sync::Arc::new(r.clone()), None),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let m = crate::dns::ask(dns, "web.discover.", RecordType::A).await;
    assert_eq!(
        crate::dns::ips(&m.answers),
        [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
    );
    r.deregister("web", "a").await.unwrap();
    let m = crate::dns::ask(dns, "leader.web.discover.", RecordType::A).await;
    assert_eq!(crate::dns::ips(&m.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
}
