//! Issue 23 with the real binary: `slipway cluster backup` of a server running a git-pushed app,
//! an image app and an app with a TCP route and env, taken while another app is being pushed,
//! restored by a second server in a fresh data dir (`slipway server --restore`), which serves
//! all three as before; `slipway export`/`slipway import` of an app between two servers running
//! at once; truncated, altered, hostile and too-new archives refused with nothing written.
//! `n` range 4400-4499; TCP route ports 46450-46499.

use crate::push::{app_repo, commit, create_in, http, push};
use crate::support::*;
use slipway_registry::testimage::{ImageBuilder, LayerBuilder, busybox_layer};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// busybox serving `body` on 8080 (process type `app`).
fn web_image(body: &str) -> ImageBuilder {
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
        .expose(8080)
}

fn image_app(s: &TestServer, app: &str, body: &str) {
    s.create_app(app);
    let archive = s.dir.path().join(format!("{app}.tar"));
    web_image(body)
        .write_docker_archive(&archive, &format!("{app}:v1"))
        .unwrap();
    s.ok(&["-a", app, "image", "push", archive.to_str().unwrap()]);
    s.ok(&["-a", app, "scale", "app=1"]);
}

/// An app of the stack alone (no artifact) serving its `GREETING`, two web jobs.
fn env_app(s: &TestServer, app: &str) {
    s.create_app(app);
    block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.env.insert("GREETING".into(), format!("hello from {app}"));
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo $GREETING > /tmp/www/index.html; trap 'exit 0' TERM; \
                     httpd -f -p $PORT -h /tmp/www & wait"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release(app, &r).await.unwrap();
        c.set_app_release(app, r.id).await.unwrap();
    });
    s.ok(&["-a", app, "scale", "web=2"]);
}

