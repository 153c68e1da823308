//! Images end to end with the real binary: `slipway image push` (docker save archive, OCI
//! layout) and skopeo against `slipway server`'s registry endpoint; with real runc, a pushed
//! image is served through the router and a whiteout layer hides a file of the layer below.

use crate::support::*;
use slipway_registry::testimage::{ImageBuilder, LayerBuilder, busybox_layer};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// busybox + an app layer with `index.html`, served by `httpd` on 8080.
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
        .env("GREETING=from-image")
        .expose(8080)
}

/// True when skopeo runs; otherwise a counted skip of the running test (a failure under CI).
fn skopeo_available() -> bool {
    !slipway_testkit::skip_unless_program(
        &slipway_testkit::current_test(),
        "skopeo",
        "scripts/install-deps installs it",
    )
}

/// `skopeo copy oci:LAYOUT docker://SERVER/APP:latest` with the server's key as password.
fn skopeo_push(server: &TestServer, layout: &Path, app: &str) -> std::process::Output {
    std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("x:{}", server.key()))
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker://{}/{app}:latest",
            server.url.trim_start_matches("http://")
        ))
        .output()
        .expect("run skopeo")
}

/// One request to the server's registry with its key; (status line, body).
fn raw(server: &TestServer, method: &str, path: &str, body: &[u8]) -> (String, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.key(),
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// What the registry stored so far (`GET /v2/_slipway/stats`).
fn stats(server: &TestServer) -> slipway_registry::Stats {
    let (status, body) = raw(server, "GET", "/v2/_slipway/stats", b"");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats: {e}: {status} {body}"))
}

#[test]
fn image_push_archives_env_survives_repush_and_hostile_layers_are_refused() {
    let server = TestServer::start();
    server.create_app("pic");
    let dir = server.dir.path();

    // A docker save archive.
    let archive = dir.join("pic.tar");
    web_image("v1")
        .write_docker_archive(&archive, "pic:v1")
        .unwrap();
    let out = server.ok(&["-a", "pic", "image", "push", archive.to_str().unwrap()]);
    assert!(out.contains("3 blob(s) uploaded"), "{out}");
    assert!(out.contains("Created release "), "{out}");
    assert!(
        out.contains("Docker image deployed, scale it with 'slipway scale app=N'"),
        "{out}"
    );
    assert_eq!(
        server.ok(&["-a", "pic", "env", "get", "GREETING"]).trim(),
        "from-image"
    );

    // The user overrides the image's variable; a re-push (same layers) keeps it.
    server.ok(&["-a", "pic", "env", "set", "GREETING=mine"]);
    let out = server.ok(&["-a", "pic", "image", "push", archive.to_str().unwrap()]);
    assert!(out.contains("0 blob(s) uploaded"), "{out}");
    assert!(out.contains("3 already on the server"), "{out}");
    assert_eq!(
        server.ok(&["-a", "pic", "env", "get", "GREETING"]).trim(),
        "mine"
    );

    // An OCI layout directory with a changed app layer: only that layer and the config go up.
    let layout = dir.join("layout");
    web_image("v2").env("EXTRA=1").write_oci(&layout).unwrap();
    let out = server.ok(&["-a", "pic", "image", "push", layout.to_str().unwrap()]);
    assert!(out.contains("2 blob(s) uploaded"), "{out}");
    assert_eq!(
        server.ok(&["-a", "pic", "env", "get", "GREETING"]).trim(),
        "mine"
    );
    assert_eq!(server.ok(&["-a", "pic", "env", "get", "EXTRA"]).trim(), "1");
    let rel = server.json(&["-a", "pic", "release", "show", "--json"]);
    assert_eq!(rel["processes"]["app"]["args"][0], "httpd", "{rel}");

    // Hostile layers: refused at push with the reason, no release, nothing written outside.
    let canary = dir.join("escaped");
    let truncated = {
        let big = LayerBuilder::new()
            .file("big", 0o644, &[7u8; 300_000])
            .finish();
        let gz = slipway_registry::testimage::gzip(&big).unwrap();
        gz[..gz.len() / 2].to_vec()
    };
    let cases = [
        (
            "traversal",
            ImageBuilder::new().layer(
                LayerBuilder::new()
                    .raw_file(&format!("../../../../../..{}", canary.display()), b"x")
                    .finish(),
            ),
            "outside the image root",
        ),
        (
            "symlink",
            ImageBuilder::new().layer(
                LayerBuilder::new()
                    .symlink("www", dir.to_str().unwrap())
                    .file("www/escaped", 0o644, b"x")
                    .finish(),
            ),
            "through the symlink",
        ),
        (
            "truncated",
            ImageBuilder::new().raw_gzip_layer(truncated),
            "truncated",
        ),
    ];
    let releases = server.ok(&["-a", "pic", "release"]).lines().count();
    for (name, image, why) in cases {
        let layout = dir.join(name);
        image.cmd(&["true"]).write_oci(&layout).unwrap();
        let err = server.fails(&["-a", "pic", "image", "push", layout.to_str().unwrap()]);
        assert!(
            err.contains("LAYER_INVALID") && err.contains(why),
            "{name}: {err}"
        );
    }
    assert!(!canary.exists());
    assert_eq!(
        server.ok(&["-a", "pic", "release"]).lines().count(),
        releases
    );

    // A blob whose content is not its digest: DIGEST_INVALID, nothing stored.
    let claimed = slipway_blobstore::Digest::of_bytes(b"claimed");
    let (status, body) = raw(
        &server,
        "POST",
        &format!("/v2/pic/blobs/uploads/?digest={claimed}"),
        b"sent",
    );
    assert!(status.contains(" 400"), "{status}");
    assert!(body.contains("DIGEST_INVALID"), "{body}");
    let (status, _) = raw(&server, "HEAD", &format!("/v2/pic/blobs/{claimed}"), b"");
    assert!(status.contains(" 404"), "{status}");

    // Not an app: says how to make one.
    let err = server.fails(&["-a", "nope", "image", "push", archive.to_str().unwrap()]);
    assert!(err.contains("slipway create nope"), "{err}");

    // skopeo through the same endpoint: the layers are known, only the manifest goes up.
    if skopeo_available() {
        let before = stats(&server);
        let out = skopeo_push(&server, &layout, "pic");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = stats(&server);
        assert_eq!(
            after.blobs_uploaded, before.blobs_uploaded,
            "no blob uploaded twice"
        );
        assert_eq!(after.manifests_pushed, before.manifests_pushed + 1);
    }
}

/// One HTTP/1.1 request to the router for `host`; (status line, body).
fn get(router: &str, host: &str, path: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(router).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// Polls until `path` answers with `status` (60 s: the first start unpacks the layers).
fn until_status(router: &str, host: &str, path: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((line, body)) = get(router, host, path)
            && line.contains(status)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} never answered {status}: last {:?}",
            get(router, host, path)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_skopeo_pushed_image_answers_http_and_a_whiteout_hides_a_lower_file() {
    if skip_unless_root("a_skopeo_pushed_image_answers_http_and_a_whiteout_hides_a_lower_file")
        || !skopeo_available()
    {
        return;
    }
    let n = 2000 + std::process::id() % 200;
    let host = HostServer::start(n, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    server.create_app("imgweb");
    let domain = format!("imgweb.{DOMAIN}");
    let dir = server.dir.path();

    // The image's config is honoured: PORT is its exposed port, the command runs in its
    // WorkingDir (httpd serves the current directory) as its User (nobody cannot read a 0600
    // root file).
    let v1 = ImageBuilder::new()
        .layer(busybox_layer().unwrap())
        .layer(
            LayerBuilder::new()
                .dir("www")
                .file("www/index.html", 0o644, b"hello from an image")
                .file("www/secret.html", 0o600, b"root only")
                .finish(),
        )
        .entrypoint(&["sh", "-c"])
        .cmd(&["exec httpd -f -p $PORT"])
        .env("PATH=/bin")
        .expose(9000)
        .working_dir("/www")
        .user("65534:65534");
    let layout = dir.join("v1");
    v1.write_oci(&layout).unwrap();
    let out = skopeo_push(server, &layout, "imgweb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.ok(&["-a", "imgweb", "scale", "app=1"]);
    let body = until_status(&router, &domain, "/", "200");
    assert_eq!(body, "hello from an image");
    let (line, _) = get(&router, &domain, "/secret.html").unwrap();
    // busybox httpd answers 404 for a file it cannot open; as root it is 200 (checked when
    // this test was written, by dropping the User).
    assert!(line.contains(" 404"), "served as root? {line}");

    // The same image again: nothing uploaded twice.
    let before = stats(server);
    let out = skopeo_push(server, &layout, "imgweb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stats(server).blobs_uploaded, before.blobs_uploaded);

    // A third layer deletes index.html of the layer below and adds other.html.
    let v2 = v1.layer(
        LayerBuilder::new()
            .whiteout("www/index.html")
            .file("www/other.html", 0o644, b"v2")
            .finish(),
    );
    let layout2 = dir.join("v2");
    v2.write_oci(&layout2).unwrap();
    let out = server.ok(&["-a", "imgweb", "image", "push", layout2.to_str().unwrap()]);
    assert!(
        out.contains("Docker image deployed, running app=1"),
        "{out}"
    );
    assert_eq!(until_status(&router, &domain, "/other.html", "200"), "v2");
    until_status(&router, &domain, "/index.html", "404");
}

/// The registry answers once the deploy is done; a failed deploy still stores the image, and
/// `slipway image push` says it is not deployed and exits non-zero.
#[test]
fn image_push_fails_when_its_deploy_does_and_the_image_stays_stored() {
    // No host agent: the scaled job stays blocked, so the deploy times out.
    let server = TestServer::start();
    server.create_app("stuck");
    server.ok(&["-a", "stuck", "deployment", "timeout", "1"]);
    let v1 = server.dir.path().join("v1");
    web_image("v1").write_oci(&v1).unwrap();
    server.ok(&["-a", "stuck", "image", "push", v1.to_str().unwrap()]);
    server.ok(&["-a", "stuck", "scale", "--no-wait", "app=1"]);

    let v2 = server.dir.path().join("v2");
    web_image("v2").write_oci(&v2).unwrap();
    let err = server.fails(&["-a", "stuck", "image", "push", v2.to_str().unwrap()]);
    assert!(
        err.contains(
            "Docker image not deployed: deployment failed: timed out after 1s waiting for 1 app \
             job(s) of the new release to be up; the previous release keeps serving"
        ),
        "{err}"
    );
    assert_eq!(stats(&server).manifests_pushed, 2, "both images stored");
}
