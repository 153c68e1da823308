//! The buildpack API, the cache, buildpack choice, errors, and running a built slug.

use crate::harness::*;
use slipway_builder::BuildError;
use std::path::Path;
use std::time::Duration;

/// A buildpack that reports what the API gives it.
const PROBE: &[(&str, &str)] = &[
    ("probe/bin/detect", "#!/bin/sh\necho Probe\n"),
    (
        "probe/bin/compile",
        r#"#!/bin/sh
n=$(cat "$2/count" 2>/dev/null || echo 0)
echo "cache count: $n"
echo $((n + 1)) > "$2/count"
echo "source version: $SOURCE_VERSION"
echo "stack: $STACK uid: $(id -u) build dir: $1 pwd: $(pwd)"
for f in "$3"/*; do echo "env: $(basename "$f")=$(cat "$f")"; done
echo "files: $(cd "$1" && find . -type f | sort | tr '\n' ' ')"
echo "stderr line" >&2
mkdir -p "$1/www" && echo "hello from the slug" > "$1/www/index.html"
"#,
    ),
    (
        "probe/bin/release",
        "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: httpd -f -p $PORT -h /app/www'\n",
    ),
];

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("slipway-builder-src")
        .tempdir()
        .unwrap()
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_counts_0_1_2_and_the_api_gets_env_dir_and_source_version() {
    if skip_unless_root("cache_counts_0_1_2_and_the_api_gets_env_dir_and_source_version") {
        return;
    }
    let bps = tempdir();
    write_tree(bps.path(), PROBE);
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempdir();
    write_tree(src.path(), &[("app.sh", "echo hi\n")]);
    let env = [
        ("BUILDPACK_URL", "probe"),
        ("GREETING", "hello world"),
        ("DATABASE_URL", "postgres://db/x"),
    ];
    for n in 0..3 {
        let started = std::time::Instant::now();
        let (res, lines) = c.build(&app, src.path(), &env).await;
        eprintln!("build {n} took {:?}", started.elapsed());
        let built = res.unwrap_or_else(|e| panic!("build {n}: {e}; output: {lines:#?}"));
        assert!(has(&lines, &format!("cache count: {n}")), "{lines:#?}");
        if n > 0 {
            continue;
        }
        for want in [
            "-----> Probe app detected",
            "source version: 0123456789abcdef0123456789abcdef01234567",
            "stack: busybox uid: 1000 build dir: /app pwd: /app",
            "env: BUILDPACK_URL=probe",
            "env: DATABASE_URL=postgres://db/x",
            "env: GREETING=hello world",
            "files: ./app.sh ",
            "stderr line",
            "-----> Discovering process types",
            "       Default types for buildpack -> web",
        ] {
            assert!(has(&lines, want), "{want:?} not in {lines:#?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("-----> Compiled slug size is ")),
            "{lines:#?}"
        );
        assert_eq!(built.buildpacks, ["probe"]);
        assert_eq!(built.process_types["web"], "httpd -f -p $PORT -h /app/www");
        assert_eq!(built.slug_size, built.slug.size);
        let entries = c.slug_entries(&built).await;
        assert_eq!(
            entries["app/Procfile"], "web: httpd -f -p $PORT -h /app/www\n",
            "the slug always has a Procfile"
        );
        assert_eq!(entries["app/app.sh"], "echo hi\n");
        assert!(entries.keys().all(|k| k == "app" || k.starts_with("app/")));
        // The build ran as a job of type `build` through the scheduler, and it is over.
        let jobs = c.store.list_jobs(app.id).await.unwrap();
        let build = jobs
            .iter()
            .find(|j| j.process_type.as_deref() == Some("build"))
            .unwrap_or_else(|| panic!("no build job in {jobs:#?}"));
        assert!(build.state.is_finished(), "{build:?}");
    }
    // Builds leave no build dir behind; the cache (a filesystem image, see cache.rs) stays.
    let builds: Vec<_> = std::fs::read_dir(c.dir.path().join("builds"))
        .unwrap()
        .collect();
    assert!(builds.is_empty(), "{builds:?}");
    assert!(slipway_builder::cache::image_path(c.dir.path(), &app.id.to_string()).is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn slugignore_removes_files_before_compile() {
    if skip_unless_root("slugignore_removes_files_before_compile") {
        return;
    }
    let bps = tempdir();
    write_tree(bps.path(), PROBE);
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempdir();
    write_tree(
        src.path(),
        &[
            (
                ".slugignore",
                "# comment\n*.psd\n/docs\ntmp/*.log\nspec/\n../outside\n",
            ),
            ("a.psd", "x"),
            ("art/b.psd", "x"),
            ("docs/guide.md", "x"),
            ("lib/docs/keep.md", "kept: /docs is anchored"),
            ("tmp/a.log", "x"),
            ("tmp/keep.txt", "kept"),
            ("spec/x_spec.rb", "x"),
            ("main.sh", "kept"),
        ],
    );
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "probe")])
        .await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(
        has(
            &lines,
            "files: ./.slugignore ./lib/docs/keep.md ./main.sh ./tmp/keep.txt "
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "-----> Deleting 5 files matching .slugignore patterns."
        ),
        "{lines:#?}"
    );
    let entries = c.slug_entries(&built).await;
    assert!(!entries.contains_key("app/a.psd") && !entries.contains_key("app/docs"));
    assert_eq!(entries["app/lib/docs/keep.md"], "kept: /docs is anchored");
    // The pushed tree itself is left as it was.
    assert!(src.path().join("a.psd").exists() && src.path().join("docs/guide.md").exists());
}

/// A git repository whose `custom` branch holds a buildpack (main has none).
fn custom_buildpack_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git_repo(
        dir,
        "custom",
        &[
            ("bin/detect", "#!/bin/sh\necho Custom\n"),
            (
                "bin/compile",
                "#!/bin/sh\necho \"custom buildpack compiled $(ls \"$1\")\"\n",
            ),
            (
                "bin/release",
                "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  worker: \"sh -c \\\\\"echo hi\\\\\"\"\\n'\n",
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildpack_url_git_with_a_branch() {
    if skip_unless_root("buildpack_url_git_with_a_branch") {
        return;
    }
    let c = Cluster::start(None).await;
    let app = c.app().await;
    let base = tempdir();
    custom_buildpack_repo(&base.path().join("bp"));
    let daemon = slipway_testkit::GitDaemon::start(base.path());
    let src = tempdir();
    write_tree(src.path(), &[("thing.txt", "x")]);
    let url = format!("{}#custom", daemon.url("bp"));
    let (res, lines) = c.build(&app, src.path(), &[("BUILDPACK_URL", &url)]).await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(
        has(&lines, &format!("-----> Fetching buildpack {url}")),
        "{lines:#?}"
    );
    assert!(has(&lines, "-----> Custom app detected"), "{lines:#?}");
    assert!(
        has(&lines, "custom buildpack compiled thing.txt"),
        "{lines:#?}"
    );
    assert_eq!(built.buildpacks, [url]);
    assert_eq!(built.process_types["worker"], "sh -c \"echo hi\"");

    // Without the ref, main's tree (no buildpack) is what runs: the ref was honoured.
    let plain = daemon.url("bp");
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", &plain)])
        .await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("has no executable bin/compile"),
        "{err}; {lines:#?}"
    );

    // A ref that does not exist says so.
    let bad = format!("{}#nope", daemon.url("bp"));
    let (res, _) = c.build(&app, src.path(), &[("BUILDPACK_URL", &bad)]).await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("fetching buildpack") && err.contains("nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_buildpacks_runs_two_in_order_and_the_last_release_wins() {
    if skip_unless_root("dot_buildpacks_runs_two_in_order_and_the_last_release_wins") {
        return;
    }
    let bps = tempdir();
    write_tree(
        bps.path(),
        &[
            ("first/bin/detect", "#!/bin/sh\nexit 1\n"),
            (
                "first/bin/compile",
                "#!/bin/sh\necho first ran\necho one > \"$1/first.txt\"\n",
            ),
            (
                "first/bin/release",
                "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: first\\n'\n",
            ),
        ],
    );
    let base = tempdir();
    custom_buildpack_repo(&base.path().join("bp"));
    let daemon = slipway_testkit::GitDaemon::start(base.path());
    let second = format!("{}#custom", daemon.url("bp"));
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempdir();
    write_tree(
        src.path(),
        &[(".buildpacks", &format!("# two\nfirst\n\n{second}\n"))],
    );
    let (res, lines) = c.build(&app, src.path(), &[]).await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    let pos = |want: &str| {
        lines
            .iter()
            .position(|l| l == want)
            .unwrap_or_else(|| panic!("{want:?} not in {lines:#?}"))
    };
    // first's detect fails, yet it runs: it was named explicitly.
    assert!(pos("-----> first app detected") < pos("first ran"));
    assert!(pos("first ran") < pos("custom buildpack compiled first.txt"));
    assert_eq!(built.buildpacks, ["first".to_string(), second]);
    assert_eq!(built.process_types.keys().collect::<Vec<_>>(), ["worker"]);
    let entries = c.slug_entries(&built).await;
    assert_eq!(entries["app/Procfile"], "worker: sh -c \"echo hi\"\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_buildpack_detected_unknown_buildpack_and_failing_compile() {
    if skip_unless_root("no_buildpack_detected_unknown_buildpack_and_failing_compile") {
        return;
    }
    let c = Cluster::start(None).await;
    let app = c.app().await;
    let src = tempdir();
    write_tree(src.path(), &[("README", "nothing to build")]);
    let (res, lines) = c.build(&app, src.path(), &[]).await;
    match res {
        Err(BuildError::Failed(m)) => assert_eq!(m, "Unable to select a buildpack"),
        other => panic!("{other:?}"),
    }
    assert!(
        has(&lines, " !     Unable to select a buildpack"),
        "{lines:#?}"
    );

    // A stack the host does not have: the job cannot start, and the error says why.
    let (res, _) = c
        .build_on(
            "nosuchstack",
            &app,
            src.path(),
            &[("BUILDPACK_URL", "static")],
        )
        .await;
    let err = res.unwrap_err().to_string();
    assert!(err.contains("stack \"nosuchstack\" is not built"), "{err}");
    for bad in ["/", "../../..", ".hidden", "a/b"] {
        let (res, _) = c.build_on(bad, &app, src.path(), &[]).await;
        let err = res.unwrap_err().to_string();
        assert!(err.starts_with("Invalid stack"), "{bad}: {err}");
    }

    let (res, _) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "cobol")])
        .await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("Unknown buildpack \"cobol\"") && err.contains("python, nodejs"),
        "{err}"
    );

    let bps = tempdir();
    write_tree(
        bps.path(),
        &[
            ("bad/bin/detect", "#!/bin/sh\necho Bad\n"),
            ("bad/bin/compile", "#!/bin/sh\necho compiling...\nexit 3\n"),
            ("bad/bin/release", "#!/bin/sh\necho ---\n"),
            ("none/bin/detect", "#!/bin/sh\nexit 1\n"),
            ("none/bin/compile", "#!/bin/sh\ntrue\n"),
            (
                "none/bin/release",
                "#!/bin/sh\necho ---\necho 'default_process_types: {}'\n",
            ),
        ],
    );
    let c2 = Cluster::start(Some(bps.path())).await;
    let (res, lines) = c2.build(&app_of(&c2).await, src.path(), &[]).await;
    let err = res.unwrap_err().to_string();
    assert_eq!(
        err,
        "Failed to compile Bad app: bin/compile exited with status 3"
    );
    assert!(has(&lines, "compiling..."), "{lines:#?}");

    // A build that finds no process types succeeds, says so, and the slug has an empty Procfile.
    let app2 = app_of(&c2).await;
    let (res, lines) = c2
        .build(&app2, src.path(), &[("BUILDPACK_URL", "none")])
        .await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(built.process_types.is_empty());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" !     No process types")),
        "{lines:#?}"
    );
    assert_eq!(c2.slug_entries(&built).await["app/Procfile"], "");
}

async fn app_of(c: &Cluster) -> slipway_types::App {
    c.app().await
}

#[tokio::test(flavor = "multi_thread")]
async fn static_site_builds_with_the_bundled_buildpack_and_its_slug_serves() {
    if skip_unless_root("static_site_builds_with_the_bundled_buildpack_and_its_slug_serves") {
        return;
    }
    let c = Cluster::start(None).await;
    let app = c.app().await;
    let src = tempdir();
    write_tree(
        src.path(),
        &[
            ("index.html", "<h1>static slug</h1>\n"),
            (".profile.d/greet.sh", "export GREETING=from-profile-d\n"),
        ],
    );
    let (res, lines) = c.build(&app, src.path(), &[]).await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(has(&lines, "-----> Static app detected"), "{lines:#?}");
    assert_eq!(
        built.process_types["web"],
        "busybox httpd -f -p $PORT -h /app/public"
    );
    // Unpack the slug as a layer over the stack and run `/runner/init start web`, as a
    // release's job does.
    let layer = tempdir();
    let entries = c.slug_entries(&built).await;
    assert_eq!(entries["app/public/index.html"], "<h1>static slug</h1>\n");
    unpack(&c, &built, layer.path()).await;
    let mut job = slipway_host::HostJob {
        id: format!("slug-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        app_id: app.id.to_string(),
        app_name: app.name.clone(),
        release_id: String::new(),
        process_type: "web".into(),
        metadata: Default::default(),
        config: slipway_host::JobConfig::new("busybox", &["/runner/init", "start", "web"]),
        resources: Default::default(),
    };
    job.config.layers = vec![layer.path().to_path_buf()];
    job.config.ports.push(slipway_host::PortSpec {
        port: 5000,
        proto: "tcp".into(),
        check: None,
    });
    job.config.stop_grace_ms = Some(500);
    use slipway_host::HostApi;
    let info = c.agent.add_job(job.clone()).await.unwrap();
    let ip = info.ip.expect("own IP");
    let body = http_get(ip, 5000, "/index.html").await;
    assert!(body.contains("<h1>static slug</h1>"), "{body}");
    // `/runner/init CMD` gets the same environment (.profile.d sourced, in /app).
    let mut run = job.clone();
    run.id = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    run.config.ports.clear();
    run.config.args = ["/runner/init", "sh", "-c", "echo $GREETING in $(pwd)"]
        .map(String::from)
        .to_vec();
    c.agent.add_job(run.clone()).await.unwrap();
    let done = c.agent.wait_job(&run.id).await.unwrap();
    assert_eq!(done.exit.unwrap().code, 0);
    let out: Vec<String> =
        futures_util::StreamExt::collect::<Vec<_>>(c.agent.logs(&run.id, false).await.unwrap())
            .await
            .into_iter()
            .filter(|l| l.stream == "stdout")
            .map(|l| l.msg)
            .collect();
    assert_eq!(out, ["from-profile-d in /app"]);
    c.agent.stop_job(&job.id).await.unwrap();
    c.agent.wait_job(&job.id).await.unwrap();
}

/// Unpacks the slug (as root, keeping owners) into `dir`, the way a layer is unpacked.
pub async fn unpack(c: &Cluster, built: &slipway_builder::Built, dir: &Path) {
    use tokio::io::AsyncReadExt;
    let (_, mut body) = c.blobs_get(built).await;
    let mut gz = Vec::new();
    body.read_to_end(&mut gz).await.unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    ar.set_preserve_permissions(true);
    ar.unpack(dir).unwrap();
}

impl Cluster {
    async fn blobs_get(
        &self,
        built: &slipway_builder::Built,
    ) -> (slipway_blobstore::BlobInfo, slipway_blobstore::Body) {
        use slipway_blobstore::BlobStore;
        self.blobs.get(&built.slug.digest).await.unwrap().unwrap()
    }
}

/// `GET path` over HTTP/1.0, retried for 10 s; returns the whole response.
pub async fn http_get(ip: std::net::Ipv4Addr, port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(r)) => return r,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("GET http://{ip}:{port}{path}: {other:?}"),
        }
    }
}
