//! Builds (recorded by the push flow through the store, read over the API) and artifact
//! deletion, over real HTTP.

use crate::Server;
use reqwest::Method;
use slipway_types::*;

#[tokio::test]
async fn builds_are_listed_and_their_logs_served_as_text() {
    let s = Server::sqlite().await;
    let store = &s.store;
    s.ok(
        Method::POST,
        "/apps",
        Some(serde_json::json!({"name": "web"})),
    )
    .await;
    let app = store.find_app("web").await.unwrap();
    let art = s
        .ok(
            Method::POST,
            "/artifacts",
            Some(serde_json::json!({"type": "slug", "uri": format!("blob:sha256:{}", "a".repeat(64))})),
        )
        .await;
    let art_id = art["id"].as_str().unwrap().to_string();
    let rel = s
        .ok(
            Method::POST,
            "/apps/web/releases",
            Some(serde_json::json!({"artifacts": [art_id]})),
        )
        .await;
    let rel_id: Id = rel["id"].as_str().unwrap().parse().unwrap();
    let log = "-----> Building web...\n       ünïcode\n";
    let good = store
        .create_build(
            app.id,
            &NewBuild {
                commit: "c0ffee".into(),
                status: BuildStatus::Succeeded,
                release_id: Some(rel_id),
                error: None,
                log: log.into(),
                started_at: Timestamp::now(),
            },
        )
        .await
        .unwrap();
    let bad = store
        .create_build(
            app.id,
            &NewBuild {
                commit: "bad".into(),
                status: BuildStatus::Failed,
                release_id: None,
                error: Some("Unable to select a buildpack".into()),
                log: "error: Unable to select a buildpack\n".into(),
                started_at: Timestamp::now(),
            },
        )
        .await
        .unwrap();

    let list = s.ok(Method::GET, "/apps/web/builds", None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [bad.id.to_string(), good.id.to_string()],
        "newest first"
    );
    let one = s
        .ok(
            Method::GET,
            &format!("/apps/{}/builds/{}", app.id, good.id),
            None,
        )
        .await;
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["release_id"], rel_id.to_string());
    assert_eq!(one["log_bytes"], log.len());
    let resp = s
        .req(Method::GET, &format!("/apps/web/builds/{}/log", good.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), log);
    // Unknown or malformed ids, unknown apps, another app's build: 404 with the error shape.
    for path in [
        format!("/apps/web/builds/{}", Id::new_v4()),
        "/apps/web/builds/nope".to_string(),
        format!("/apps/web/builds/{}/log", Id::new_v4()),
        format!("/apps/nope/builds/{}", good.id),
        "/apps/nope/builds".to_string(),
    ] {
        s.err(Method::GET, &path, None, 404, "not_found", "not found")
            .await;
    }
    s.ok(
        Method::POST,
        "/apps",
        Some(serde_json::json!({"name": "other"})),
    )
    .await;
    s.err(
        Method::GET,
        &format!("/apps/other/builds/{}/log", good.id),
        None,
        404,
        "not_found",
        "not found",
    )
    .await;

    // An artifact a release names cannot be deleted, whichever app's release it is.
    let other_rel = s
        .ok(
            Method::POST,
            "/apps/other/releases",
            Some(serde_json::json!({"artifacts": [art_id]})),
        )
        .await;
    let art_path = format!("/artifacts/{art_id}");
    s.err(
        Method::DELETE,
        &art_path,
        None,
        409,
        "conflict",
        "is used by release",
    )
    .await;
    // Deleting a release takes its build record, and its slugs once no release names them.
    s.ok(
        Method::DELETE,
        &format!("/apps/web/releases/{rel_id}"),
        None,
    )
    .await;
    s.err(
        Method::GET,
        &format!("/apps/web/builds/{}", good.id),
        None,
        404,
        "not_found",
        "not found",
    )
    .await;
    s.ok(Method::GET, &art_path, None).await;
    let other_rel = other_rel["id"].as_str().unwrap();
    s.ok(
        Method::DELETE,
        &format!("/apps/other/releases/{other_rel}"),
        None,
    )
    .await;
    s.err(Method::GET, &art_path, None, 404, "not_found", "not found")
        .await;
    // An artifact no release names can be deleted (once).
    let image = s
        .ok(
            Method::POST,
            "/artifacts",
            Some(serde_json::json!({"type": "image", "uri": "registry:web@sha256:1"})),
        )
        .await;
    let image_path = format!("/artifacts/{}", image["id"].as_str().unwrap());
    assert_eq!(
        s.ok(Method::DELETE, &image_path, None).await,
        serde_json::json!({})
    );
    s.err(
        Method::GET,
        &image_path,
        None,
        404,
        "not_found",
        "not found",
    )
    .await;
    s.err(
        Method::DELETE,
        &image_path,
        None,
        404,
        "not_found",
        "not found",
    )
    .await;
    s.err(
        Method::DELETE,
        "/artifacts/x",
        None,
        404,
        "not_found",
        "not found",
    )
    .await;
}
