//! create / apps / info / delete, app resolution from the git remote, unknown apps.

use crate::support::{DOMAIN, TestServer, created_release, git, ok};

fn is_app_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[test]
fn create_with_a_random_name_then_list_info_and_delete() {
    let s = TestServer::start();
    let out = s.ok(&["create"]);
    let name = out
        .strip_prefix("Created ")
        .and_then(|n| n.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{out:?}"))
        .to_string();
    assert!(is_app_name(&name), "{name:?}");

    let table = s.ok(&["apps"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "RELEASE", "CREATED"]);
    assert!(
        lines.any(|l| l.split_whitespace().nth(1) == Some(name.as_str())),
        "{table}"
    );
    let apps = s.json(&["apps", "--json"]);
    assert!(
        apps.as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name.as_str())
    );

    let info = s.ok(&["-a", &name, "info"]);
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], format!("=== {name}"));
    assert!(
        lines[1].starts_with("Git URL: ") && lines[1].ends_with(&format!("/{name}.git")),
        "{info}"
    );
    assert_eq!(lines[2], format!("Web URL: http://{name}.{DOMAIN}"));

    // The app's default route goes with it.
    let out = s.ok(&["delete", "-a", &name, "-y"]);
    assert_eq!(
        out,
        format!("Deleted {name} (removed 1 routes, deleted 0 releases)\n")
    );
    assert!(!s.ok(&["apps"]).contains(&name));
    assert_eq!(
        s.fails(&["info", "-a", &name]),
        format!("error: app \"{name}\" not found\n")
    );
}

#[test]
fn explicit_names_duplicates_and_invalid_names() {
    let s = TestServer::start();
    s.create_app("my-app");
    let err = s.fails(&["create", "my-app"]);
    assert!(err.starts_with("error: conflict: "), "{err}");
    let err = s.fails(&["create", "Bad_Name"]);
    assert!(
        err.starts_with("error: ") && err.contains("invalid app name"),
        "{err}"
    );
    let apps = s.json(&["apps", "--json"]);
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
}

#[test]
fn unknown_apps_are_a_clear_error_with_exit_code_1() {
    let s = TestServer::start();
    for args in [
        &["-a", "nope", "info"][..],
        &["env", "-a", "nope"],
        &["env", "set", "-a", "nope", "A=1"],
        &["release", "-a", "nope"],
        &["route", "-a", "nope"],
        &["meta", "-a", "nope"],
        &["delete", "-a", "nope", "-y"],
    ] {
        assert_eq!(s.fails(args), "error: app \"nope\" not found\n", "{args:?}");
    }
}

#[test]
fn no_app_outside_a_repo_says_how_to_name_one() {
    let s = TestServer::start();
    assert_eq!(
        s.fails(&["env"]),
        "error: no app specified: use -a APP or run inside a repo with a \"slipway\" git remote\n"
    );
}

#[test]
fn delete_needs_confirmation_without_a_terminal() {
    let s = TestServer::start();
    s.create_app("keep-me");
    let err = s.fails(&["delete", "-a", "keep-me"]);
    assert!(err.contains("use -y"), "{err}");
    assert!(s.ok(&["apps"]).contains("keep-me"), "the app must survive");
}

#[test]
fn create_in_a_git_repo_adds_the_remote_that_later_commands_use() {
    let s = TestServer::start();
    let repo = s.dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);

    assert_eq!(
        ok(s.cmd_in(&repo).args(["create", "remote-app"])),
        "Created remote-app\n"
    );
    let url = git(&repo, &["remote", "get-url", "slipway"]);
    assert!(url.trim().ends_with("/remote-app.git"), "{url}");

    // No -a: the app comes from the remote.
    let out = ok(s.cmd_in(&repo).args(["env", "set", "FROM_REMOTE=1"]));
    created_release(&out);
    assert_eq!(ok(s.cmd_in(&repo).args(["env"])), "FROM_REMOTE=1\n");
    assert!(ok(s.cmd_in(&repo).arg("info")).starts_with("=== remote-app\n"));

    // A second create must not silently repoint the remote, nor create the app, without -y.
    let err = crate::support::fails(s.cmd_in(&repo).args(["create", "other-app"]));
    assert!(
        err.contains("already exists") && err.contains("-y"),
        "{err}"
    );
    assert!(!s.ok(&["apps"]).contains("other-app"));
    assert_eq!(
        ok(s.cmd_in(&repo).args(["create", "-y", "other-app"])),
        "Created other-app\n"
    );
    let url = git(&repo, &["remote", "get-url", "slipway"]);
    assert!(url.trim().ends_with("/other-app.git"), "{url}");

    // -r "" adds no remote; -r NAME adds one of that name.
    ok(s.cmd_in(&repo).args(["create", "-r", "", "no-remote"]));
    ok(s.cmd_in(&repo).args(["create", "-r", "staging", "staged"]));
    let remotes = git(&repo, &["remote"]);
    assert_eq!(
        remotes.lines().collect::<Vec<_>>(),
        ["slipway", "staging"],
        "{remotes}"
    );

    // delete in the repo deletes the remote's app and removes the remote.
    let out = ok(s.cmd_in(&repo).args(["delete", "-y"]));
    assert!(out.starts_with("Deleted other-app "), "{out}");
    assert_eq!(git(&repo, &["remote"]).trim(), "staging");
    assert!(s.ok(&["apps"]).contains("remote-app"));
}

#[test]
fn meta_set_and_unset() {
    let s = TestServer::start();
    let app = s.create_app("meta-app");
    s.ok(&["meta", "-a", &app, "set", "owner=me", "team=a=b"]);
    assert_eq!(
        s.json(&["meta", "-a", &app, "--json"]),
        serde_json::json!({"owner": "me", "team": "a=b"})
    );
    let table = s.ok(&["meta", "-a", &app]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["owner", "me"])),
        "{table}"
    );
    s.ok(&["meta", "-a", &app, "unset", "team"]);
    assert_eq!(
        s.json(&["meta", "-a", &app, "--json"]),
        serde_json::json!({"owner": "me"})
    );
    let err = s.fails(&["meta", "-a", &app, "set", "novalue"]);
    assert_eq!(
        err,
        "error: invalid argument \"novalue\": expected KEY=VALUE\n"
    );
}
