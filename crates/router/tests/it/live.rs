use crate::*;
use slipway_store::Store;
use slipway_types::{NewApp, NewRoute, RouteType};

/// Routes come from the Store and changes apply live, without restarting anything.
#[tokio::test]
async fn routes_follow_the_store_live() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        slipway_store::open(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap(),
    );
    let app = store
        .create_app("shop", &NewApp::default(), Some("test"))
        .await
        .unwrap();
    let t = start(Config::default()).await;
    t.router.follow_store(store.clone()).await.unwrap();
    t.add("shop-web", "w1", backend("shop").await).await;
    t.add("shop-admin", "a1", backend("admin").await).await;

    // The app's default route, from the initial list.
    assert_eq!(
        get(t.http, "shop.test", "/").await,
        (StatusCode::OK, "shop".into())
    );

    // Added while running, on the same listener and the same router.
    let mut new = NewRoute::Http {
        domain: "shop.test".into(),
        path: Some("/admin".into()),
        service: Some("shop-admin".into()),
        sticky: false,
        leader: false,
        certificate: None,
    };
    new.normalize().unwrap();
    let route = store.create_route(app.id, &new).await.unwrap();
    eventually(|| async { get(t.http, "shop.test", "/admin/x").await.1 == "admin" }).await;

    store
        .delete_route(app.id, RouteType::Http, route.id())
        .await
        .unwrap();
    eventually(|| async { get(t.http, "shop.test", "/admin/x").await.1 == "shop" }).await;
}

async fn eventually<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not applied within 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The router's half of a zero-downtime deploy: under a steady load, three new instances come
/// up and the three old ones go down (each stays alive until it reports drained, as a graceful
/// stop does). No request fails, and every answer comes from the old or the new release.
#[tokio::test]
async fn replacing_all_backends_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let t = start(Config::default()).await;
    for i in 0..3 {
        t.add("web", &format!("old{i}"), backend("old").await).await;
    }
    t.router.set_routes(&[http_route("web.test", "/", "web")]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, from_new) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let addr = t.http;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failed, from_new) =
                (stop.clone(), ok.clone(), failed.clone(), from_new.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get(addr, "web.test", "/").await;
                    match (status.as_u16(), body.as_str()) {
                        (200, "old") => ok.fetch_add(1, Ordering::Relaxed),
                        (200, "new") => from_new.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ev = t.router.events();
    for i in 0..3 {
        // One by one: the new instance is up in the router before the old one goes.
        t.add("web", &format!("new{i}"), backend("new").await).await;
        t.registry
            .deregister("web", &format!("old{i}"))
            .await
            .unwrap();
        wait_event(&mut ev, "backend-drained", &format!("old{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_end = from_new.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request may fail");
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "the old release served before"
    );
    assert!(
        from_new.load(Ordering::Relaxed) > before_end,
        "the new release serves after"
    );
    assert_eq!(get(t.http, "web.test", "/").await.1, "new");
}
