//! Who may use discovery's HTTP API, and which addresses it accepts (issue 14): without the key
//! nothing is read or written (401); a registration may not point the router at this host's
//! own listeners (422), unless the operator allowed that network.

use slipway_discovery::http::{Access, parse_allowed, parse_network};
use slipway_discovery::{HttpRegistry, LocalRegistry, NewInstance, Registry};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "the-key";

async fn serve(access: Access) -> (String, Arc<LocalRegistry>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = slipway_discovery::http::router(reg.clone(), access);
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, reg)
}

async fn put(url: &str, key: Option<&str>, addr: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .put(format!("{url}/services/app-web/instances/x"))
        .json(&serde_json::json!({ "addr": addr }));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// This machine's address on the interface of its default route (never loopback).
fn own_address() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.200:9")
        .or_else(|_| s.connect("1.1.1.1:53"))
        .unwrap();
    s.local_addr().unwrap().ip()
}

#[tokio::test]
async fn without_the_key_nothing_is_read_or_written() {
    let (url, reg) = serve(Access::key(KEY)).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/services/app-web/instances"),
        ("GET", "/services/app-web/leader"),
        ("GET", "/events"),
        ("DELETE", "/services/app-web/instances/x"),
    ] {
        for key in [None, Some("wrong")] {
            let mut req = http.request(method.parse().unwrap(), format!("{url}{path}"));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{method} {path} with {key:?}");
        }
    }
    let (status, body) = put(&url, None, "10.9.8.7:80").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert!(reg.instances("app-web").await.unwrap().is_empty());
    // Health checks need no key.
    let ping = http.get(format!("{url}/ping")).send().await.unwrap();
    assert_eq!(ping.status().as_u16(), 200);

    // The client sends the key it was given.
    let client = HttpRegistry::new(&url, KEY);
    let new = NewInstance {
        addr: "10.9.8.7:80".into(),
        ..Default::default()
    };
    client.register("app-web", "x", &new).await.unwrap();
    assert_eq!(client.instances("app-web").await.unwrap().len(), 1);
    let mut w = client.watch(Some("app-web")).await.unwrap();
    assert!(w.recv().await.is_some(), "the watch streams with the key");
    let wrong = HttpRegistry::new(&url, "wrong");
    let err = wrong.instances("app-web").await.unwrap_err().to_string();
    assert!(err.contains("API key"), "{err}");
}

#[tokio::test]
async fn registrations_naming_the_hosts_own_addresses_are_refused() {
    let (url, reg) = serve(Access::key(KEY)).await;
    let own = own_address();
    for addr in [
        "127.0.0.1:1111".to_string(),
        "127.1.2.3:7070".into(),
        "[::1]:1111".into(),
        "[::ffff:127.0.0.1]:1111".into(),
        "0.0.0.0:80".into(),
        "[::]:80".into(),
        "169.254.169.254:80".into(),
        "[fe80::1]:80".into(),
        "224.0.0.1:80".into(),
        "255.255.255.255:80".into(),
        format!("{own}:22"),
        "10.9.8.7:0".into(),
        "localhost:80".into(),
    ] {
        let (status, body) = put(&url, Some(KEY), &addr).await;
        assert_eq!(status, 422, "{addr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(&addr),
            "{addr}: {body}"
        );
    }
    assert!(reg.instances("app-web").await.unwrap().is_empty());
    let (status, body) = put(&url, Some(KEY), "10.9.8.7:8080").await;
    assert_eq!(status, 200, "a job's address is accepted: {body}");
}

#[tokio::test]
async fn an_allowed_network_may_be_registered() {
    let mut access = Access::key(KEY);
    access.allow.push(parse_allowed("127.0.0.0/8").unwrap());
    let (url, _reg) = serve(access).await;
    let (status, body) = put(&url, Some(KEY), "127.0.0.1:8080").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(&url, Some(KEY), "169.254.169.254:80").await;
    assert_eq!(status, 422, "other networks stay refused: {body}");
    assert!(parse_network("10.0.0.0/33").is_err());
    assert!(parse_network("nope").is_err());
}

/// `slipway supervise` allows its router child's admin endpoint (`127.0.0.1:1112`) and
/// nothing else on loopback.
#[tokio::test]
async fn an_allowed_address_admits_that_port_only() {
    let mut access = Access::key(KEY);
    access.allow.push(parse_allowed("127.0.0.1:1112").unwrap());
    let (url, _reg) = serve(access).await;
    let (status, body) = put(&url, Some(KEY), "127.0.0.1:1112").await;
    assert_eq!(status, 200, "{body}");
    for other in ["127.0.0.1:7070", "127.0.0.2:1112", "[::1]:1112"] {
        let (status, body) = put(&url, Some(KEY), other).await;
        assert_eq!(status, 422, "{other} stays refused: {body}");
    }
    assert!(parse_allowed("[::1]:1112").is_ok());
    assert!(parse_allowed("127.0.0.1:nope").is_err());
}
