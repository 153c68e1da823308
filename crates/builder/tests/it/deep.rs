//! A build that leaves a tree deeper than the server may walk (issue 14): the buildpack runs as
//! the app's code, so `/app` and the cache can be any tree. The slug is refused with the
//! limit's name, the build dir goes, a hostile cache is dropped (the host will not pack it)
//! instead of failing every later build, and the test process (the server, in production) is still there to say so.

use crate::harness::*;

/// Makes a chain of 3000 directories in the build dir and in the cache (far past `PATH_MAX`).
const DEEP: &[(&str, &str)] = &[
    ("deep/bin/detect", "#!/bin/sh\necho Deep\n"),
    (
        "deep/bin/compile",
        r#"#!/bin/sh
set -e
if [ -e "$2/deep" ]; then echo "the cache still has the deep tree"; fi
# Three chains 1000 deep, nested by moving one into the deepest dir of the next: no path
# handed to the kernel is longer than PATH_MAX, the result is 3000 levels deep.
d=$(for i in $(seq 1000); do printf d/; done)
for top in "$1" "$2"; do
  for c in c1 c2 c3; do mkdir -p "$top/$c/$d"; done
  mv "$top/c3" "$top/c2/$d"
  mv "$top/c2" "$top/c1/$d"
done
touch "$2/deep"
echo "made two trees 3000 deep"
"#,
    ),
    (
        "deep/bin/release",
        "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: sleep 1'\n",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn a_buildpack_that_leaves_a_tree_3000_deep_fails_the_build_and_leaves_nothing() {
    if skip_unless_root(
        "a_buildpack_that_leaves_a_tree_3000_deep_fails_the_build_and_leaves_nothing",
    ) {
        return;
    }
    let bps = tempfile::tempdir().unwrap();
    write_tree(bps.path(), DEEP);
    let c = Cluster::start(Some(bps.path())).await;
    let app = c.app().await;
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &[("app.sh", "echo hi\n")]);
    for _ in 0..2 {
        let (res, lines) = c
            .build(&app, src.path(), &[("BUILDPACK_URL", "deep")])
            .await;
        assert!(
            lines.iter().any(|l| l == "made two trees 3000 deep"),
            "{lines:#?}"
        );
        let err = res.unwrap_err().to_string();
        assert!(
            err.starts_with(
                "The compiled slug cannot be made: the built app is deeper than 1000 levels \
                 (at c1/d/d/"
            ),
            "{err}"
        );
        // The host cannot pack the deep cache: each build says so and the next starts with
        // an empty one.
        assert!(
            lines.iter().any(
                |l| l.starts_with("-----> The build cache could not be kept (")
                    && l.contains("/cache in the blob store: deeper than 1000 levels (at c1/d/d/")
                    && l.ends_with("): the next build starts with an empty one")
            ),
            "{lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l == "the cache still has the deep tree"),
            "{lines:#?}"
        );
        let builds = c.ctx.data_dir.join("builds");
        let left: Vec<_> = std::fs::read_dir(&builds)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}
