//! Hostile trees and limits: nothing is written (or deleted, or read) outside the build dir,
//! and every limit fails the build with a message naming it. Also: cancelling a build.

use crate::harness::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Everything below `dir`, with contents, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if ft.is_dir() {
                stack.push(p);
                out.push((rel, "<dir>".into()));
            } else {
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinks_out_of_the_tree_and_dot_dot_patterns_touch_nothing_outside() {
    if skip_unless_root("symlinks_out_of_the_tree_and_dot_dot_patterns_touch_nothing_outside") {
        return;
    }
    let outside = tempdir("slipway-builder-outside");
    std::fs::write(outside.path().join("secret"), "do not touch\n").unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::write(outside.path().join("sub/x.log"), "keep me\n").unwrap();
    let before = snapshot(outside.path());
    let o = outside.path().display().to_string();
    let bps = tempdir("slipway-builder-bps");
    // The buildpack tries its best from inside: write through the links, plant new links to
    // host paths (the host later reads the Procfile and tars /app).
    write_tree(
        bps.path(),
        &[
            ("evil/bin/detect", "#!/bin/sh\necho Evil\n"),
            (
                "evil/bin/compile",
                &format!(
                    "#!/bin/sh\n\
                     echo pwned > \"$1/abs/pwned\" 2>/dev/null\n\
                     echo pwned > \"$1/rel/pwned\" 2>/dev/null\n\
                     echo pwned > \"$1/abs/secret\" 2>/dev/null\n\
                     ln -sfn {o}/secret \"$1/Procfile\"\n\
                     ln -sfn {o} \"$1/planted\"\n\
                     ln -sfn {o}/secret \"$1/.profile.d\" 2>/dev/null\n\
                     echo compiled\n"
                ),
            ),
            (
                "evil/bin/release",
                "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: echo safe\\n'\n",
            ),
        ],
    );
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempdir("slipway-builder-src");
    write_tree(
        src.path(),
        &[
            ("abs@", &o),
            ("rel@", &format!("../../../../../../../..{o}")),
            ("secret-link@", &format!("{o}/secret")),
            (
                ".slugignore",
                &format!(
                    "abs/secret\nrel/sub\n../outside\n{o}/secret\n/../../../../..{o}/sub\n*.log\n"
                ),
            ),
            (".buildpacks@", &format!("{o}/secret")),
            ("app.txt", "the app\n"),
        ],
    );
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "evil")])
        .await;
    let built = res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
    assert!(lines.iter().any(|l| l == "compiled"), "{lines:#?}");
    assert_eq!(
        snapshot(outside.path()),
        before,
        "something outside changed"
    );
    // The host never followed the planted Procfile link: the Procfile is the defaults.
    assert_eq!(built.process_types.keys().collect::<Vec<_>>(), ["web"]);
    let entries = c.slug_entries(&built).await;
    assert_eq!(entries["app/Procfile"], "web: echo safe\n");
    assert_eq!(entries["app/abs"], format!("-> {o}"));
    assert_eq!(entries["app/planted"], format!("-> {o}"));
    assert_eq!(entries["app/secret-link"], format!("-> {o}/secret"));
    assert!(
        !entries.values().any(|v| v.contains("do not touch")),
        "a link was followed into the slug: {entries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_source_size_slug_size_and_memory_fail_with_clear_errors() {
    if skip_unless_root("limits_source_size_slug_size_and_memory_fail_with_clear_errors") {
        return;
    }
    let bps = tempdir("slipway-builder-bps");
    write_tree(
        bps.path(),
        &[
            ("big/bin/detect", "#!/bin/sh\necho Big\n"),
            (
                "big/bin/compile",
                "#!/bin/sh\nhead -c 3000000 /dev/urandom > \"$1/random.bin\"\necho wrote\n",
            ),
            ("big/bin/release", "#!/bin/sh\necho ---\n"),
            ("hog/bin/detect", "#!/bin/sh\necho Hog\n"),
            (
                "hog/bin/compile",
                "#!/bin/sh\necho allocating\nx=$(head -c 200000000 /dev/zero | tr '\\0' a)\necho survived ${#x}\n",
            ),
            ("hog/bin/release", "#!/bin/sh\necho ---\n"),
        ],
    );
    let mut c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;

    // A 100 MiB file and a Procfile are over the default source limit (100 MiB).
    let src = tempdir("slipway-builder-src");
    write_tree(src.path(), &[("Procfile", "web: true\n")]);
    let f = std::fs::File::create(src.path().join("huge.bin")).unwrap();
    f.set_len(100 << 20).unwrap();
    let started = Instant::now();
    let (res, _) = c.build(&app, src.path(), &[("BUILDPACK_URL", "big")]).await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("source tree is larger than the limit of 100M"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    std::fs::remove_file(src.path().join("huge.bin")).unwrap();

    // A slug over its cap.
    c.ctx.limits.slug_bytes = 1 << 20;
    let (res, lines) = c.build(&app, src.path(), &[("BUILDPACK_URL", "big")]).await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("compiled slug is larger than the limit of 1.0M"),
        "{err}; {lines:#?}"
    );

    // A build over its memory limit.
    c.ctx.limits.memory_bytes = 64 << 20;
    let (res, lines) = c.build(&app, src.path(), &[("BUILDPACK_URL", "hog")]).await;
    let err = res.unwrap_err().to_string();
    assert_eq!(
        err, "The build ran out of memory (limit 64M) and was killed.",
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("survived")));
    // Nothing is left of the failed builds but the cache: their directories go (the removal
    // may finish just after the error is returned), polled up to a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(c.dir.path().join("builds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "failed builds left {left:?} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_build_stops_its_job_within_10_s() {
    if skip_unless_root("dropping_the_build_stops_its_job_within_10_s") {
        return;
    }
    let bps = tempdir("slipway-builder-bps");
    write_tree(
        bps.path(),
        &[
            ("slow/bin/detect", "#!/bin/sh\necho Slow\n"),
            (
                "slow/bin/compile",
                "#!/bin/sh\necho sleeping\nexec sleep 600\n",
            ),
            ("slow/bin/release", "#!/bin/sh\necho ---\n"),
        ],
    );
    let c = std::sync::Arc::new(Cluster::start(Some(bps.path())).await);
    let app = c.app().await;
    let src = tempdir("slipway-builder-src");
    write_tree(src.path(), &[("x", "x")]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let (c2, app2, dir) = (c.clone(), app.clone(), src.path().to_path_buf());
    let task = tokio::spawn(async move {
        let input = slipway_builder::BuildInput {
            app: app2,
            env: [("BUILDPACK_URL".to_string(), "slow".to_string())].into(),
            source_dir: dir,
            commit: "abc".into(),
            stack: "busybox".into(),
        };
        slipway_builder::build(&c2.ctx, input, tx).await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("no 'sleeping' line")
            .expect("build ended early");
        if l == "sleeping" {
            break;
        }
    }
    let running = |c: &Cluster| {
        c.sched
            .jobs()
            .into_iter()
            .filter(|j| j.app_id == app.id && !j.state.is_finished())
            .count()
    };
    assert_eq!(running(&c), 1);
    task.abort();
    let dropped = Instant::now();
    while running(&c) > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "the build job still runs 10 s after the build was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("build job stopped {:?} after the drop", dropped.elapsed());
    while std::fs::read_dir(c.dir.path().join("builds"))
        .unwrap()
        .next()
        .is_some()
    {
        assert!(
            dropped.elapsed() < Duration::from_secs(15),
            "build dir left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_over_its_time_limit_is_stopped() {
    if skip_unless_root("a_build_over_its_time_limit_is_stopped") {
        return;
    }
    let bps = tempdir("slipway-builder-bps");
    write_tree(
        bps.path(),
        &[
            ("slow/bin/detect", "#!/bin/sh\necho Slow\n"),
            ("slow/bin/compile", "#!/bin/sh\necho sleeping\nsleep 600\n"),
            ("slow/bin/release", "#!/bin/sh\necho ---\n"),
        ],
    );
    let mut c = Cluster::start(Some(bps.path())).await;
    c.ctx.limits.timeout = Duration::from_secs(2);
    let app = c.app().await;
    let src = tempdir("slipway-builder-src");
    write_tree(src.path(), &[("x", "x")]);
    let started = Instant::now();
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "slow")])
        .await;
    let err = res.unwrap_err().to_string();
    assert_eq!(
        err, "The build took longer than the limit of 2 s and was stopped.",
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == "sleeping"));
    // The job is stopped (the scheduler hears of it through the host's events).
    let running = || {
        c.sched
            .jobs()
            .iter()
            .filter(|j| j.app_id == app.id && !j.state.is_finished())
            .count()
    };
    while running() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:#?}",
            c.sched.jobs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_over_its_limit_is_emptied_before_the_build() {
    if skip_unless_root("a_cache_over_its_limit_is_emptied_before_the_build") {
        return;
    }
    let bps = tempdir("slipway-builder-bps");
    write_tree(
        bps.path(),
        &[
            ("fill/bin/detect", "#!/bin/sh\necho Fill\n"),
            (
                "fill/bin/compile",
                "#!/bin/sh\necho \"cached: $(ls \"$2\" | tr '\\n' ' ')\"\nhead -c 5000 /dev/zero > \"$2/blob-$(ls \"$2\" | wc -l)\"\n",
            ),
            ("fill/bin/release", "#!/bin/sh\necho ---\n"),
        ],
    );
    let mut c = Cluster::start(Some(bps.path())).await;
    c.ctx.limits.cache_bytes = 8000;
    let app = c.app().await;
    let src = tempdir("slipway-builder-src");
    write_tree(src.path(), &[("x", "x")]);
    let mut cached = Vec::new();
    for _ in 0..3 {
        let (res, lines) = c
            .build(&app, src.path(), &[("BUILDPACK_URL", "fill")])
            .await;
        res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
        let l = lines.iter().find(|l| l.starts_with("cached:")).unwrap();
        cached.push(l.split_whitespace().count() - 1);
        let cleared = lines.iter().any(|l| {
            l == "-----> The build cache was larger than 7.8K: starting with an empty one"
        });
        assert_eq!(cleared, cached.len() == 3, "{lines:#?}");
    }
    // 0 files, then 1 (5000 bytes), then 2 (10000 > 8000: emptied before the third build).
    assert_eq!(cached, [0, 1, 0]);
}

