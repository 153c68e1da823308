//! `GET /apps/{app}/log` over real HTTP: NDJSON, SSE, filters, follow, errors.

use crate::{open, src};
use futures_util::StreamExt;
use slipway_logs::Aggregator;
use slipway_store::Store;
use slipway_types::{LogEntry, NewApp, Timestamp};
use std::sync::Arc;
use std::time::Duration;

struct Api {
    url: String,
    app_id: String,
    agg: Aggregator,
    http: reqwest::Client,
    /// The store behind the router, to break it.
    sql: Arc<slipway_store::SqlStore>,
    _dir: tempfile::TempDir,
}

async fn serve() -> Api {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sql = Arc::new(
        slipway_store::open(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap(),
    );
    let store: Arc<dyn Store> = sql.clone();
    let app = store
        .create_app("demo", &NewApp::default(), None)
        .await
        .unwrap();
    let agg = open(&dir.path().join("logs"), 1000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = slipway_logs::http::router(agg.clone(), store);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Api {
        url,
        app_id: app.id.to_string(),
        agg,
        http: reqwest::Client::new(),
        sql,
        _dir: dir,
    }
}

impl Api {
    fn append(&self, ptype: &str, job: &str, stream: &str, msg: &str) {
        self.agg
            .append(
                &src(&self.app_id, ptype, job),
                Timestamp::now(),
                stream,
                msg,
            )
            .unwrap();
    }

    async fn get(&self, query: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/apps/demo/log?{query}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn entries(&self, query: &str) -> Vec<LogEntry> {
        let (status, body) = self.get(query).await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn ndjson_with_filters_and_lines() {
    let api = serve().await;
    api.append("web", "j1", "stdout", "one");
    api.append("web", "j1", "stderr", "two");
    api.append("worker", "j2", "stdout", "three");
    let all = api.entries("").await;
    assert_eq!(
        all.iter().map(|e| e.msg.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(all[0].app, "demo");
    assert_eq!(all[0].app_id, api.app_id);
    assert_eq!(all[1].stream, "stderr");
    assert_eq!(all[2].process_type, "worker");
    let msgs = |v: Vec<LogEntry>| v.into_iter().map(|e| e.msg).collect::<Vec<_>>();
    assert_eq!(msgs(api.entries("lines=1").await), ["three"]);
    assert_eq!(msgs(api.entries("process_type=web").await), ["one", "two"]);
    assert_eq!(msgs(api.entries("job_id=j2").await), ["three"]);
    assert_eq!(msgs(api.entries("stream=stderr").await), ["two"]);
    assert_eq!(msgs(api.entries("lines=0").await), Vec::<String>::new());
    // The app by id works too.
    let (status, _) = api
        .http
        .get(format!("{}/apps/{}/log", api.url, api.app_id))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_requests_are_4xx_with_a_reason() {
    let api = serve().await;
    for (query, status, words) in [
        ("lines=ten", 400, "lines must be a number"),
        ("lines=-1", 400, "lines must be a number"),
        ("follow=maybe", 400, "follow must be true or false"),
        (
            "stream=stdin",
            400,
            "stream must be one of stdout, stderr, init",
        ),
        ("colour=red", 400, "unknown query parameter \\\"colour\\\""),
    ] {
        let (got, body) = api.get(query).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body.contains(words), "{query}: {body}");
        assert!(body.contains("\"code\":\"bad_request\""), "{body}");
    }
    let r = api
        .http
        .get(format!("{}/apps/nope/log", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("not_found"));
}

/// A store error answers here exactly as the controller's API answers it (one mapping): an
/// unreachable database is a 503 `unavailable`, not a 500.
#[tokio::test]
async fn a_store_error_answers_as_the_api_does() {
    let api = serve().await;
    api.sql.close().await;
    let e = api.sql.find_app("demo").await.unwrap_err();
    let want = slipway_api_error::ApiErr::from(e);
    let (status, body) = api.get("").await;
    assert_eq!(status, want.status().as_u16(), "{body}");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "unavailable", "{body}");
    assert_eq!(v["message"], want.0.message, "{body}");
}

#[tokio::test]
async fn follow_streams_history_then_new_lines() {
    let api = serve().await;
    api.append("web", "j1", "stdout", "old");
    let resp = api
        .http
        .get(format!("{}/apps/demo/log?follow=true", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut next_line = async || loop {
        if let Some(i) = text.find('\n') {
            let line: String = text.drain(..=i).collect();
            return serde_json::from_str::<LogEntry>(&line).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a line within 5 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    };
    assert_eq!(next_line().await.msg, "old");
    api.append("web", "j1", "stdout", "new");
    let e = next_line().await;
    assert_eq!((e.msg.as_str(), e.seq), ("new", 2));
}

#[tokio::test]
async fn sse_with_accept_event_stream() {
    let api = serve().await;
    api.append("web", "j1", "stdout", "hello");
    let r = api
        .http
        .get(format!("{}/apps/demo/log", api.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = r.text().await.unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("id: 1"));
    let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
    let e: LogEntry = serde_json::from_str(data).unwrap();
    assert_eq!(e.msg, "hello");
    assert_eq!(lines.next(), Some(""));
}
