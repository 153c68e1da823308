//! The cluster token: hosts and routers present it to discovery's API; the API key is still
//! accepted (it commands the whole platform anyway); anything else is 401.

use slipway_discovery::Registry;
use slipway_discovery::http::{Access, HttpRegistry};
use std::sync::Arc;

#[tokio::test]
async fn the_cluster_token_and_the_key_are_admitted_nothing_else() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg: Arc<dyn Registry> = Arc::new(slipway_discovery::LocalRegistry::new(
        slipway_discovery::DEFAULT_TTL,
    ));
    let mut access = Access::key("the-key");
    access.token = Some("the-token".into());
    let app = slipway_discovery::http::router(reg, access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let get = |cred: Option<&'static str>| {
        let mut req = http.get(format!("{url}/services/app-web/instances"));
        if let Some(c) = cred {
            req = req.bearer_auth(c);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some("wrong")).await, 401);
    assert_eq!(get(Some("the-token-")).await, 401);
    assert_eq!(get(Some("the-token")).await, 200);
    assert_eq!(get(Some("the-key")).await, 200);
    assert!(
        HttpRegistry::new(&url, "the-token")
            .instances("app-web")
            .await
            .is_ok()
    );
    let err = HttpRegistry::new(&url, "wrong")
        .instances("app-web")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster token"), "{err}");
}

/// Hosts send the API key to the `url` a `slipway-controller` instance names (they fetch
/// layers from it), so registering or replacing one takes the key: with the token alone, a
/// router could name its own address and collect the key from every host.
#[tokio::test]
async fn only_the_key_registers_or_removes_a_controller() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg: Arc<dyn Registry> = Arc::new(slipway_discovery::LocalRegistry::new(
        slipway_discovery::DEFAULT_TTL,
    ));
    let mut access = Access::key("the-key");
    access.token = Some("the-token".into());
    let app = slipway_discovery::http::router(reg.clone(), access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let body = serde_json::json!({"addr": "10.9.9.9:443", "meta": {"url": "https://10.9.9.9"}});
    let put = |service: &'static str, cred: &'static str| {
        let req = http
            .put(format!("{url}/services/{service}/instances/c1"))
            .bearer_auth(cred)
            .json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let delete = |cred: &'static str| {
        let req = http
            .delete(format!("{url}/services/slipway-controller/instances/c1"))
            .bearer_auth(cred);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(put("slipway-controller", "the-token").await, 403);
    assert!(
        reg.instances("slipway-controller")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(put("app-web", "the-token").await, 200);
    assert_eq!(put("slipway-controller", "the-key").await, 200);
    assert_eq!(delete("the-token").await, 403);
    assert_eq!(reg.instances("slipway-controller").await.unwrap().len(), 1);
    let err = HttpRegistry::new(&url, "the-token")
        .register(
            "slipway-controller",
            "c2",
            &serde_json::from_value(body.clone()).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("API key"), "{err}");
    assert_eq!(delete("the-key").await, 200);
}
