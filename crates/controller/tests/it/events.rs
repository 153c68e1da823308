//! The event list and the live stream.

use crate::{KEY, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Reads SSE frames from a streaming response until `n` events have arrived.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(i64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream still open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<i64>().unwrap());
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|v| serde_json::from_str(v.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

fn stream(s: &Server, query: &str) -> reqwest::RequestBuilder {
    s.http
        .get(format!("{}/events{query}", s.url))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
}

#[tokio::test]
async fn stream_replays_then_follows_then_resumes() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "one"})))
        .await;
    let mut resp = stream(&s, "?since_id=0").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let past = read_events(&mut resp, 2).await;
    assert_eq!(past[0].1["object_type"], "app");
    assert_eq!(past[1].1["object_type"], "route");

    s.ok(Method::POST, "/apps", Some(json!({"name": "two"})))
        .await;
    let live = read_events(&mut resp, 2).await;
    assert_eq!(live[0].1["data"]["name"], "two");
    assert!(live[0].0 > past[1].0);
    drop(resp);

    // Resume after the first event: everything after it, in order, nothing twice.
    let mut resumed = stream(&s, "")
        .header("last-event-id", past[0].0.to_string())
        .send()
        .await
        .unwrap();
    let again = read_events(&mut resumed, 3).await;
    let ids: Vec<i64> = again.iter().map(|e| e.0).collect();
    assert_eq!(ids, [past[1].0, live[0].0, live[1].0]);
}

#[tokio::test]
async fn stream_filters_by_app_and_type() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "a"})))
        .await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "b"})))
        .await;
    let mut resp = stream(&s, "?app_id=b&object_types=release")
        .send()
        .await
        .unwrap();
    // A live-only stream: nothing from before. Write to both apps; only b's release arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.ok(Method::POST, "/apps/a/releases", Some(json!({})))
        .await;
    s.ok(
        Method::POST,
        "/apps/b/releases",
        Some(json!({"env": {"X": "1"}})),
    )
    .await;
    let got = read_events(&mut resp, 1).await;
    assert_eq!(got[0].1["object_type"], "release");
    assert_eq!(got[0].1["data"]["env"]["X"], "1");
    let bad = stream(&s, "")
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn list_filters() {
    let s = Server::sqlite().await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "a"})))
        .await;
    s.ok(Method::POST, "/apps", Some(json!({"name": "b"})))
        .await;
    s.ok(Method::POST, "/apps/a/releases", Some(json!({})))
        .await;
    let all = s.ok(Method::GET, "/events", None).await;
    assert_eq!(all.as_array().unwrap().len(), 5);
    let a = s.ok(Method::GET, "/events?app_id=a", None).await;
    assert_eq!(a.as_array().unwrap().len(), 3);
    let releases = s
        .ok(Method::GET, "/events?object_types=release,app", None)
        .await;
    assert_eq!(releases.as_array().unwrap().len(), 3);
    let first = all[0]["id"].as_i64().unwrap();
    let after = s
        .ok(
            Method::GET,
            &format!("/events?since_id={first}&count=2"),
            None,
        )
        .await;
    assert_eq!(after.as_array().unwrap().len(), 2);
    assert_eq!(after[0], all[1]);
    assert_eq!(
        s.ok(Method::GET, &format!("/events/{first}"), None).await,
        all[0]
    );
}
