use super::*;
use slipway_types::HealthCheckType;

fn app(name: &str) -> App {
    serde_json::from_value(serde_json::json!({
        "id": "0b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
        "name": name,
        "strategy": "all-at-once",
        "deploy_timeout": 120,
        "created_at": "2026-11-22T05:00:00Z",
        "updated_at": "2026-11-22T05:00:00Z",
    }))
    .unwrap()
}

fn release(json: serde_json::Value) -> Release {
    let mut v = serde_json::json!({
        "id": "1b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
        "app_id": "0b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
        "created_at": "2026-11-22T05:00:00Z",
    });
    v.as_object_mut()
        .unwrap()
        .extend(json.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

fn slug(types: &[&str]) -> Slug {
    Slug {
        digest: format!("sha256:{}", "ab".repeat(32)),
        size: 10,
        buildpacks: vec!["procfile".into()],
        process_types: types.iter().map(|t| t.to_string()).collect(),
        stack: "busybox".into(),
        commit: "c0ffee".into(),
    }
}

fn image(cmd: &[&str], port: Option<u16>, env: &[(&str, &str)]) -> Image {
    Image {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        port,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The check of the generated port of each type of `r`.
fn check(r: &NewRelease, ptype: &str) -> HealthCheck {
    r.processes[ptype].ports[0]
        .service
        .as_ref()
        .and_then(|s| s.check.clone())
        .unwrap()
}

#[test]
fn a_slug_release_keeps_env_and_per_type_settings_and_gives_web_types_a_service() {
    let app = app("shop");
    let mut prev = release(serde_json::json!({
        "env": {"GREETING": "hi"},
        "processes": {
            "web": {"args": ["old"], "ports": [{"port": 5000}], "resources": {"memory": 1048576}},
            "gone": {"args": ["x"]}
        },
    }));
    prev.processes
        .get_mut("web")
        .unwrap()
        .env
        .insert("W".into(), "1".into());
    let art = Id::new_v4();
    let r = release_from_slug(&app, Some(&prev), art, &slug(&["web", "worker", "api-web"]));
    assert_eq!(r.artifacts, vec![art]);
    assert_eq!(r.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(r.meta.get("git.commit").map(String::as_str), Some("c0ffee"));
    assert_eq!(
        r.processes.keys().collect::<Vec<_>>(),
        ["api-web", "web", "worker"]
    );
    let web = &r.processes["web"];
    assert!(web.args.is_empty(), "slug jobs run /runner/init start web");
    assert_eq!(web.ports[0].port, 5000, "the previous port is kept");
    assert_eq!(web.resources, prev.processes["web"].resources);
    assert_eq!(web.env.get("W").map(String::as_str), Some("1"));
    let api = &r.processes["api-web"];
    let svc = api.ports[0].service.as_ref().unwrap();
    assert_eq!(svc.name, "shop-api-web");
    assert_eq!(svc.check.as_ref().unwrap().kind, HealthCheckType::Tcp);
    assert!(r.processes["worker"].ports.is_empty());
    let first = release_from_slug(&app, None, art, &slug(&["web"]));
    let svc = first.processes["web"].ports[0].service.as_ref().unwrap();
    assert_eq!(svc.name, "shop-web");
    assert!(first.env.is_empty());
    let a = slug_artifact(&slug(&["web"]));
    assert_eq!(a.uri, format!("blob:sha256:{}", "ab".repeat(32)));
    assert_eq!(a.digest.as_deref(), Some(&a.uri[5..]));
    assert_eq!(a.meta.get("stack").map(String::as_str), Some("busybox"));
    assert_eq!(
        a.meta.get("buildpacks").map(String::as_str),
        Some("procfile")
    );
}

/// The same kind of check had 2 s/30 s on the git path and 10 s/60 s on the image path.
#[test]
fn slugs_and_images_get_the_same_default_check() {
    let app = app("same");
    let from_slug = release_from_slug(&app, None, Id::new_v4(), &slug(&["web"]));
    let from_image =
        release_from_image(&app, None, false, "sha256:1", &image(&["run"], None, &[])).unwrap();
    let want = default_check();
    assert_eq!(check(&from_slug, "web"), want);
    assert_eq!(check(&from_image, IMAGE_TYPE), want);
    assert_eq!(
        (
            want.kind,
            want.interval_ms,
            want.threshold,
            want.start_timeout_ms,
            want.kill_down
        ),
        (HealthCheckType::Tcp, 2000, 2, 30_000, false),
        "Flynn's interval and threshold, a start timeout for slow buildpack apps, no kill"
    );
}

#[test]
fn an_image_release_runs_its_command_as_app_on_its_first_exposed_port() {
    let app = app("img");
    let r = release_from_image(
        &app,
        None,
        false,
        "sha256:d1",
        &image(&["httpd", "-f"], Some(9000), &[("A", "1")]),
    )
    .unwrap();
    assert!(r.artifacts.is_empty(), "the caller adds the artifact");
    assert_eq!(r.processes.keys().collect::<Vec<_>>(), [IMAGE_TYPE]);
    let p = &r.processes[IMAGE_TYPE];
    assert_eq!(p.args, ["httpd", "-f"]);
    assert_eq!(p.ports[0].port, 9000);
    assert_eq!(p.ports[0].service.as_ref().unwrap().name, "img-app");
    assert_eq!(r.meta[META_GENERATED], "true");
    assert_eq!(r.meta[META_DIGEST], "sha256:d1");
    assert_eq!(r.env["A"], "1");
    let none = release_from_image(&app, None, false, "sha256:d1", &image(&["x"], None, &[]));
    assert_eq!(
        none.unwrap().processes[IMAGE_TYPE].ports[0].port,
        DEFAULT_PORT
    );
    assert_eq!(
        release_from_image(&app, None, false, "sha256:d1", &image(&[], None, &[])),
        Err(ImageReleaseError::NoCommand)
    );
}

#[test]
fn an_image_keeps_user_types_but_not_a_slug_build_s() {
    let app = app("kept");
    let prev = release(serde_json::json!({
        "processes": {
            "web": {"resources": {"memory": 268435456}},
            "worker": {"args": ["sleep", "1000"]}
        },
    }));
    let r = release_from_image(
        &app,
        Some(&prev),
        false,
        "sha256:d",
        &image(&["srv"], None, &[]),
    )
    .unwrap();
    assert_eq!(r.processes["web"].args, ["srv"], "no command: the image's");
    assert_eq!(r.processes["web"].resources.memory, Some(256 << 20));
    assert_eq!(r.processes["worker"].args, ["sleep", "1000"]);
    assert_eq!(r.meta[META_GENERATED], "false");
    // The same types from a slug build are the build's: the image gets its own `app`.
    let r = release_from_image(
        &app,
        Some(&prev),
        true,
        "sha256:d",
        &image(&["srv"], None, &[]),
    )
    .unwrap();
    assert_eq!(r.processes.keys().collect::<Vec<_>>(), [IMAGE_TYPE]);
    // A regenerated `app` keeps the user's limits.
    let generated = release(serde_json::json!({
        "meta": {"image.generated_types": "true"},
        "processes": {"app": {"args": ["old"], "resources": {"memory": 134217728}}},
    }));
    let r = release_from_image(
        &app,
        Some(&generated),
        false,
        "sha256:e",
        &image(&["new"], None, &[]),
    )
    .unwrap();
    assert_eq!(r.processes[IMAGE_TYPE].args, ["new"]);
    assert_eq!(r.processes[IMAGE_TYPE].resources.memory, Some(128 << 20));
}

#[test]
fn a_repush_replaces_the_image_s_env_and_keeps_the_user_s() {
    let app = app("envy");
    let v1 = image(&["x"], None, &[("A", "1"), ("B", "1"), ("D", "1")]);
    let r1 = release_from_image(&app, None, false, "sha256:1", &v1).unwrap();
    // The user overrides B and adds a variable of their own.
    let mut prev = release(serde_json::json!({
        "env": r1.env,
        "meta": r1.meta,
        "processes": r1.processes,
    }));
    prev.env.insert("B".into(), "user".into());
    prev.env.insert("MINE".into(), "x".into());
    let v2 = image(&["x"], None, &[("A", "2"), ("B", "2"), ("C", "3")]);
    let r2 = release_from_image(&app, Some(&prev), false, "sha256:2", &v2).unwrap();
    assert_eq!(r2.env["A"], "2", "image var updated");
    assert_eq!(r2.env["B"], "user", "user's override kept");
    assert_eq!(r2.env["C"], "3", "new image var");
    assert_eq!(r2.env["MINE"], "x", "user's var kept");
    assert!(!r2.env.contains_key("D"), "var the image dropped is gone");
    let recorded: StringMap = serde_json::from_str(&r2.meta[META_ENV]).unwrap();
    assert_eq!(
        recorded, v2.env,
        "the new image's env is what the next push replaces"
    );
}
