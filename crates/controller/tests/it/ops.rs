//! `GET /hosts` and `GET /cluster/status` on a controller without a scheduler (the API alone):
//! the host list is unavailable (503, saying why), the status still answers with the store.
//! With a scheduler, etcd and real hosts they are tested through the binary
//! (`crates/cli/tests/it/ops.rs`).

use crate::Server;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn without_a_scheduler_hosts_are_unavailable_and_the_status_names_the_store() {
    let s = Server::sqlite().await;
    s.err(
        Method::GET,
        "/hosts",
        None,
        503,
        "unavailable",
        "without a scheduler",
    )
    .await;
    let st = s.ok(Method::GET, "/cluster/status", None).await;
    assert_eq!(st["store"], "sqlite", "{st}");
    assert_eq!(st["coordination"], "none", "{st}");
    assert_eq!(st["hosts"], 0, "{st}");
    assert!(st["warnings"][0].as_str().is_some(), "{st}");
    // Behind the key like everything but /ping.
    for path in ["/hosts", "/cluster/status"] {
        let resp = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}
