//! Real-world builds: a Python app on the bookworm stack with pip from PyPI. Only with
//! `SLIPWAY_SLOW_TESTS=1` (CI sets it); the bookworm stack is built once into the shared test
//! stacks dir (`/tmp/slipway-test-stacks`, keyed by recipe hash) and reused.

use crate::harness::*;
use slipway_builder::BuildInput;

/// True when the slow tests are asked for (`SLIPWAY_SLOW_TESTS=1`); otherwise a counted skip.
fn slow_tests(test: &str) -> bool {
    !slipway_testkit::skip_unless_slow(test)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_app_on_bookworm_installs_from_pypi_and_reuses_its_venv() {
    let name = "python_app_on_bookworm_installs_from_pypi_and_reuses_its_venv";
    if skip_unless_root(name) || !slow_tests(name) {
        return;
    }
    let stacks = stacks_dir();
    tokio::task::spawn_blocking(move || {
        slipway_host::stack::build(&stacks, "bookworm", true).expect("bookworm stack")
    })
    .await
    .unwrap();
    let c = Cluster::start(None).await;
    let app = c.app().await;
    let src = tempfile::tempdir().unwrap();
    write_tree(
        src.path(),
        &[
            ("requirements.txt", "six==1.16.0\n"),
            (
                "app.py",
                "import six, os\nprint('six', six.__version__, flush=True)\n",
            ),
        ],
    );
    let (res, lines, first) = run_build(&c, &app, src.path()).await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    for want in [
        "-----> Python app detected",
        "-----> Installing dependencies with pip",
        "       Default types for buildpack -> web",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want:?} not in {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Successfully installed six-1.16.0")),
        "{lines:#?}"
    );
    assert_eq!(built.process_types["web"], "python app.py");
    let entries = c.slug_entries(&built).await;
    assert!(
        entries
            .keys()
            .any(|k| k.starts_with("app/.venv/lib/") && k.ends_with("/site-packages/six.py")),
        "six is not in the slug"
    );
    assert!(entries.contains_key("app/.profile.d/python.sh"));

    // The slug runs: `/runner/init start web` finds the venv through .profile.d.
    let layer = tempfile::tempdir().unwrap();
    crate::pipeline::unpack(&c, &built, layer.path()).await;
    let mut job = slipway_host::HostJob {
        id: format!("py-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        app_id: app.id.to_string(),
        app_name: app.name.clone(),
        release_id: String::new(),
        process_type: "web".into(),
        metadata: Default::default(),
        config: slipway_host::JobConfig::new("bookworm", &["/runner/init", "start", "web"]),
        resources: Default::default(),
    };
    job.config.layers = vec![layer.path().to_path_buf()];
    use slipway_host::HostApi;
    c.agent.add_job(job.clone()).await.unwrap();
    let done = c.agent.wait_job(&job.id).await.unwrap();
    let out: Vec<String> =
        futures_util::StreamExt::collect::<Vec<_>>(c.agent.logs(&job.id, false).await.unwrap())
            .await
            .into_iter()
            .map(|l| l.msg)
            .collect();
    assert_eq!(done.exit.unwrap().code, 0, "{out:?}");
    assert!(out.contains(&"six 1.16.0".to_string()), "{out:?}");

    let (res, lines, second) = run_build(&c, &app, src.path()).await;
    res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(
        lines
            .iter()
            .any(|l| l == "-----> Using cached dependencies (requirements.txt unchanged)"),
        "{lines:#?}"
    );
    eprintln!("python build: first {first:.1?}, second (cached venv) {second:.1?}");
}

pub async fn run_build(
    c: &Cluster,
    app: &slipway_types::App,
    src: &std::path::Path,
) -> (
    Result<slipway_builder::Built, slipway_builder::BuildError>,
    Vec<String>,
    std::time::Duration,
) {
    let input = BuildInput {
        app: app.clone(),
        env: Default::default(),
        source_dir: src.to_path_buf(),
        commit: "c0ffee".into(),
        stack: "bookworm".into(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
    let t0 = std::time::Instant::now();
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            eprintln!("[{:6.2}s] {l}", t0.elapsed().as_secs_f64());
            lines.push(l);
        }
        lines
    });
    let started = std::time::Instant::now();
    let res = slipway_builder::build(&c.ctx, input, tx).await;
    (res, collect.await.unwrap(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_app_on_bookworm_installs_from_npm() {
    let name = "nodejs_app_on_bookworm_installs_from_npm";
    if skip_unless_root(name) || !slow_tests(name) {
        return;
    }
    let stacks = stacks_dir();
    tokio::task::spawn_blocking(move || {
        slipway_host::stack::build(&stacks, "bookworm", true).expect("bookworm stack")
    })
    .await
    .unwrap();
    let c = Cluster::start(None).await;
    let app = c.app().await;
    let src = tempfile::tempdir().unwrap();
    write_tree(
        src.path(),
        &[
            (
                "package.json",
                r#"{"name":"demo","version":"1.0.0","scripts":{"start":"node index.js"},"dependencies":{"ms":"2.1.3"}}"#,
            ),
            ("index.js", "console.log(require('ms')(60000));\n"),
        ],
    );
    let (res, lines, took) = run_build(&c, &app, src.path()).await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    for want in [
        "-----> Node.js app detected",
        "-----> Installing dependencies with npm install",
        "       Default types for buildpack -> web",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want:?} not in {lines:#?}"
        );
    }
    assert_eq!(built.process_types["web"], "npm start");
    let entries = c.slug_entries(&built).await;
    assert!(entries.contains_key("app/node_modules/ms/index.js"));
    eprintln!("nodejs build: {took:.1?}");
}
