//! Bad input gets a 4xx JSON error, the server stays up, and nothing is half-written.

use crate::Server;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn malformed_bodies() {
    let s = Server::sqlite().await;
    let raw = |path: &str, body: &'static str| {
        s.req(Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
    };
    for (body, status, code) in [
        ("{\"name\": ", 400, "bad_request"),
        ("not json", 400, "bad_request"),
        ("", 400, "bad_request"),
        ("{\"nmae\": \"x\"}", 422, "validation_error"),
        ("{\"name\": 42}", 422, "validation_error"),
        ("[1,2,3]", 422, "validation_error"),
        ("{\"name\": \"Bad_Name\"}", 422, "validation_error"),
        ("{\"name\": \"../../etc\"}", 422, "validation_error"),
        ("{\"deploy_timeout\": -1}", 422, "validation_error"),
        ("{\"strategy\": \"yolo\"}", 422, "validation_error"),
    ] {
        let resp = raw("/apps", body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "body {body:?}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["code"], code, "body {body:?}: {json}");
        assert!(!json["message"].as_str().unwrap().is_empty());
    }
    let wrong_type = s
        .req(Method::POST, "/apps")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let name_field = s
        .call(Method::POST, "/apps", Some(json!({"name": "a".repeat(64)})))
        .await;
    assert_eq!(
        (name_field.0.as_u16(), name_field.1["field"].as_str()),
        (422, Some("name"))
    );

    s.ok(Method::POST, "/apps", Some(json!({"name": "ok"})))
        .await;
    s.err(
        Method::POST,
        "/apps/ok/releases",
        Some(json!({"env": {"1X": "y"}})),
        422,
        "validation_error",
        "invalid environment variable",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/releases",
        Some(json!({"processes": {"web": {"resources": {"memory": 0}}}})),
        422,
        "validation_error",
        "memory",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/releases",
        Some(json!({"artifacts": ["00000000-0000-0000-0000-000000000000"]})),
        422,
        "validation_error",
        "does not exist",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/routes",
        Some(json!({"type": "udp"})),
        422,
        "validation_error",
        "",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/routes",
        Some(json!({"type": "http", "domain": "http://x.com"})),
        422,
        "validation_error",
        "without a scheme",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/routes",
        Some(json!({"type": "http", "domain": "x.com", "path": "/../x"})),
        422,
        "validation_error",
        "'..'",
    )
    .await;
    s.err(
        Method::POST,
        "/apps/ok/routes",
        Some(json!({"type": "http", "domain": "x.com", "certificate": {"cert": "x", "key": "y"}})),
        422,
        "validation_error",
        "PEM",
    )
    .await;
    // The platform's own services (the API's, a host's, the router's admin listeners) are
    // never a route's.
    s.err(
        Method::POST,
        "/apps/ok/routes",
        Some(json!({"type": "http", "domain": "api.x.com", "service": "slipway-controller"})),
        422,
        "validation_error",
        "one of Slipway's own",
    )
    .await;
    s.err(
        Method::POST,
        "/apps",
        Some(json!({"name": "slipway"})),
        422,
        "validation_error",
        "reserved",
    )
    .await;
    s.err(
        Method::PUT,
        "/apps/ok/release",
        Some(json!({"id": "not-a-uuid"})),
        422,
        "validation_error",
        "",
    )
    .await;

    // Nothing of the above was written: one app, its default route, and their two events.
    assert_eq!(
        s.ok(Method::GET, "/apps", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.ok(Method::GET, "/apps/ok/releases", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        s.ok(Method::GET, "/routes", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.ok(Method::GET, "/events", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let s = Server::sqlite().await;
    let big = format!(
        "{{\"name\": \"big\", \"meta\": {{\"x\": \"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let resp = s
        .req(Method::POST, "/apps")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["code"], "payload_too_large");
    s.err(
        Method::GET,
        "/apps/big",
        None,
        404,
        "not_found",
        "not found",
    )
    .await;
    assert_eq!(
        s.ok(Method::GET, "/ping", None).await["status"],
        "ok",
        "still up"
    );
}

#[tokio::test]
async fn unknown_ids_and_paths() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "known"})))
        .await;
    let zero = "00000000-0000-0000-0000-000000000000";
    for path in [
        "/apps/nope".to_string(),
        format!("/apps/{zero}"),
        "/apps/nope/releases".into(),
        "/releases/not-a-uuid".into(),
        format!("/releases/{zero}"),
        format!("/artifacts/{zero}"),
        "/artifacts/%2e%2e".into(),
        format!("/deployments/{zero}"),
        "/apps/known/jobs/nope".into(),
        format!("/apps/known/formations/{zero}"),
        format!("/apps/known/routes/http/{zero}"),
        format!("/apps/known/routes/udp/{zero}"),
        "/apps/known/routes/http/1".into(),
        "/events/abc".into(),
        "/events/99999".into(),
        "/no/such/endpoint".into(),
    ] {
        let (status, json) = s.call(Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {json}");
        assert_eq!(json["code"], "not_found", "{path}");
    }
    s.err(Method::DELETE, "/apps/nope", None, 404, "not_found", "nope")
        .await;
    s.err(
        Method::PATCH,
        "/apps/known",
        None,
        405,
        "method_not_allowed",
        "PATCH",
    )
    .await;
    s.err(
        Method::GET,
        "/events?since_id=abc",
        None,
        400,
        "bad_request",
        "since_id",
    )
    .await;
    s.err(
        Method::GET,
        "/events?object_types=bogus",
        None,
        400,
        "bad_request",
        "unknown object type",
    )
    .await;
    s.err(
        Method::GET,
        "/events?colour=red",
        None,
        400,
        "bad_request",
        "unknown query parameter",
    )
    .await;
    s.err(
        Method::GET,
        "/events?app_id=nope",
        None,
        404,
        "not_found",
        "nope",
    )
    .await;
}
