//! The controller over real HTTP: a server on a loopback port per test, SQLite (and one
//! PostgreSQL run of the main flow).

mod api;
mod bad_input;
mod builds;
mod cluster;
mod events;
mod hostile;
mod ops;
mod spec;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;

pub const KEY: &str = "test-key-0123456789";

pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    /// The store behind the API, for what no route writes (the push flow's build records).
    pub store: Arc<dyn slipway_store::Store>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Server {
    pub async fn sqlite() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        Self::on(&url, Box::new(dir)).await
    }

    pub async fn postgres() -> Option<Server> {
        let db = slipway_testkit::postgres_database().await?;
        let url = db.url.clone();
        Some(Self::on(&url, Box::new(db)).await)
    }

    /// Two controllers on one PostgreSQL database (cluster mode).
    pub async fn postgres_pair() -> Option<(Server, Server)> {
        let db = slipway_testkit::postgres_database().await?;
        let url = db.url.clone();
        let a = Self::on(&url, Box::new(db)).await;
        let b = Self::on(&url, Box::new(())).await;
        Some((a, b))
    }

    async fn on(db_url: &str, keep: Box<dyn std::any::Any + Send>) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store: Arc<dyn slipway_store::Store> =
            Arc::new(slipway_store::open(db_url).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = slipway_controller::ControllerConfig {
            api_key: KEY.into(),
            default_domain: "apps.test".into(),
            git_url: url.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(slipway_controller::serve(
            listener,
            store.clone(),
            config,
            async {
                let _ = rx.await;
            },
        ));
        Server {
            url,
            http: reqwest::Client::new(),
            store,
            _shutdown: tx,
            _keep: keep,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(KEY)
    }

    /// Sends a JSON body (or none) and returns the status and the parsed JSON response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.req(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("response is not JSON: {status} {text:?}"));
        (status, json)
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {json}");
        json
    }

    /// Asserts an error response: status, `code`, and a message containing `contains`.
    pub async fn err(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
        contains: &str,
    ) {
        let (got, json) = self.call(method.clone(), path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {json}");
        assert_eq!(json["code"], code, "{method} {path}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(contains),
            "{method} {path}: message {message:?} lacks {contains:?}"
        );
    }
}
