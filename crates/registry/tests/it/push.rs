//! Whole pushes: Slipway's push client (OCI layout dir and tar, docker save archive), skopeo,
//! and what a pushed manifest creates (artifact, release, deployment, routes, env).

use crate::{Server, web_image};
use reqwest::Method;
use slipway_registry::client::Quiet;
use slipway_registry::local;
use slipway_types::{ArtifactType, RouteType};
use std::sync::Arc;

#[tokio::test]
async fn oci_layout_push_creates_artifact_release_and_deployment() {
    let s = Server::start().await;
    let app = s.create_app("web1").await;
    let layout = s.dir.path().join("layout");
    let digest = web_image("hi").write_oci(&layout).unwrap();
    let image = local::open(&layout).unwrap();
    assert_eq!(image.digest, digest);
    let report = s
        .client()
        .push("web1", &image, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!((report.blobs_uploaded, report.blobs_skipped), (3, 0));
    assert_eq!(
        report.outcome.message,
        "Docker image deployed, scale it with 'slipway scale app=N'"
    );

    let artifact = s.store.get_artifact(report.outcome.artifact).await.unwrap();
    assert_eq!(artifact.kind, ArtifactType::Image);
    assert_eq!(artifact.uri, format!("web1@{digest}"));
    assert_eq!(artifact.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(artifact.meta["image.working_dir"], "/www");
    let layers = artifact.manifest.as_ref().unwrap()["layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(layers, 2);

    s.settle(&app).await;
    let app = s.store.find_app("web1").await.unwrap();
    let release = s.store.get_release(app.release.unwrap()).await.unwrap();
    assert_eq!(Some(release.id), report.outcome.release);
    assert_eq!(release.artifacts, vec![artifact.id]);
    let p = &release.processes["app"];
    assert_eq!(p.args, ["httpd", "-f", "-p", "8080", "-h", "/www"]);
    assert_eq!(p.ports[0].port, 8080);
    assert_eq!(release.env["GREETING"], "hello");
    // The default route now reaches the `app` type.
    let routes = s.store.list_routes(Some(app.id)).await.unwrap();
    let http: Vec<_> = routes
        .iter()
        .filter(|r| r.kind() == RouteType::Http)
        .collect();
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].service(), "web1-app");

    // Manifest by tag and by digest, byte for byte, with its media type.
    for reference in ["latest", digest.as_str()] {
        let resp = s
            .req(Method::GET, &format!("/v2/web1/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            slipway_registry::spec::OCI_MANIFEST
        );
        assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &image.manifest[..]);
    }
    let resp = s
        .req(Method::HEAD, "/v2/web1/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tags: serde_json::Value = s
        .req(Method::GET, "/v2/web1/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}

#[tokio::test]
async fn repush_uploads_nothing_twice_and_keeps_user_env() {
    let s = Server::start().await;
    let app = s.create_app("envy").await;
    let v1 = web_image("v1")
        .env("A=1")
        .env("B=1")
        .env("D=1")
        .expose(9000);
    let dir1 = s.dir.path().join("v1");
    v1.write_oci(&dir1).unwrap();
    let img1 = local::open(&dir1).unwrap();
    let r1 = s
        .client()
        .push("envy", &img1, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(r1.blobs_uploaded, 3);
    s.settle(&app).await;

    // The user overrides B and adds their own variable (what `slipway env set` does).
    let app = s.store.find_app("envy").await.unwrap();
    let cur = s.store.get_release(app.release.unwrap()).await.unwrap();
    assert_eq!(
        cur.processes["app"].ports[0].port, 8080,
        "lowest exposed port"
    );
    let mut next = slipway_types::NewRelease::from_release(&cur);
    next.env.insert("B".into(), "user".into());
    next.env.insert("MINE".into(), "x".into());
    let rel = s.store.create_release(app.id, &next).await.unwrap();
    s.store.create_deployment(app.id, rel.id).await.unwrap();
    s.settle(&app).await;

    // The same image again: nothing uploaded.
    let again = s
        .client()
        .push("envy", &img1, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_skipped), (0, 3));
    assert_eq!(s.reg.stats().blobs_uploaded, 3);
    s.settle(&app).await;

    // A new image version: shares the busybox layer, changes the image env.
    let v2 = web_image("v2").env("A=2").env("B=2").env("C=3");
    let dir2 = s.dir.path().join("v2");
    v2.write_oci(&dir2).unwrap();
    let img2 = local::open(&dir2).unwrap();
    let r2 = s
        .client()
        .push("envy", &img2, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(
        (r2.blobs_uploaded, r2.blobs_skipped),
        (2, 1),
        "config and app layer only"
    );
    s.settle(&app).await;
    let app = s.store.find_app("envy").await.unwrap();
    let cur = s.store.get_release(app.release.unwrap()).await.unwrap();
    assert_eq!(cur.env["A"], "2", "image var updated");
    assert_eq!(cur.env["B"], "user", "user's override kept");
    assert_eq!(cur.env["C"], "3", "new image var");
    assert_eq!(cur.env["MINE"], "x", "user's var kept");
    assert!(!cur.env.contains_key("D"), "var the image dropped is gone");
}

#[tokio::test]
async fn docker_archive_and_oci_tar_push() {
    let s = Server::start().await;
    let app = s.create_app("archive").await;
    let tarball = s.dir.path().join("image.tar");
    web_image("docker")
        .write_docker_archive(&tarball, "archive:v3")
        .unwrap();
    let image = local::open(&tarball).unwrap();
    assert_eq!(image.format, "docker-archive");
    assert_eq!(image.tag.as_deref(), Some("v3"));
    assert_eq!(image.media_type, slipway_registry::spec::DOCKER_MANIFEST);
    let report = s
        .client()
        .push("archive", &image, "v3", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(report.blobs_uploaded, 3);
    s.settle(&app).await;
    let app = s.store.find_app("archive").await.unwrap();
    let rel = s.store.get_release(app.release.unwrap()).await.unwrap();
    assert_eq!(rel.processes["app"].args[0], "httpd");
    // The layers the server stored are the archive's tars, verified by digest.
    let m: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], slipway_registry::spec::DOCKER_LAYER_TAR);
        let d = l["digest"].as_str().unwrap().parse().unwrap();
        assert!(s.blobs.head(&d).await.unwrap().is_some());
    }

    // An OCI layout packed in a tar, with gzip'd layers.
    let layout = s.dir.path().join("layout");
    web_image("gz").gzip(true).write_oci(&layout).unwrap();
    let oci_tar = s.dir.path().join("oci.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let image = local::open(&oci_tar).unwrap();
    assert_eq!(image.format, "oci-layout");
    let report = s
        .client()
        .push("archive", &image, "gz", false, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(
        report.blobs_uploaded, 3,
        "gzip'd layers differ from the tars"
    );
    assert!(report.outcome.release.is_none(), "deploy=false");

    // Neither format: a clear error.
    let junk = s.dir.path().join("junk.tar");
    std::fs::write(
        &junk,
        slipway_registry::testimage::LayerBuilder::new()
            .file("hello", 0o644, b"x")
            .finish(),
    )
    .unwrap();
    let err = local::open(&junk).unwrap_err().to_string();
    assert!(err.contains("neither a `docker save` archive"), "{err}");
    let gz = s.dir.path().join("image.tar.gz");
    std::fs::write(
        &gz,
        slipway_registry::testimage::gzip(&std::fs::read(&tarball).unwrap()).unwrap(),
    )
    .unwrap();
    let err = local::open(&gz).unwrap_err().to_string();
    assert!(err.contains("gunzip"), "{err}");
}

#[tokio::test]
async fn no_deploy_tag_stores_the_image_only() {
    let s = Server::start().await;
    let app = s.create_app("quiet").await;
    let layout = s.dir.path().join("layout");
    web_image("x").write_oci(&layout).unwrap();
    let image = local::open(&layout).unwrap();
    let report = s
        .client()
        .push("quiet", &image, "no-deploy-v1", true, Arc::new(Quiet))
        .await
        .unwrap();
    assert!(report.outcome.release.is_none());
    assert!(s.store.get_artifact(report.outcome.artifact).await.is_ok());
    assert!(s.store.list_releases(app.id).await.unwrap().is_empty());
}

/// skopeo, a real registry client, pushes an OCI layout with chunked uploads.
#[tokio::test]
async fn skopeo_copy_pushes_and_skips_known_blobs() {
    if slipway_testkit::skip_unless_program(
        "skopeo_copy_pushes_and_skips_known_blobs",
        "skopeo",
        "scripts/install-deps installs it",
    ) {
        return;
    }
    let s = Server::start().await;
    let app = s.create_app("skop").await;
    let layout = s.dir.path().join("layout");
    web_image("skopeo").gzip(true).write_oci(&layout).unwrap();
    let dest = format!(
        "docker://{}/skop:latest",
        s.url.trim_start_matches("http://")
    );
    let copy = |dest: String, creds: String, layout: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("skopeo")
                .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
                .arg(format!("oci:{}:latest", layout.display()))
                .arg(dest)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let creds = format!("x:{}", s.key);
    let out = copy(dest.clone(), creds.clone(), layout.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.reg.stats().blobs_uploaded, 3);
    assert_eq!(s.reg.stats().manifests_pushed, 1);
    s.settle(&app).await;
    let app = s.store.find_app("skop").await.unwrap();
    assert!(app.release.is_some());

    let out = copy(dest.clone(), creds, layout.clone()).await;
    assert!(out.status.success());
    assert_eq!(s.reg.stats().blobs_uploaded, 3, "no blob uploaded twice");
    assert_eq!(s.reg.stats().manifests_pushed, 2);

    // Wrong credentials: refused.
    let out = copy(dest, "x:wrong".into(), layout).await;
    assert!(!out.status.success());
}

/// Process types the user configured are kept (a type without a command runs the image's), and
/// the default route stays on `APP-web` when the release has a `web` type. Nothing ran before,
/// so the push is a first deploy and scales `web` to 1, as a `git push` does; no scheduler runs
/// here, so that web job never starts and the answer says so.
#[tokio::test]
async fn user_configured_types_are_kept_and_limits_survive_regeneration() {
    let s = Server::start().await;
    let app = s.create_app("typed").await;
    s.deploy_timeout(&app, 1).await;
    let mut web = slipway_types::ProcessType::default();
    web.resources.set("memory", "256MB").unwrap();
    let worker = slipway_types::ProcessType {
        args: vec!["sh".into(), "-c".into(), "sleep 1000".into()],
        ..Default::default()
    };
    let mut new = slipway_types::NewRelease::default();
    new.processes.insert("web".into(), web);
    new.processes.insert("worker".into(), worker);
    let rel = s.store.create_release(app.id, &new).await.unwrap();
    s.store.create_deployment(app.id, rel.id).await.unwrap();
    s.settle(&app).await;

    let layout = s.dir.path().join("layout");
    web_image("typed").write_oci(&layout).unwrap();
    let image = local::open(&layout).unwrap();
    let r = s
        .client()
        .push("typed", &image, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    let err = r
        .outcome
        .error
        .as_deref()
        .expect("the web job cannot start");
    assert!(
        err.starts_with(
            "Docker image not deployed: Initial web job failed to start: no web job was up after 1s"
        ),
        "{err}"
    );
    let f = s
        .store
        .get_formation(app.id, r.outcome.release.unwrap())
        .await
        .unwrap();
    assert_eq!(f.processes["web"], 0, "kept at web=0 for the next push");
    let cur = s
        .store
        .get_release(r.outcome.release.unwrap())
        .await
        .unwrap();
    assert_eq!(cur.processes.len(), 2);
    assert_eq!(
        cur.processes["web"].args[0], "httpd",
        "no command: the image's"
    );
    assert_eq!(cur.processes["web"].resources.memory, Some(256 << 20));
    assert_eq!(
        cur.processes["worker"].args[2], "sleep 1000",
        "kept as configured"
    );
    let routes = s.store.list_routes(Some(app.id)).await.unwrap();
    assert_eq!(routes[0].service(), "typed-web");

    // Generated types: a re-push regenerates `app` but keeps its limits.
    let app2 = s.create_app("gen").await;
    s.client()
        .push("gen", &image, "latest", true, Arc::new(Quiet))
        .await
        .unwrap();
    s.settle(&app2).await;
    let app2 = s.store.find_app("gen").await.unwrap();
    let cur = s.store.get_release(app2.release.unwrap()).await.unwrap();
    let mut next = slipway_types::NewRelease::from_release(&cur);
    next.processes
        .get_mut("app")
        .unwrap()
        .resources
        .set("memory", "128MB")
        .unwrap();
    let rel = s.store.create_release(app2.id, &next).await.unwrap();
    s.store.create_deployment(app2.id, rel.id).await.unwrap();
    s.settle(&app2).await;
    let layout2 = s.dir.path().join("layout2");
    web_image("gen2")
        .cmd(&["httpd", "-f", "-p", "8080"])
        .write_oci(&layout2)
        .unwrap();
    let r = s
        .client()
        .push(
            "gen",
            &local::open(&layout2).unwrap(),
            "latest",
            true,
            Arc::new(Quiet),
        )
        .await
        .unwrap();
    let cur = s
        .store
        .get_release(r.outcome.release.unwrap())
        .await
        .unwrap();
    assert_eq!(cur.processes["app"].args, ["httpd", "-f", "-p", "8080"]);
    assert_eq!(cur.processes["app"].resources.memory, Some(128 << 20));
}

/// The PUT answers once the deploy is done. A failed one still answers 201 (the image is stored
/// and can be deployed later) with the reason, and the previous release keeps serving.
#[tokio::test]
async fn a_failed_deploy_still_stores_the_image_and_says_why() {
    let s = Server::start().await;
    let app = s.create_app("fails").await;
    s.deploy_timeout(&app, 1).await;
    let push = async |name: &str, body: &str| {
        let layout = s.dir.path().join(name);
        web_image(body).write_oci(&layout).unwrap();
        let image = local::open(&layout).unwrap();
        let report = s
            .client()
            .push("fails", &image, "latest", true, Arc::new(Quiet))
            .await
            .unwrap();
        (image.digest, report.outcome)
    };
    let (_, v1) = push("v1", "v1").await;
    assert_eq!(v1.error, None);
    let v1_release = v1.release.unwrap();
    // What `slipway scale app=1` writes; no scheduler runs here, so no job ever comes up.
    let mut update = slipway_types::FormationUpdate::default();
    update.processes.insert("app".into(), 1);
    s.store
        .put_formation(app.id, v1_release, &update)
        .await
        .unwrap();

    let (digest, v2) = push("v2", "v2").await;
    let err = v2.error.as_deref().expect("the deploy cannot succeed");
    assert_eq!(
        err,
        "Docker image not deployed: deployment failed: timed out after 1s waiting for 1 app \
         job(s) of the new release to be up; the previous release keeps serving"
    );
    assert_eq!(v2.message, err);
    assert!(v2.processes.is_empty(), "{v2:?}");
    let d = s
        .store
        .get_deployment(v2.deployment.unwrap())
        .await
        .unwrap();
    assert_eq!(d.status, slipway_types::DeploymentStatus::Failed);
    let app = s.store.find_app("fails").await.unwrap();
    assert_eq!(
        app.release,
        Some(v1_release),
        "the previous release keeps serving"
    );
    let f = s.store.get_formation(app.id, v1_release).await.unwrap();
    assert_eq!(f.processes["app"], 1, "its formation restored");
    // The image is stored: its artifact, and the manifest under the tag.
    let artifact = s.store.get_artifact(v2.artifact).await.unwrap();
    assert_eq!(artifact.digest.as_deref(), Some(digest.as_str()));
    let resp = s
        .req(Method::HEAD, "/v2/fails/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
}

/// A pusher that hangs up while its manifest PUT waits for the deploy (Ctrl-C, a proxy's
/// timeout) does not cut the deploy short: a first deploy still scales to its initial
/// formation (`web=1`), as it does for a `git push`, whose flow runs apart from its connection.
#[tokio::test]
async fn a_pusher_hanging_up_does_not_cut_the_first_deploy_short() {
    let s = Server::start().await;
    let app = s.create_app("hangup").await;
    s.deploy_timeout(&app, 30).await;
    let mut new = slipway_types::NewRelease::default();
    new.processes
        .insert("web".into(), slipway_types::ProcessType::default());
    let rel = s.store.create_release(app.id, &new).await.unwrap();
    s.store.create_deployment(app.id, rel.id).await.unwrap();
    s.settle(&app).await;

    let layout = s.dir.path().join("layout");
    web_image("hangup").write_oci(&layout).unwrap();
    let image = local::open(&layout).unwrap();
    let client = s.client();
    let push = tokio::spawn(async move {
        client
            .push("hangup", &image, "latest", true, Arc::new(Quiet))
            .await
    });
    // Hang up once the push's deployment exists (the PUT is then waiting for it).
    let mut deps = Vec::new();
    for _ in 0..500 {
        deps = s.store.list_deployments(app.id).await.unwrap();
        if deps.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(deps.len(), 2, "the push made no deployment");
    push.abort();
    let _ = push.await;
    let new_rel = deps
        .iter()
        .map(|d| d.new_release_id)
        .find(|r| *r != rel.id)
        .unwrap();
    let mut web = 0;
    for _ in 0..250 {
        if let Ok(f) = s.store.get_formation(app.id, new_rel).await {
            web = f.processes.get("web").copied().unwrap_or(0);
            if web == 1 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(web, 1, "the first deploy was never scaled to web=1");
}
