//! What a build job can write: only the app (`/app`), its cache (`/cache`), its output dir
//! (`/slipway/out`) and its own `/tmp` (a tmpfs of the container, 1777 like every job's, counted
//! in its memory: docs/build.md). Everything else — the stack's root filesystem, the env and meta
//! dirs, the buildpacks — is read-only to it (uid 1000, read-only bind mounts).

use crate::harness::*;

/// A buildpack whose compile tries to create a file in every directory it can see (but /proc,
/// /sys and /dev) and prints the ones where that worked.
const PROBE: &[(&str, &str)] = &[
    ("probe/bin/detect", "#!/bin/sh\necho Probe\n"),
    (
        "probe/bin/compile",
        r#"#!/bin/sh
echo "dirs: build $1 cache $2 env $3"
echo "/tmp is: $(awk '$2 == "/tmp" { print $3 }' /proc/mounts)"
dirs=$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type d -print)
echo "dirs seen: $(echo "$dirs" | wc -l)"
echo "$dirs" | while read -r d; do
  if ( : > "$d/.slipway-probe" ) 2>/dev/null; then
    echo "writable: $d"
    rm -f "$d/.slipway-probe"
  fi
done
"#,
    ),
    ("probe/bin/release", "#!/bin/sh\necho '---'\n"),
];

#[tokio::test(flavor = "multi_thread")]
async fn a_build_job_can_write_only_the_app_its_cache_and_its_output_dir() {
    if skip_unless_root("a_build_job_can_write_only_the_app_its_cache_and_its_output_dir") {
        return;
    }
    let bps = tempfile::Builder::new()
        .prefix("slipway-builder-bps")
        .tempdir()
        .unwrap();
    write_tree(bps.path(), PROBE);
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempfile::Builder::new()
        .prefix("slipway-builder-src")
        .tempdir()
        .unwrap();
    write_tree(
        src.path(),
        &[("Procfile", "web: true\n"), ("sub/dir/file", "x\n")],
    );
    let (res, lines) = c
        .build(&app, src.path(), &[("BUILDPACK_URL", "probe")])
        .await;
    res.unwrap_or_else(|e| panic!("the build failed: {e}; output: {lines:#?}"));
    assert!(
        lines
            .iter()
            .any(|l| l == "dirs: build /app cache /cache env /slipway/env"),
        "{lines:#?}"
    );
    // /tmp is the container's own tmpfs, not a directory of the stack made writable.
    assert!(lines.iter().any(|l| l == "/tmp is: tmpfs"), "{lines:#?}");
    let seen: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("dirs seen: ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of directories in {lines:#?}"));
    assert!(seen > 20, "the probe saw the stack's directories: {seen}");
    let writable: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("writable: "))
        .collect();
    let allowed = |d: &str| {
        ["/app", "/cache", "/slipway/out", "/tmp"]
            .iter()
            .any(|a| d == *a || d.starts_with(&format!("{a}/")))
    };
    let outside: Vec<&&str> = writable.iter().filter(|d| !allowed(d)).collect();
    assert!(
        outside.is_empty(),
        "a build job can write outside /app, /cache, /slipway/out and /tmp: {outside:?}"
    );
    for want in ["/app", "/app/sub/dir", "/cache", "/slipway/out", "/tmp"] {
        assert!(
            writable.contains(&want),
            "{want} is writable for the build: {writable:?}"
        );
    }
}
