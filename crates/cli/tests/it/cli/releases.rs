//! env / limit (each change makes and sets a release), release list/show/rollback.

use crate::support::{TestServer, block_on, created_release};
use slipway_types::{NewRelease, ProcessType};

#[test]
fn env_set_unset_and_get_each_make_a_release() {
    let s = TestServer::start();
    let app = s.create_app("env-app");
    assert_eq!(s.ok(&["env", "-a", &app]), "", "no release, no env");

    let r1 = created_release(&s.ok(&["env", "-a", &app, "set", "FOO=bar", "BAZ=a=b"]));
    let shown = s.json(&["release", "-a", &app, "show", "--json"]);
    assert_eq!(shown["id"], r1.as_str());
    assert_eq!(
        shown["env"],
        serde_json::json!({"FOO": "bar", "BAZ": "a=b"})
    );
    assert_eq!(s.ok(&["env", "-a", &app]), "BAZ=a=b\nFOO=bar\n");
    assert_eq!(s.ok(&["env", "-a", &app, "get", "FOO"]), "bar\n");
    assert_eq!(
        s.json(&["env", "-a", &app, "--json"]),
        serde_json::json!({"FOO": "bar", "BAZ": "a=b"})
    );

    let r2 = created_release(&s.ok(&["env", "-a", &app, "unset", "FOO"]));
    assert_ne!(r1, r2);
    assert_eq!(
        s.fails(&["env", "-a", &app, "get", "FOO"]),
        "error: FOO is not set\n"
    );
    let releases = s.json(&["release", "-a", &app, "--json"]);
    let ids: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [r2.as_str(), r1.as_str()], "newest first");
    let app_json = s.json(&["apps", "--json"]);
    assert_eq!(
        app_json[0]["release"],
        r2.as_str(),
        "the new release is current"
    );

    assert_eq!(
        s.fails(&["env", "-a", &app, "set", "NOPE"]),
        "error: invalid argument \"NOPE\": expected KEY=VALUE\n"
    );
    assert_eq!(
        s.fails(&["env", "-a", &app, "-t", "web", "set", "A=1"]),
        "error: unknown process type \"web\"\n"
    );
    // The server validates names too (nothing was created above).
    assert!(
        s.fails(&["env", "-a", &app, "set", "1BAD=x"])
            .contains("1BAD")
    );
    assert_eq!(
        s.json(&["release", "-a", &app, "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn rollback_picks_the_previous_release_and_refuses_nonsense() {
    let s = TestServer::start();
    let app = s.create_app("rb-app");
    let err = s.fails(&["release", "-a", &app, "rollback", "-y"]);
    assert!(err.contains("has no release"), "{err}");

    let r1 = created_release(&s.ok(&["env", "-a", &app, "set", "V=1"]));
    assert_eq!(
        s.fails(&["release", "-a", &app, "rollback", "-y"]),
        "error: no previous release to roll back to\n"
    );
    let r2 = created_release(&s.ok(&["env", "-a", &app, "set", "V=2"]));

    // Without -y and without a terminal it asks for -y instead of guessing.
    let err = s.fails(&["release", "-a", &app, "rollback"]);
    assert!(err.contains("use -y"), "{err}");

    assert_eq!(
        s.ok(&["release", "-a", &app, "rollback", "-y"]),
        format!("Rolled back to release {r1}.\n")
    );
    assert_eq!(s.ok(&["env", "-a", &app, "get", "V"]), "1\n");
    assert_eq!(
        s.fails(&["release", "-a", &app, "rollback", "-y", &r1]),
        format!("error: release {r1} is already the current release\n")
    );
    // Forward again by (a prefix of) the ID.
    assert_eq!(
        s.ok(&["release", "-a", &app, "rollback", "-y", &r2[..8]]),
        format!("Rolled back to release {r2}.\n")
    );
    let table = s.ok(&["release", "-a", &app]);
    let current: Vec<&str> = table.lines().filter(|l| l.contains("(current)")).collect();
    assert_eq!(current.len(), 1, "{table}");
    assert!(current[0].starts_with(&r2), "{table}");
    assert_eq!(
        s.ok(&["release", "-a", &app, "-q"]),
        format!("{r2}\n{r1}\n")
    );

    // The current release stays; an old one can go.
    let err = s.fails(&["release", "-a", &app, "delete", "-y", &r2]);
    assert!(err.starts_with("error: conflict: "), "{err}");
    assert_eq!(
        s.ok(&["release", "-a", &app, "delete", "-y", &r1]),
        format!("Deleted release {r1}.\n")
    );
    assert_eq!(s.ok(&["release", "-a", &app, "-q"]), format!("{r2}\n"));
    assert_eq!(
        s.fails(&["release", "-a", &app, "rollback", "-y"]),
        "error: no previous release to roll back to\n"
    );
}

#[test]
fn limits_are_parsed_and_stored_per_process_type() {
    let s = TestServer::start();
    let app = s.create_app("limit-app");
    // Releases with process types come from builds; make one through the API.
    let client = s.client();
    block_on(async {
        let mut new = NewRelease::default();
        new.processes.insert("web".into(), ProcessType::default());
        let release = client.create_release(&app, &new).await.unwrap();
        client.set_app_release(&app, release.id).await.unwrap();
    });

    let out = s.ok(&[
        "limit",
        "-a",
        &app,
        "set",
        "web",
        "memory=512MB",
        "disk=2GB",
        "cpu=500",
        "max_fd=1024",
    ]);
    created_release(&out);
    let shown = s.json(&["release", "-a", &app, "show", "--json"]);
    let resources = &shown["processes"]["web"]["resources"];
    assert_eq!(resources["memory"], 536_870_912u64);
    assert_eq!(resources["cpu"], 500);
    assert_eq!(resources["max_fd"], 1024);
    assert_eq!(resources["disk"], 2u64 << 30);

    let table = s.ok(&["limit", "-a", &app]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["TYPE", "MEMORY", "DISK", "CPU", "MAX_FD", "MAX_PROCS"],
            vec!["web", "512MB", "2GB", "500m", "1024", "default"]
        ]
    );
    let json = s.json(&["limit", "-a", &app, "--json"]);
    assert_eq!(json["web"]["memory"], 536_870_912u64);

    assert_eq!(
        s.fails(&["limit", "-a", &app, "set", "worker", "memory=1GB"]),
        "error: unknown process type \"worker\"\n"
    );
    let err = s.fails(&["limit", "-a", &app, "set", "web", "memory=lots"]);
    assert!(err.contains("invalid size"), "{err}");
    let err = s.fails(&["limit", "-a", &app, "set", "web", "disk=4TB"]);
    assert!(
        err.contains("disk limit 4TB is above the maximum of 1TB"),
        "{err}"
    );

    // Per-process env lands in the process type.
    created_release(&s.ok(&["env", "-a", &app, "-t", "web", "set", "WEB_ONLY=1"]));
    let shown = s.json(&["release", "-a", &app, "show", "--json"]);
    assert_eq!(shown["processes"]["web"]["env"]["WEB_ONLY"], "1");
    assert_eq!(shown["processes"]["web"]["resources"]["max_fd"], 1024);
    assert_eq!(
        s.ok(&["env", "-a", &app]),
        "",
        "the app-wide env is untouched"
    );
    assert_eq!(s.ok(&["env", "-a", &app, "-t", "web"]), "WEB_ONLY=1\n");
}

#[test]
fn release_add_deploys_a_file_and_keeps_the_env() {
    let s = TestServer::start();
    let app = s.create_app("add-app");
    s.ok(&["env", "-a", &app, "set", "KEPT=yes"]);
    let file = s.dir.path().join("release.json");
    std::fs::write(
        &file,
        r#"{"env": {"PORT_NOTE": "x"}, "processes": {"web": {"args": ["httpd", "-f", "-p", "8080"]}}}"#,
    )
    .unwrap();
    let id = created_release(&s.ok(&["release", "-a", &app, "add", file.to_str().unwrap()]));
    let shown = s.json(&["release", "-a", &app, "show", "--json"]);
    assert_eq!(shown["id"], id.as_str(), "the new release is current");
    assert_eq!(
        shown["env"],
        serde_json::json!({"KEPT": "yes", "PORT_NOTE": "x"})
    );
    assert_eq!(shown["processes"]["web"]["args"][0], "httpd");
    // Now `web` exists, so limits can be set on it.
    s.ok(&["limit", "-a", &app, "set", "web", "memory=256MB"]);

    std::fs::write(&file, "{\"processes\": ").unwrap();
    let err = s.fails(&["release", "-a", &app, "add", file.to_str().unwrap()]);
    assert!(err.contains("invalid release file"), "{err}");
    let missing = s.fails(&["release", "-a", &app, "add", "/nonexistent/r.json"]);
    assert!(
        missing.contains("cannot read /nonexistent/r.json"),
        "{missing}"
    );
    let count = s
        .json(&["release", "-a", &app, "--json"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 3, "the bad files made no release");
}
