//! The main flows, as a client sees them.

use crate::Server;
use reqwest::Method;
use serde_json::json;

async fn flow(s: &Server) {
    assert_eq!(s.ok(Method::GET, "/ping", None).await["status"], "ok");
    let info = s.ok(Method::GET, "/cluster", None).await;
    assert_eq!(info["default_domain"], "apps.test");

    let app = s
        .ok(
            Method::POST,
            "/apps",
            Some(json!({"name": "shop", "meta": {"team": "web"}})),
        )
        .await;
    assert_eq!(
        (app["name"].as_str(), app["strategy"].as_str()),
        (Some("shop"), Some("all-at-once"))
    );
    let id = app["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.ok(Method::GET, &format!("/apps/{id}"), None).await["name"],
        "shop"
    );
    s.err(
        Method::POST,
        "/apps",
        Some(json!({"name": "shop"})),
        409,
        "conflict",
        "already exists",
    )
    .await;

    let routes = s.ok(Method::GET, "/apps/shop/routes", None).await;
    assert_eq!(routes[0]["domain"], "shop.apps.test");
    assert_eq!(routes[0]["service"], "shop-web");
    assert_eq!(routes[0]["type"], "http");

    let random = s.ok(Method::POST, "/apps", Some(json!({}))).await;
    let name = random["name"].as_str().unwrap();
    slipway_types::validate_app_name(name).unwrap();

    let updated = s
        .ok(
            Method::POST,
            "/apps/shop",
            Some(json!({"strategy": "one-by-one", "deploy_timeout": 30})),
        )
        .await;
    assert_eq!(
        (
            updated["strategy"].as_str(),
            updated["deploy_timeout"].as_u64()
        ),
        (Some("one-by-one"), Some(30))
    );

    s.err(
        Method::GET,
        "/apps/shop/release",
        None,
        404,
        "not_found",
        "has no release",
    )
    .await;
    let rel = |greeting: &str| json!({"env": {"GREETING": greeting}, "processes": {"web": {"args": ["httpd", "-f"], "resources": {"memory": 536870912}}}});
    let r1 = s
        .ok(Method::POST, "/apps/shop/releases", Some(rel("hi")))
        .await;
    let r2 = s
        .ok(Method::POST, "/apps/shop/releases", Some(rel("hello")))
        .await;
    let (r1, r2) = (
        r1["id"].as_str().unwrap().to_string(),
        r2["id"].as_str().unwrap().to_string(),
    );
    let listed = s.ok(Method::GET, "/apps/shop/releases", None).await;
    assert_eq!(listed[0]["id"], r2.as_str(), "newest first");
    assert_eq!(
        listed[1]["processes"]["web"]["resources"]["memory"],
        536870912
    );
    s.ok(Method::PUT, "/apps/shop/release", Some(json!({"id": r1})))
        .await;
    assert_eq!(
        s.ok(Method::GET, "/apps/shop/release", None).await["env"]["GREETING"],
        "hi"
    );
    s.err(
        Method::DELETE,
        &format!("/apps/shop/releases/{r1}"),
        None,
        409,
        "conflict",
        "current release",
    )
    .await;

    s.err(
        Method::PUT,
        &format!("/apps/shop/formations/{r1}"),
        Some(json!({"processes": {"web": 2, "foo": 1}})),
        422,
        "validation_error",
        "unknown process types: \"foo\"",
    )
    .await;
    let f = s
        .ok(
            Method::PUT,
            &format!("/apps/shop/formations/{r1}"),
            Some(json!({"processes": {"web": 2}})),
        )
        .await;
    assert_eq!(f["processes"]["web"], 2);
    assert_eq!(
        s.ok(Method::GET, "/apps/shop/formations", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let d = s
        .ok(Method::POST, "/apps/shop/deploy", Some(json!({"id": r2})))
        .await;
    assert_eq!(
        (d["status"].as_str(), d["processes"]["web"].as_u64()),
        (Some("pending"), Some(2))
    );
    s.err(
        Method::POST,
        "/apps/shop/deploy",
        Some(json!({"id": r2})),
        409,
        "conflict",
        "already one in progress",
    )
    .await;
    let dep = s
        .ok(
            Method::GET,
            &format!("/deployments/{}", d["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(dep, d);

    let r = s
        .ok(
            Method::POST,
            "/apps/shop/routes",
            Some(json!({"type": "http", "domain": "Shop.Example.com", "path": "api"})),
        )
        .await;
    assert_eq!(
        (r["domain"].as_str(), r["path"].as_str()),
        (Some("shop.example.com"), Some("/api/"))
    );
    s.err(
        Method::POST,
        "/apps/shop/routes",
        Some(json!({"type": "http", "domain": "shop.example.com", "path": "/api/"})),
        409,
        "conflict",
        "Duplicate route",
    )
    .await;
    let tcp = s
        .ok(
            Method::POST,
            "/apps/shop/routes",
            Some(json!({"type": "tcp"})),
        )
        .await;
    assert_eq!(tcp["port"], 3000);
    let rid = r["id"].as_str().unwrap();
    let upd = s
        .ok(
            Method::PUT,
            &format!("/apps/shop/routes/http/{rid}"),
            Some(json!({"sticky": true})),
        )
        .await;
    assert_eq!(upd["sticky"], true);
    assert_eq!(
        s.ok(Method::GET, "/routes", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    s.ok(
        Method::DELETE,
        &format!("/apps/shop/routes/http/{rid}"),
        None,
    )
    .await;
    s.err(
        Method::GET,
        &format!("/apps/shop/routes/http/{rid}"),
        None,
        404,
        "not_found",
        "not found",
    )
    .await;

    let deleted = s.ok(Method::DELETE, "/apps/shop", None).await;
    assert_eq!(
        deleted,
        json!({"app": "shop", "routes": 2, "releases": 2, "artifacts": 0})
    );
    s.err(
        Method::GET,
        "/apps/shop",
        None,
        404,
        "not_found",
        "app \"shop\" not found",
    )
    .await;
}

#[tokio::test]
async fn main_flow_on_sqlite() {
    flow(&Server::sqlite().await).await;
}

#[tokio::test]
async fn main_flow_on_postgres() {
    let Some(s) = Server::postgres().await else {
        return;
    };
    flow(&s).await;
}

#[tokio::test]
async fn auth() {
    let s = Server::sqlite().await;
    let get = |path: &str| s.http.get(format!("{}{path}", s.url));
    assert_eq!(get("/ping").send().await.unwrap().status(), 200);
    let resp = get("/apps").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );
    let wrong = get("/apps").bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<serde_json::Value>().await.unwrap()["message"],
        "invalid API key"
    );
    let basic = get("/apps")
        .basic_auth("", Some(crate::KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let git_style = get("/apps")
        .basic_auth("anyone", Some(crate::KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(git_style.status(), 200);
    assert_eq!(
        get("/apps")
            .bearer_auth(crate::KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Unknown paths need the key too (no probing without it), then answer 404 in JSON.
    assert_eq!(get("/nope").send().await.unwrap().status(), 401);
}
