//! The config file: clusters added, defaulted, removed; the server's self-registration; the
//! SLIPWAY_URL/SLIPWAY_KEY override; -c.

use crate::support::{BIN, TestServer, fails, ok};
use assert_cmd::Command;
use std::path::Path;

fn cli(config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("SLIPWAY_CONFIG", config)
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .current_dir(std::env::temp_dir())
        .write_stdin("");
    cmd
}

/// A URL nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn cluster_add_default_and_remove() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nested/config.toml");
    let (one, two) = (closed_url(), closed_url());

    assert_eq!(ok(cli(&config).arg("cluster")), "NAME   URL\n");
    assert_eq!(
        ok(cli(&config).args(["cluster", "add", "one", &one, "k1"])),
        "Cluster \"one\" added.\n"
    );
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the config holds keys");
    ok(cli(&config).args(["cluster", "add", "-d", "two", &two, "k2"]));
    let err = fails(cli(&config).args(["cluster", "add", "two", &one, "k"]));
    assert!(err.contains("already exists"), "{err}");

    let table = ok(cli(&config).arg("cluster"));
    assert_eq!(
        table,
        format!("NAME            URL\none             {one}\ntwo (default)   {two}\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(cli(&config).args(["cluster", "--json"]))).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"name": "one", "url": one, "default": false},
            {"name": "two", "url": two, "default": true},
        ])
    );
    assert_eq!(ok(cli(&config).args(["cluster", "default"])), "two\n");
    ok(cli(&config).args(["cluster", "default", "one"]));
    assert_eq!(ok(cli(&config).args(["cluster", "default"])), "one\n");
    let err = fails(cli(&config).args(["cluster", "default", "nope"]));
    assert!(err.contains("\"nope\" not found"), "{err}");

    // Commands go to the default cluster, or to the one -c names.
    let err = fails(cli(&config).arg("apps"));
    assert_eq!(
        err,
        format!(
            "error: cannot reach the Slipway server at {one}: connection refused — is `slipway server` running?\n"
        )
    );
    let err = fails(cli(&config).args(["-c", "two", "apps"]));
    assert!(err.contains(&two), "{err}");
    let err = fails(cli(&config).args(["-c", "three", "apps"]));
    assert!(err.contains("cluster \"three\" not found"), "{err}");

    assert_eq!(
        ok(cli(&config).args(["cluster", "remove", "one"])),
        "Cluster \"one\" removed.\n"
    );
    assert_eq!(ok(cli(&config).args(["cluster", "default"])), "two\n");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("k1") && text.contains("k2"), "{text}");
}

#[test]
fn the_server_registers_itself_as_the_default_cluster() {
    let s = TestServer::start();
    assert_eq!(
        s.ok(&["cluster"]),
        format!("{:<20}URL\n{:<20}{}\n", "NAME", "default (default)", s.url)
    );
    // The registered key works: the CLI talks to the server with no setup.
    s.ok(&["apps"]);
}

#[test]
fn slipway_url_and_key_override_the_config() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("config.toml");
    let mut cmd = cli(&empty);
    cmd.env("SLIPWAY_URL", &s.url).env("SLIPWAY_KEY", s.key());
    assert_eq!(ok(cmd.args(["create", "from-env"])), "Created from-env\n");

    let mut cmd = cli(&empty);
    cmd.env("SLIPWAY_URL", &s.url).env("SLIPWAY_KEY", "wrong");
    let err = fails(cmd.arg("apps"));
    assert!(err.starts_with("error: unauthorized: "), "{err}");
    assert!(s.ok(&["apps"]).contains("from-env"));
}

#[test]
fn the_client_follows_events_over_sse() {
    use slipway_client::StreamExt;
    use slipway_types::{EventFilter, EventOp, ObjectType};
    let s = TestServer::start();
    let client = s.client();
    s.create_app("events-app");
    crate::support::block_on(async {
        let app = client.app("events-app").await.unwrap();
        let filter = EventFilter {
            app_id: Some(app.id),
            object_types: vec![ObjectType::App],
            ..Default::default()
        };
        let past = client.events(&filter).await.unwrap();
        assert_eq!(past[0].op, EventOp::Create, "{past:?}");

        // Last-Event-ID 0: replay from the start (without it the stream is live-only).
        let mut stream = Box::pin(client.events_stream(&filter, Some(0)).await.unwrap());
        let wait = std::time::Duration::from_secs(20);
        let first = tokio::time::timeout(wait, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(
            (first.object_type, first.op),
            (ObjectType::App, EventOp::Create)
        );
        // A live one: changing the app's meta is an app update.
        let update = slipway_types::AppUpdate {
            meta: Some([("k".to_string(), "v".to_string())].into()),
            ..Default::default()
        };
        client.update_app("events-app", &update).await.unwrap();
        let live = tokio::time::timeout(wait, stream.next())
            .await
            .expect("a live event in time")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(
            (live.object_type, live.op),
            (ObjectType::App, EventOp::Update)
        );
        assert!(live.id > first.id);
    });
}
