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
