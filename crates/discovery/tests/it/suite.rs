//! The cases every [`Registry`] must pass. Each gets a fresh, empty registry.

use crate::{Backend, TTL};
use slipway_discovery::{Error, Event, EventKind, NewInstance, Watch};
use std::time::Duration;

fn inst(addr: &str) -> NewInstance {
    NewInstance {
        addr: addr.into(),
        ..Default::default()
    }
}

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch event within 5s")
        .expect("watch stream still open")
}

pub async fn register_list_and_leader_is_oldest(b: &Backend) {
    let (name, r) = (b.name, &b.registry);
    let a = r.register("web", "a", &inst("10.0.0.1:80")).await.unwrap();
    let b = r.register("web", "b", &inst("10.0.0.2:80")).await.unwrap();
    assert!(a.index < b.index, "{name}");
    assert_eq!(a.proto, "tcp", "{name}");
    let list = r.instances("web").await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{name}"
    );
    assert_eq!(r.leader("web").await.unwrap().unwrap().id, "a", "{name}");
    r.deregister("web", "a").await.unwrap();
    assert_eq!(r.leader("web").await.unwrap().unwrap().id, "b", "{name}");
    assert!(r.instances("other").await.unwrap().is_empty(), "{name}");
    assert!(r.leader("other").await.unwrap().is_none(), "{name}");
    assert!(
        matches!(r.deregister("web", "a").await, Err(Error::NotFound(_))),
        "{name}"
    );
}

pub async fn bad_input_is_refused(b: &Backend) {
    let (name, r) = (b.name, &b.registry);
    assert!(
        matches!(
            r.register("web", "a", &inst("nope")).await,
            Err(Error::Invalid(_))
        ),
        "{name}"
    );
    assert!(
        matches!(
            r.register("w b", "a", &inst("1.2.3.4:5")).await,
            Err(Error::Invalid(_))
        ),
        "{name}"
    );
}

pub async fn watch_snapshot_current_then_live_events(b: &Backend) {
    let (name, r) = (b.name, &b.registry);
    r.register("api", "a", &inst("10.0.0.1:80")).await.unwrap();
    r.register("other", "x", &inst("10.0.0.9:80"))
        .await
        .unwrap();
    let mut w = r.watch(Some("api")).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Up, "a"),
        "{name}"
    );
    assert_eq!(next(&mut w).await.kind, EventKind::Leader, "{name}");
    assert_eq!(next(&mut w).await.kind, EventKind::Current, "{name}");

    r.register("other", "y", &inst("10.0.0.8:80"))
        .await
        .unwrap(); // filtered out
    r.register("api", "b", &inst("10.0.0.2:80")).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Up, "b"),
        "{name}"
    );

    // Same data again is a heartbeat: no event. New meta is an update.
    r.register("api", "b", &inst("10.0.0.2:80")).await.unwrap();
    let mut changed = inst("10.0.0.2:80");
    changed.meta.insert("release".into(), "r2".into());
    r.register("api", "b", &changed).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(e.kind, EventKind::Update, "{name}");
    assert_eq!(e.instance.unwrap().meta["release"], "r2", "{name}");

    r.deregister("api", "a").await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Down, "a"),
        "{name}"
    );
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Leader, "b"),
        "{name}: the next oldest becomes leader"
    );
}

pub async fn watch_all_services(b: &Backend) {
    let (name, r) = (b.name, &b.registry);
    r.register("s1", "a", &inst("10.0.0.1:80")).await.unwrap();
    let mut w = r.watch(None).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let e = next(&mut w).await;
        if e.kind == EventKind::Current {
            break;
        }
        seen.push((e.kind, e.service));
    }
    assert_eq!(
        seen,
        [
            (EventKind::Up, "s1".into()),
            (EventKind::Leader, "s1".into())
        ],
        "{name}"
    );
    r.register("s2", "b", &inst("10.0.0.2:80")).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.service.as_str()),
        (EventKind::Up, "s2"),
        "{name}"
    );
}

pub async fn instances_expire_without_heartbeat_and_live_with_it(b: &Backend) {
    let (name, r) = (b.name, &b.registry);
    // The watch comes first so the expiry can be timed from the registration itself.
    let mut w = r.watch(Some("web")).await.unwrap();
    while next(&mut w).await.kind != EventKind::Current {}
    let registering = std::time::Instant::now();
    r.register("web", "dead", &inst("10.0.0.1:80"))
        .await
        .unwrap();
    let registered = registering.elapsed();
    let reg =
        slipway_discovery::Registration::start(r.clone(), "web", "alive", inst("10.0.0.2:80"), TTL)
            .await
            .unwrap();
    let mut e = next(&mut w).await;
    while e.kind != EventKind::Down {
        e = next(&mut w).await;
    }
    let waited = registering.elapsed();
    assert_eq!(e.instance.unwrap().id.as_str(), "dead", "{name}");
    // docs/router.md: an instance expires no sooner than its TTL after its registration and
    // never outlives it by more than 10 % (checked every TTL/10); 60 ms more for the event's
    // way to the watch (over HTTP: SSE on loopback).
    assert!(
        waited >= TTL,
        "{name}: expired {waited:?} after registering, before its TTL {TTL:?}"
    );
    assert!(
        waited <= registered + TTL + TTL / 10 + Duration::from_millis(60),
        "{name}: expired {waited:?} after registering (which took {registered:?}), TTL \
         {TTL:?} + 10 %"
    );
    tokio::time::sleep(TTL * 3).await;
    let ids: Vec<String> = r
        .instances("web")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["alive"], "{name}: the heartbeated instance stays");
    drop(reg);
    let mut e = next(&mut w).await;
    while e.kind == EventKind::Leader {
        e = next(&mut w).await;
    }
    assert_eq!(
        (e.kind, e.instance.unwrap().id.as_str()),
        (EventKind::Down, "alive"),
        "{name}: deregistered on drop"
    );
}