/// The build cache is a filesystem of the cache limit. It was a plain directory on the host's
/// disk, bind-mounted writable at `/cache`: the build job's disk limit bounded `/app` and its
/// writable layer but not the cache, so a build (any dependency's install script) could fill
/// the server's disk through `$CACHE_DIR`. Before: the 64 MiB write to a cache of 32 MiB
/// succeeded (`wrote 67108864`).
#[tokio::test(flavor = "multi_thread")]
async fn a_build_cannot_write_more_than_the_cache_limit_into_its_cache() {
    if skip_unless_root("a_build_cannot_write_more_than_the_cache_limit_into_its_cache") {
        return;
    }
    let bps = tempdir("slipway-builder-bps");
    write_tree(
        bps.path(),
        &[
            ("fill/bin/detect", "#!/bin/sh\necho Fill\n"),
            (
                "fill/bin/compile",
                "#!/bin/sh\necho \"cached: $(ls \"$2\" | tr '\\n' ' ')\"\n\
                 head -c 67108864 /dev/zero > \"$2/fill\" 2>/dev/null || echo \"write failed\"\n\
                 echo \"wrote $(wc -c < \"$2/fill\")\"\nrm -f \"$2/fill\"\necho kept > \"$2/kept\"\n",
            ),
            ("fill/bin/release", "#!/bin/sh\necho ---\n"),
        ],
    );
    let mut c = Cluster::start(Some(bps.path())).await;
    c.ctx.limits.cache_bytes = 32 << 20;
    let app = c.app().await;
    let src = tempdir("slipway-builder-src");
    write_tree(src.path(), &[("x", "x")]);
    for round in 0..2 {
        let (res, lines) = c
            .build(&app, src.path(), &[("BUILDPACK_URL", "fill")])
            .await;
        res.unwrap_or_else(|e| panic!("{e}; {lines:#?}"));
        let wrote: u64 = lines
            .iter()
            .find_map(|l| l.strip_prefix("wrote "))
            .unwrap_or_else(|| panic!("{lines:#?}"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            wrote <= 32 << 20 && lines.iter().any(|l| l == "write failed"),
            "the build wrote {wrote} bytes into a cache of 32 MiB: {lines:#?}"
        );
        // The cache still works: what a build leaves there, the next one finds.
        let cached = lines.iter().find(|l| l.starts_with("cached:")).unwrap();
        assert_eq!(
            cached.trim(),
            if round == 0 {
                "cached:"
            } else {
                "cached: kept"
            }
        );
    }
    // Nothing of the builds is left mounted.
    let builds = c.dir.path().join("builds").display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&builds)).collect();
    assert!(left.is_empty(), "{left:#?}");
}
