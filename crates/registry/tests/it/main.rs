//! Protocol-level tests of the registry: a real controller + registry on a real port, SQLite and
//! the filesystem blob store in a temp dir, spoken to over HTTP by reqwest, by Slipway's own push
//! client and (when installed) by skopeo.

mod protocol;
mod push;
mod shared;

use slipway_blobstore::{BlobStore, FsBlobStore};
use slipway_registry::Registry;
use slipway_store::Store;
use std::sync::Arc;

pub struct Server {
    pub url: String,
    pub key: String,
    pub store: Arc<dyn Store>,
    /// The same store, to break it (`close`).
    pub sql: Arc<slipway_store::SqlStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub reg: Registry,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let sql = Arc::new(slipway_store::open(&url).await.unwrap());
        let store: Arc<dyn Store> = sql.clone();
        let blobs: Arc<dyn BlobStore> =
            Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
        let reg =
            Registry::open(store.clone(), blobs.clone(), dir.path().join("registry")).unwrap();
        let key = "k".repeat(64);
        let config = slipway_controller::ControllerConfig {
            api_key: key.clone(),
            default_domain: "apps.test".into(),
            git_url: "http://unused".into(),
        };
        let router = slipway_registry::with_api_version(slipway_controller::router_with_extra(
            store.clone(),
            config,
            None,
            slipway_registry::router(reg.clone()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(slipway_controller::serve_router(
            listener,
            router,
            std::future::pending(),
        ));
        let deployer = slipway_deploy::Deployer::new(store.clone(), Default::default());
        tokio::spawn(deployer.run());
        Server {
            url: format!("http://{addr}"),
            key,
            store,
            sql,
            blobs,
            reg,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub async fn create_app(&self, name: &str) -> slipway_types::App {
        self.store
            .create_app(name, &Default::default(), Some("apps.test"))
            .await
            .unwrap()
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .basic_auth("x", Some(&self.key))
    }

    pub fn client(&self) -> slipway_registry::client::PushClient {
        slipway_registry::client::PushClient::new(&self.url, &self.key).unwrap()
    }

    /// Sets the app's deploy timeout (seconds): deploys that need jobs fail that fast here.
    pub async fn deploy_timeout(&self, app: &slipway_types::App, secs: u32) {
        let update = slipway_types::AppUpdate {
            deploy_timeout: Some(secs),
            ..Default::default()
        };
        self.store.update_app(app.id, &update).await.unwrap();
    }

    /// Waits until the app's deployments are all finished (the deployer runs in the background).
    pub async fn settle(&self, app: &slipway_types::App) {
        for _ in 0..200 {
            let deps = self.store.list_deployments(app.id).await.unwrap();
            if deps.iter().all(|d| d.finished_at.is_some()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("deployments of {} did not finish", app.name);
    }
}

/// The registry's JSON error code of a response.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap();
    (
        status,
        v["errors"][0]["code"].as_str().unwrap_or("").to_string(),
        v["errors"][0]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A small runnable image: busybox + an app layer serving `index.html` with httpd.
pub fn web_image(body: &str) -> slipway_registry::testimage::ImageBuilder {
    use slipway_registry::testimage::{ImageBuilder, LayerBuilder, busybox_layer};
    ImageBuilder::new()
        .layer(busybox_layer().unwrap())
        .layer(
            LayerBuilder::new()
                .dir("www")
                .file("www/index.html", 0o644, body.as_bytes())
                .finish(),
        )
        .cmd(&["httpd", "-f", "-p", "8080", "-h", "/www"])
        .env("PATH=/bin")
        .env("GREETING=hello")
        .expose(8080)
        .working_dir("/www")
}
