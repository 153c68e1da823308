//! Builds run on any host: the build job names its directories as blob-store files (no bind
//! mount of this machine's directories) and hands back `/app`, `/cache` and `/slipway/out`
//! through the blob store.

use crate::harness::*;
use slipway_blobstore::{BlobStore, Digest};
use slipway_host::HostApi;
use std::path::Path;

const COUNTER: &[(&str, &str)] = &[
    ("counter/bin/detect", "#!/bin/sh\necho Counter\n"),
    (
        "counter/bin/compile",
        "#!/bin/sh\nn=$(cat \"$2/count\" 2>/dev/null || echo 0)\necho \"cache count: $n\"\n\
         echo $((n + 1)) > \"$2/count\"\necho built > \"$1/built.txt\"\n",
    ),
    (
        "counter/bin/release",
        "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: sleep 1'\n",
    ),
];

/// Fetches blob `digest` and unpacks it (gzip tar) into the new dir `dest`.
async fn unpack_blob(c: &Cluster, digest: &str, dest: &Path) {
    let d: Digest = digest.parse().unwrap();
    let (_, mut body) = c.blobs.get(&d).await.unwrap().expect("blob in the store");
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut data)
        .await
        .unwrap();
    let f = dest.with_extension("blob");
    std::fs::write(&f, data).unwrap();
    slipway_host::layers::unpack_file(&f, dest).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_job_mounts_nothing_of_the_controller_and_its_cache_and_app_come_back_as_blobs() {
    if skip_unless_root("the_build_job_mounts_nothing_of_the_controller") {
        return;
    }
    let bps = tempfile::tempdir().unwrap();
    write_tree(bps.path(), COUNTER);
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &[("app.sh", "echo hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let mut last_cache_out = None;
    for n in 0..2 {
        let (res, lines) = c
            .build(&app, src.path(), &[("BUILDPACK_URL", "counter")])
            .await;
        let built = res.unwrap_or_else(|e| panic!("build {n}: {e}; output: {lines:#?}"));
        assert!(
            lines.iter().any(|l| *l == format!("cache count: {n}")),
            "{lines:#?}"
        );
        let entries = c.slug_entries(&built).await;
        assert_eq!(
            entries["app/built.txt"], "built\n",
            "the job's /app is the slug"
        );
        assert_eq!(entries["app/app.sh"], "echo hi\n");

        let jobs = c.agent.list_jobs().await.unwrap();
        let mut builds: Vec<_> = jobs
            .into_iter()
            .filter(|j| j.job.process_type == "build")
            .collect();
        builds.sort_by_key(|j| j.created_at);
        assert_eq!(builds.len(), n + 1);
        let job = builds.pop().unwrap();
        // Nothing of the controller's machine is bind-mounted: every directory is a blob.
        assert!(
            job.job.config.mounts.is_empty(),
            "{:?}",
            job.job.config.mounts
        );
        let files = &job.job.config.files;
        let targets: Vec<_> = files.iter().map(|f| f.target.as_str()).collect();
        for t in [
            "/app",
            "/cache",
            "/slipway/env",
            "/slipway/meta",
            "/slipway/out",
        ] {
            assert!(targets.contains(&t), "{targets:?}");
        }
        for f in files.iter().filter(|f| f.target != "/slipway/out") {
            let d: Digest = f.from.as_deref().expect("an input digest").parse().unwrap();
            assert!(
                c.blobs.head(&d).await.unwrap().is_some(),
                "{} stored",
                f.target
            );
        }
        // The input cache is the previous build's output cache.
        let input_cache = files.iter().find(|f| f.target == "/cache").unwrap();
        let dest = scratch.path().join(format!("cache-in-{n}"));
        unpack_blob(&c, input_cache.from.as_ref().unwrap(), &dest).await;
        let count = std::fs::read_to_string(dest.join("count")).ok();
        assert_eq!(count.as_deref(), last_cache_out.as_deref(), "build {n}");
        // Its outputs came back through the blob store.
        let mut outs: Vec<_> = job.outputs.keys().map(String::as_str).collect();
        outs.sort();
        assert_eq!(outs, ["/app", "/cache", "/slipway/out"]);
        let dest = scratch.path().join(format!("cache-out-{n}"));
        unpack_blob(&c, &job.outputs["/cache"], &dest).await;
        let count = std::fs::read_to_string(dest.join("count")).unwrap();
        assert_eq!(count, format!("{}\n", n + 1));
        last_cache_out = Some(count);
        let dest = scratch.path().join(format!("app-out-{n}"));
        unpack_blob(&c, &job.outputs["/app"], &dest).await;
        assert_eq!(
            std::fs::read_to_string(dest.join("built.txt")).unwrap(),
            "built\n"
        );
    }
    // The host removed the jobs' files; the controller removed its transfer files.
    let left: Vec<_> = std::fs::read_dir(c.dir.path().join("host/job-files/jobs"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let builds: Vec<_> = std::fs::read_dir(c.dir.path().join("builds"))
        .unwrap()
        .collect();
    assert!(builds.is_empty(), "{builds:?}");
}

/// A build through another controller (its own data dir, so no local copy of the cache)
/// starts from the cache the app's last build left: the store records it per app.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_through_another_controller_starts_from_the_apps_last_cache() {
    if skip_unless_root("a_build_through_another_controller_starts_from_the_apps_last_cache") {
        return;
    }
    let bps = tempfile::tempdir().unwrap();
    write_tree(bps.path(), COUNTER);
    let mut c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &[("app.sh", "echo hi\n")]);
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "counter")])
        .await;
    res.unwrap_or_else(|e| panic!("first build: {e}; output: {lines:#?}"));
    assert!(lines.iter().any(|l| l == "cache count: 0"), "{lines:#?}");
    let recorded = c.store.build_cache_digest(app.id).await.unwrap();
    assert!(recorded.is_some(), "the first build's cache is recorded");

    c.as_another_controller();
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "counter")])
        .await;
    res.unwrap_or_else(|e| panic!("second build: {e}; output: {lines:#?}"));
    assert!(
        lines.iter().any(|l| l == "cache count: 1"),
        "the second controller's build did not start from the first's cache: {lines:#?}"
    );
    let now = c.store.build_cache_digest(app.id).await.unwrap();
    assert!(
        now.is_some() && now != recorded,
        "the second build's cache is recorded"
    );
    // Garbage collection keeps the recorded cache.
    let kept = c.store.shared_state_blobs().await.unwrap();
    assert!(kept.contains(&now.unwrap()), "{kept:?}");
}
