//! Discovery conformance: every case runs on the in-process registry, over HTTP/SSE and on a
//! real etcd, as one named test per case per backend (`local::CASE`, `http::CASE`,
//! `etcd::CASE`).

mod access;
mod bounds;
mod dns;
mod etcd_more;
mod suite;
mod token;

use slipway_discovery::{HttpRegistry, LocalRegistry, Registry};
use std::sync::Arc;
use std::time::Duration;

pub const TTL: Duration = Duration::from_millis(400);

/// A registry under test.
pub struct Backend {
    pub name: &'static str,
    pub registry: Arc<dyn Registry>,
}

fn local() -> Backend {
    Backend {
        name: "local",
        registry: Arc::new(LocalRegistry::new(TTL)),
    }
}

/// An `HttpRegistry` talking to a fresh `LocalRegistry` served on a free port.
async fn http() -> Backend {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let served = LocalRegistry::new(TTL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let access = slipway_discovery::http::Access::key("suite-key");
    let app = slipway_discovery::http::router(Arc::new(served), access);
    // The server task ends with the test's runtime.
    tokio::spawn(async move { axum::serve(listener, app).await });
    Backend {
        name: "http",
        registry: Arc::new(HttpRegistry::new(&format!("http://{addr}"), "suite-key")),
    }
}

/// An `EtcdRegistry` on a fresh one-member etcd (started in about half a second; it stops
/// with the returned guard). `None` when etcd is not installed (the skip is recorded).
async fn etcd() -> Option<(Backend, slipway_testkit::etcd::EtcdCluster)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // On the test's thread: a skip is recorded under the test's name.
    let cluster = slipway_testkit::etcd::etcd_cluster(1)?;
    let client = slipway_etcd::Client::connect(&cluster.client_urls())
        .await
        .unwrap();
    Some((
        Backend {
            name: "etcd",
            registry: Arc::new(slipway_discovery::EtcdRegistry::new(client, TTL)),
        },
        cluster,
    ))
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::suite::$case(&crate::local()).await;
                }
            )*
        }
        mod http {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::suite::$case(&crate::http().await).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some((backend, _etcd)) = crate::etcd().await else { return };
                    crate::suite::$case(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    register_list_and_leader_is_oldest,
    bad_input_is_refused,
    watch_snapshot_current_then_live_events,
    watch_all_services,
    instances_expire_without_heartbeat_and_live_with_it,
);
