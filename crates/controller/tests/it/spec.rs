//! The API's description (`GET /openapi.json`, OpenAPI 3.1) against the router that serves
//! it: every operation it describes is served (a request reaches a handler, not the router's
//! "no such endpoint" or "not allowed"), and on a described path every method it does not
//! describe is refused with 405, so nothing is served there undescribed. Routes are added only
//! through `utoipa_axum::routes!` (checked in `api/mod.rs`'s source below), which adds each
//! to the description as it adds it to the router.

use crate::Server;
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A concrete path for a template: `{x}` replaced by a value that parses (a nil UUID).
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').unwrap() + i;
        let name = &rest[i + 1..end];
        out.push_str(match name {
            "kind" => "http",
            _ => "00000000-0000-0000-0000-000000000000",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_description_and_the_router_list_the_same_operations() {
    let s = Server::sqlite().await;
    // Public, like /ping.
    let resp = reqwest::get(format!("{}/openapi.json", s.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let spec: Value = resp.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = 0;
    for (template, item) in paths {
        let path = concrete(template);
        for method in METHODS {
            let described = item.get(method).is_some();
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = s.req(m, &path).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if described {
                operations += 1;
                assert!(
                    status != 405 && !body.contains("no such endpoint"),
                    "{method} {template} is described but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not described: {body}"
                );
            }
        }
    }
    assert_eq!(operations, 42, "operations described");
    // The router's only routes are those added with their description.
    let source = include_str!("../../src/api/mod.rs");
    assert!(
        !source.contains(".route(\"") && !source.contains(".nest("),
        "api/mod.rs adds a route without its description: use .routes(routes!(handler))"
    );
}

#[tokio::test]
async fn every_error_is_described_with_the_error_body() {
    let json = slipway_controller::openapi();
    let schema = &json["components"]["schemas"]["ApiError"];
    assert_eq!(schema["required"], serde_json::json!(["code", "message"]));
    for (template, item) in json["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {template} {status}"
                    );
                }
            }
            if !["/ping", "/openapi.json"].contains(&template.as_str()) {
                assert!(responses.contains_key("401"), "{method} {template}: no 401");
            }
        }
    }
}

#[test]
fn unsigned_integers_carry_their_bounds() {
    let json = slipway_controller::openapi();
    let port = &json["components"]["schemas"]["Port"]["properties"]["port"];
    assert_eq!(port["format"], "uint16");
    assert_eq!(
        (port["minimum"].as_u64(), port["maximum"].as_u64()),
        (Some(0), Some(65535))
    );
    let text = json.to_string();
    assert!(!text.contains("u-int"), "a format utoipa misspells is left");
}

/// Schemathesis's first finding: `count=2147483648` was described as past the maximum (utoipa
/// wrote u32 as `int32`) yet accepted. Now described as `uint32`, up to 4294967295, and one
/// more is refused.
#[tokio::test]
async fn the_event_count_is_bounded_as_described() {
    let s = Server::sqlite().await;
    let json = slipway_controller::openapi();
    let count = json["paths"]["/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "count")
        .unwrap();
    assert_eq!(count["schema"]["maximum"], 4294967295u64, "{count}");
    s.ok(Method::GET, "/events?count=4294967295", None).await;
    s.ok(Method::GET, "/events?count=2147483648", None).await;
    s.err(
        Method::GET,
        "/events?count=4294967296",
        None,
        400,
        "bad_request",
        "count",
    )
    .await;
}

/// The stateful links (an app created → its releases, routes, formations, jobs; a release →
/// its formation) name operations that exist, in OpenAPI's spelling.
#[test]
fn links_name_existing_operations() {
    let json = slipway_controller::openapi();
    let mut ids = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    for item in json["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            ids.insert(op["operationId"].as_str().unwrap().to_string());
            for r in op["responses"].as_object().unwrap().values() {
                for link in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    assert!(link.get("operation_id").is_none(), "{link}");
                    targets.push(link["operationId"].as_str().unwrap().to_string());
                }
            }
        }
    }
    assert!(targets.len() >= 16, "{targets:?}");
    for t in &targets {
        assert!(ids.contains(t), "a link to {t}, which is no operation");
    }
}