fn body_of(resp: &str) -> Option<String> {
    if !resp.starts_with("HTTP/1.1 200") {
        return None;
    }
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Polls `addr` for `host` until it answers 200; its body.
fn served(addr: &str, host: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let resp = std::panic::catch_unwind(|| http(addr, "/", host, None)).unwrap_or_default();
        if let Some(b) = body_of(&resp) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "{host} at {addr} never answered 200: {resp}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn jobs_up(s: &TestServer, app: &str, ptype: &str) -> usize {
    let jobs = s.json(&["-a", app, "ps", "--json"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "up" && j["process_type"] == ptype)
        .count()
}

fn running_build(s: &TestServer, app: &str) -> bool {
    let jobs = s.json(&["-a", app, "ps", "--json"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .any(|j| j["process_type"] == "build")
}

fn router_flags(tcp: bool, more: &[&str]) -> Vec<String> {
    let mut extra: Vec<&str> = Vec::new();
    if tcp {
        extra.extend(["--tcp-ports", "46450-46499"]);
    }
    extra.extend(more);
    loopback_router(&extra)
}

#[test]
fn a_backup_taken_during_a_push_restores_three_apps_on_a_fresh_server() {
    if skip_unless_root("a_backup_taken_during_a_push_restores_three_apps_on_a_fresh_server") {
        return;
    }
    let k = std::process::id() % 25;
    let tcp_port = (46450 + k).to_string();
    let a = HostServer::start(4400 + k, &router_flags(true, &[]));
    let s = &a.s;
    let router = logged_addr(s, "router: HTTP on ");

    let dir = app_repo(
        s,
        "gitapp",
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "hello from git\n"),
        ],
    );
    create_in(s, &dir, "gitapp");
    let (pushed, err) = push(s, &dir, "main");
    assert!(pushed, "{err}");
    image_app(s, "imgapp", "hello from an image");
    env_app(s, "tcpapp");
    s.ok(&["-a", "tcpapp", "route", "add", "tcp", "-p", &tcp_port]);
    let tcp = format!("127.0.0.1:{tcp_port}");
    let want = [
        ("gitapp", served(&router, &format!("gitapp.{DOMAIN}"))),
        ("imgapp", served(&router, &format!("imgapp.{DOMAIN}"))),
        ("tcpapp", served(&router, &format!("tcpapp.{DOMAIN}"))),
    ];
    assert_eq!(want[0].1, "hello from git\n");
    assert_eq!(want[1].1, "hello from an image");
    assert_eq!(want[2].1, "hello from tcpapp\n");
    assert_eq!(served(&tcp, "any"), "hello from tcpapp\n");

    // A fourth app is being pushed (its build job runs) while the backup is taken.
    let busy = app_repo(
        s,
        "busy",
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "busy\n"),
        ],
    );
    commit(&busy, &[("www/more.html", "more\n")], "more");
    create_in(s, &busy, "busy");
    let pusher = {
        let (config, home, busy) = (s.config.clone(), s.dir.path().to_path_buf(), busy.clone());
        std::thread::spawn(move || {
            std::process::Command::new("git")
                .args(["push", "slipway", "main"])
                .current_dir(busy)
                .env("SLIPWAY_CONFIG", config)
                .env("HOME", home)
                .env("GIT_TERMINAL_PROMPT", "0")
                .output()
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running_build(s, "busy") {
        assert!(Instant::now() < deadline, "the busy app's build never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Outside the server's dir, which goes with it.
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("platform.tar");
    let t0 = Instant::now();
    let out = s
        .cmd()
        .args(["cluster", "backup", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = !pusher.is_finished();
    let size = std::fs::metadata(&file).unwrap().len();
    eprintln!("backup: {size} bytes in {took:?}, taken during the push: {during}");
    let push_out = pusher.join().unwrap();
    assert!(
        push_out.status.success(),
        "{}",
        String::from_utf8_lossy(&push_out.stderr)
    );
    let old_key = s.key();
    drop(a);

    // A fresh server restores it; every app answers as before, formations as they were.
    let t0 = Instant::now();
    let b = HostServer::start(
        4425 + k,
        &router_flags(true, &["--restore", file.to_str().unwrap()]),
    );
    let s = &b.s;
    eprintln!("restore and start: {:?}", t0.elapsed());
    let router = logged_addr(s, "router: HTTP on ");
    for (app, body) in &want {
        assert_eq!(&served(&router, &format!("{app}.{DOMAIN}")), body, "{app}");
    }
    assert_eq!(served(&tcp, "any"), "hello from tcpapp\n");
    assert_eq!(
        s.ok(&["-a", "tcpapp", "env", "get", "GREETING"]).trim(),
        "hello from tcpapp"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs_up(s, "tcpapp", "web") != 2 || jobs_up(s, "imgapp", "app") != 1 {
        assert!(
            Instant::now() < deadline,
            "formations not as before:\n{}\n{}",
            s.ok(&["-a", "tcpapp", "ps"]),
            s.ok(&["-a", "imgapp", "ps"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The push under way: its app is there, with or without the release it was making.
    let releases = s.json(&["-a", "busy", "release", "--json"]);
    assert!(releases.as_array().unwrap().len() <= 1, "{releases}");
    // Secrets were not asked for: the restored server made its own key.
    assert_ne!(s.key(), old_key);
}

#[test]
fn an_app_exported_from_one_server_is_imported_into_another_running_at_once() {
    if skip_unless_root("an_app_exported_from_one_server_is_imported_into_another_running_at_once")
    {
        return;
    }
    let k = std::process::id() % 25;
    let a = HostServer::start(4450 + k, &router_flags(false, &[]));
    let b = HostServer::start(4475 + k, &router_flags(false, &[]));
    let (sa, sb) = (&a.s, &b.s);
    image_app(sa, "moved", "moved by export");
    sa.ok(&["-a", "moved", "env", "set", "COLOR=blue"]);
    sa.ok(&[
        "-a",
        "moved",
        "route",
        "add",
        "http",
        "-s",
        "moved-app",
        "www.moved.test",
    ]);
    let file = sa.dir.path().join("moved.tar");
    sa.ok(&["-a", "moved", "export", "-f", file.to_str().unwrap()]);

    let out = sb.ok(&[
        "import",
        "-f",
        file.to_str().unwrap(),
        "--routes",
        "--formation",
    ]);
    assert!(out.contains("Imported moved as moved"), "{out}");
    let router_b = logged_addr(sb, "router: HTTP on ");
    assert_eq!(
        served(&router_b, &format!("moved.{DOMAIN}")),
        "moved by export"
    );
    assert_eq!(served(&router_b, "www.moved.test"), "moved by export");
    assert_eq!(
        sb.ok(&["-a", "moved", "env", "get", "COLOR"]).trim(),
        "blue"
    );
    let app_a = sa.json(&["apps", "--json"]);
    let app_b = sb.json(&["apps", "--json"]);
    let id = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "moved")
            .unwrap()["id"]
            .clone()
    };
    assert_ne!(id(&app_a), id(&app_b), "imported apps get new ids");

    // Again under another name: the exported routes are taken, and said so.
    let err = sb.fails(&[
        "import",
        "-f",
        file.to_str().unwrap(),
        "--name",
        "copy",
        "--routes",
        "--formation",
    ]);
    assert!(
        err.contains("route(s) were not created") && err.contains("www.moved.test"),
        "{err}"
    );
    assert_eq!(
        served(&router_b, &format!("copy.{DOMAIN}")),
        "moved by export"
    );
    // Under the same name: the app exists.
    let err = sb.fails(&["import", "-f", file.to_str().unwrap()]);
    assert!(err.contains("--name"), "{err}");
}

/// A ustar header for `name` of `size` bytes, of type `kind` (`b'0'` file, `b'2'` symlink).
fn header(name: &str, size: u64, kind: u8, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}", width = len - 1);
        h[at..at + len - 1].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o600);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// An archive of `members` (name, type, link, content) with `manifest` first.
fn archive(manifest: &serde_json::Value, members: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).unwrap();
    let mut out = Vec::new();
    let mut add = |name: &str, kind: u8, link: &str, data: &[u8]| {
        out.extend(header(name, data.len() as u64, kind, link));
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    add("manifest.json", b'0', "", &json);
    for (name, kind, link, data) in members {
        add(name, *kind, link, data);
    }
    out.extend([0u8; 1024]);
    out
}

/// The members of a tar archive by name (regular files only).
fn members(tar: &[u8]) -> std::collections::HashMap<String, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let h = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_field = String::from_utf8_lossy(&h[124..135])
            .trim_end_matches('\0')
            .to_string();
        let size = usize::from_str_radix(size_field.trim(), 8).unwrap();
        out.insert(name, tar[at + 512..at + 512 + size].to_vec());
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn sha(data: &[u8]) -> String {
    slipway_blobstore::Digest::of_bytes(data).hex().to_string()
}

fn manifest(kind: &str, version: &str, members: &[(&str, &[u8])]) -> serde_json::Value {
    serde_json::json!({
        "format": 1, "kind": kind, "slipway_version": version, "schema_version": 0,
        "created_at": "2026-01-01T00:00:00Z",
        "members": members.iter().map(|(n, d)| serde_json::json!({
            "name": n, "size": d.len(), "sha256": sha(d)
        })).collect::<Vec<_>>(),
    })
}

/// `slipway server --restore FILE --restore-only` into `data`; its stderr (it must fail).
fn restore_fails(s: &TestServer, file: &Path, data: &Path) -> String {
    restore_fails_with(s, file, data, &[])
}

fn restore_fails_with(s: &TestServer, file: &Path, data: &Path, more: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--no-host",
            "--no-router",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(more)
        .arg("--data-dir")
        .arg(data)
        .arg("--restore")
        .arg(file)
        .arg("--restore-only")
        .env("SLIPWAY_CONFIG", &s.config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "restored {}", file.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn truncated_altered_hostile_and_newer_archives_are_refused_and_nothing_is_written() {
    let s = TestServer::start();
    s.create_app("kept");
    s.ok(&["-a", "kept", "env", "set", "A=1"]);
    let dir = s.dir.path();
    let backup = dir.join("b.tar");
    s.ok(&["cluster", "backup", "-f", backup.to_str().unwrap()]);
    let export = dir.join("e.tar");
    s.ok(&["-a", "kept", "export", "-f", export.to_str().unwrap()]);
    let whole = std::fs::read(&backup).unwrap();
    let restores = dir.join("restores");
    std::fs::create_dir(&restores).unwrap();
    let write = |name: &str, data: &[u8]| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let nothing_written = |what: &str| {
        assert!(
            dir_entries(&restores).is_empty(),
            "{what}: left {:?}",
            dir_entries(&restores)
        );
    };
    let data = restores.join("data");

    // Truncated (cut inside the store, and before the tar's end), altered (a byte of the store).
    for cut in [whole.len() / 2, whole.len() - 600] {
        let f = write("cut.tar", &whole[..cut]);
        let err = restore_fails(&s, &f, &data);
        assert!(err.contains("truncated"), "{err}");
        nothing_written("truncated");
    }
    let mut altered = whole.clone();
    altered[4000] ^= 0x20;
    let err = restore_fails(&s, &write("altered.tar", &altered), &data);
    assert!(
        err.contains("does not match its checksum") && err.contains("store.db"),
        "{err}"
    );
    nothing_written("altered");

    // Hostile: a member that escapes, a symlink, a member larger than listed, one not listed.
    let payload: &[u8] = b"{}";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            archive(
                &manifest("app", "0.1.0", &[("../app.json", payload)]),
                &[("../app.json", b'0', "", payload)],
            ),
            "not a plain relative path",
        ),
        (
            "absolute",
            archive(
                &manifest("app", "0.1.0", &[("app.json", payload)]),
                &[("/etc/app.json", b'0', "", payload)],
            ),
            "not a plain relative path",
        ),
        (
            "symlink",
            archive(
                &manifest("app", "0.1.0", &[("app.json", payload)]),
                &[("app.json", b'2', "/etc/passwd", b"")],
            ),
            "is a symlink",
        ),
        (
            "oversize",
            archive(
                &manifest("app", "0.1.0", &[("app.json", payload)]),
                &[("app.json", b'0', "", &[b' '; 5000])],
            ),
            "is not the \"app.json\" (2 bytes) the manifest lists next",
        ),
        (
            "huge",
            archive(
                &serde_json::json!({
                    "format": 1, "kind": "app", "slipway_version": "0.1.0", "schema_version": 0,
                    "created_at": "2026-01-01T00:00:00Z",
                    "members": [{"name": "app.json", "size": 1u64 << 40, "sha256": sha(b"")}],
                }),
                &[],
            ),
            "neither a blob nor a file this format has (at most 16777216 bytes)",
        ),
        (
            "unlisted",
            archive(
                &manifest("app", "0.1.0", &[("app.json", payload)]),
                &[
                    ("app.json", b'0', "", payload),
                    ("extra", b'0', "", payload),
                ],
            ),
            "members its manifest does not list",
        ),
        (
            "newer",
            archive(
                &manifest("app", "99.1.0", &[("app.json", payload)]),
                &[("app.json", b'0', "", payload)],
            ),
            "written by Slipway 99.1.0",
        ),
    ];
    let apps_before = s.ok(&["apps"]);
    for (name, bytes, want) in &cases {
        let f = write(&format!("{name}.tar"), bytes);
        let err = s.fails(&["import", "-f", f.to_str().unwrap(), "--name", "evil"]);
        assert!(err.contains(want), "{name}: {err}");
    }
    assert_eq!(s.ok(&["apps"]), apps_before, "an import was half done");
    // A whole export whose release the server refuses (an env name it does not take): the app
    // the import had created is removed again.
    let exported = std::fs::read(&export).unwrap();
    let mut app_json: serde_json::Value =
        serde_json::from_slice(&members(&exported)["app.json"]).unwrap();
    app_json["release"]["env"]["BAD NAME"] = "x".into();
    let app_json = serde_json::to_vec(&app_json).unwrap();
    let bad_release = archive(
        &manifest("app", "0.1.0", &[("app.json", &app_json)]),
        &[("app.json", b'0', "", &app_json)],
    );
    let f = write("bad-release.tar", &bad_release);
    let err = s.fails(&["import", "-f", f.to_str().unwrap(), "--name", "rolled"]);
    assert!(err.contains("the app was removed again"), "{err}");
    assert_eq!(
        s.ok(&["apps"]),
        apps_before,
        "the failed import left its app"
    );
    // The backup is behind the API key like everything else.
    let resp = http(s.url.trim_start_matches("http://"), "/backup", "x", None);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    // The same kind of archive as a platform backup, and a newer platform backup.
    let hostile = archive(
        &manifest("platform", "0.1.0", &[("store.db", payload)]),
        &[("store.db", b'2', "/etc/passwd", b"")],
    );
    let err = restore_fails(&s, &write("hostile.tar", &hostile), &data);
    assert!(err.contains("is a symlink"), "{err}");
    let newer = archive(&manifest("platform", "99.1.0", &[]), &[]);
    let err = restore_fails(&s, &write("newer.tar", &newer), &data);
    assert!(err.contains("written by Slipway 99.1.0"), "{err}");
    // An export is not a backup, nor the reverse.
    let err = restore_fails(&s, &export, &data);
    assert!(err.contains("not a platform backup"), "{err}");
    nothing_written("hostile");

    // The intact backup restores, once: a data dir with a platform is refused without force.
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--no-host",
            "--no-router",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--restore")
        .arg(&backup)
        .arg("--restore-only")
        .env("SLIPWAY_CONFIG", &s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("slipway.db").exists());
    let err = restore_fails(&s, &backup, &data);
    assert!(
        err.contains("already holds a platform") && err.contains("--restore-force"),
        "{err}"
    );

    // With --include-secrets the restored server answers the old key, and has the app.
    let with_secrets = dir.join("secrets.tar");
    s.ok(&[
        "cluster",
        "backup",
        "--include-secrets",
        "-f",
        with_secrets.to_str().unwrap(),
    ]);
    let fresh = tempfile::tempdir().unwrap();
    let restored = TestServer::start_in(
        fresh,
        &[
            "--no-host".to_string(),
            "--restore".to_string(),
            with_secrets.display().to_string(),
        ],
    );
    assert_eq!(restored.key(), s.key());
    assert_eq!(restored.ok(&["-a", "kept", "env", "get", "A"]).trim(), "1");
}

/// Cluster mode: the PostgreSQL store (blobs included) is dumped by `pg_dump` and restored by
/// `pg_restore` into an empty database; a database holding a store is refused, and so is the
/// backup where the other kind of store is expected.
#[test]
fn a_postgres_store_is_backed_up_and_restored_into_an_empty_database() {
    let Some(db1) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let Some(db2) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let s = TestServer::start_with(&["--no-host".into(), "--database-url".into(), db1.url.clone()]);
    s.create_app("pgapp");
    let archive = s.dir.path().join("img.tar");
    web_image("from postgres")
        .write_docker_archive(&archive, "pgapp:v1")
        .unwrap();
    s.ok(&["-a", "pgapp", "image", "push", archive.to_str().unwrap()]);
    s.ok(&["-a", "pgapp", "env", "set", "WHERE=pg"]);
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("pg.tar");
    s.ok(&["cluster", "backup", "-f", file.to_str().unwrap()]);
    let release = s.json(&["-a", "pgapp", "release", "show", "--json"]);

    let restored = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        &[
            "--no-host".into(),
            "--database-url".into(),
            db2.url.clone(),
            "--restore".into(),
            file.display().to_string(),
        ],
    );
    assert_eq!(
        restored.ok(&["-a", "pgapp", "env", "get", "WHERE"]).trim(),
        "pg"
    );
    let again = restored.json(&["-a", "pgapp", "release", "show", "--json"]);
    assert_eq!(again["id"], release["id"]);
    // The image's blobs came with the dump: the restored server serves them.
    let store = slipway_blobstore::HttpBlobStore::new(&restored.url, Some(restored.key()));
    block_on(async {
        let c = restored.client();
        for id in again["artifacts"].as_array().unwrap() {
            let a = c
                .artifact(id.as_str().unwrap().parse().unwrap())
                .await
                .unwrap();
            let digests = slipway_blobstore::gc::artifact_digests(&a);
            assert!(digests.len() >= 3, "{a:?}");
            for d in digests {
                assert!(
                    slipway_blobstore::BlobStore::head(&store, &d)
                        .await
                        .unwrap()
                        .is_some(),
                    "{d}"
                );
            }
        }
    });
    // Once more into the same database: refused; and without --database-url: the wrong kind.
    let err = restore_fails_with(
        &s,
        &file,
        &keep.path().join("d1"),
        &["--database-url", &db2.url],
    );
    assert!(err.contains("already holds a Slipway store"), "{err}");
    let err = restore_fails(&s, &file, &keep.path().join("d2"));
    assert!(err.contains("is of a PostgreSQL store"), "{err}");
}

/// What the CLI writes and stages is its owner's only: a backup or export never goes through a
/// symlink planted at `FILE.partial` (a root-run CLI in a shared dir), nor keeps a leftover
/// file's wider mode; an import's scratch copy of the app's env is in a new 0700 dir.
#[test]
fn backup_and_export_files_and_the_import_scratch_dir_are_private() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    let s = TestServer::start();
    s.create_app("private");
    s.ok(&["-a", "private", "env", "set", "TOKEN=hunter2-private"]);
    let dir = s.dir.path();

    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let backup = dir.join("b.tar");
    std::os::unix::fs::symlink(&victim, dir.join("b.tar.partial")).unwrap();
    s.ok(&["cluster", "backup", "-f", backup.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(std::fs::symlink_metadata(&backup).unwrap().is_file());
    assert_eq!(mode(&backup), 0o600);
    assert!(!dir.join("b.tar.partial").exists());

    let export = dir.join("e.tar");
    let leftover = dir.join("e.tar.partial");
    std::fs::write(&leftover, "left by a crash").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.ok(&["-a", "private", "export", "-f", export.to_str().unwrap()]);
    assert_eq!(mode(&export), 0o600, "the leftover's mode was kept");

    // The import is held before the archive's end (read from a pipe): its scratch copy is there.
    let bytes = std::fs::read(&export).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut import = std::process::Command::new(BIN)
        .args(["import", "--name", "copied"])
        .env("SLIPWAY_CONFIG", &s.config)
        .env("HOME", dir)
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() - 1024]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = loop {
        let found = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("files/app.json").exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the import never staged app.json"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(mode(&staged), 0o700, "{}", staged.display());
    assert_eq!(mode(&staged.join("files/app.json")), 0o600);
    stdin.write_all(&bytes[bytes.len() - 1024..]).unwrap();
    drop(stdin);
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir_entries(&tmp).is_empty(), "{:?}", dir_entries(&tmp));
    assert_eq!(
        s.ok(&["-a", "copied", "env", "get", "TOKEN"]).trim(),
        "hunter2-private"
    );

    // An import whose release the server refuses, after its artifact was created: the artifact
    // goes with the app (else it pins its blob forever: a backup still lists the blob).
    let mut app_json: serde_json::Value =
        serde_json::from_slice(&members(&bytes)["app.json"]).unwrap();
    let slug: &[u8] = b"the bytes of an orphaned slug";
    let hex = sha(slug);
    app_json["artifacts"] = serde_json::json!([{
        "id": "00000000-0000-4000-8000-000000000001", "type": "slug",
        "uri": format!("blob:sha256:{hex}"), "meta": {},
        "created_at": app_json["release"]["created_at"],
    }]);
    app_json["release"]["env"]["BAD NAME"] = "x".into();
    let app_json = serde_json::to_vec(&app_json).unwrap();
    let blob = format!("blobs/sha256/{hex}");
    let hostile = archive(
        &manifest("app", "0.1.0", &[("app.json", &app_json), (&blob, slug)]),
        &[("app.json", b'0', "", &app_json), (&blob, b'0', "", slug)],
    );
    let f = dir.join("orphan.tar");
    std::fs::write(&f, hostile).unwrap();
    let err = s.fails(&["import", "-f", f.to_str().unwrap(), "--name", "orphan"]);
    assert!(err.contains("the app was removed again"), "{err}");
    let after = dir.join("after.tar");
    s.ok(&["cluster", "backup", "-f", after.to_str().unwrap()]);
    let listed = members(&std::fs::read(&after).unwrap());
    assert!(listed.contains_key("store.db"), "{:?}", listed.keys());
    assert!(
        !listed.contains_key(&blob),
        "the failed import's artifact still names its blob"
    );
}
