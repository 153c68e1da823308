//! "X knows nothing of Y": the crate graph's rules (ARCHITECTURE.md, "Who depends on whom"),
//! checked on every crate's `[dependencies]` (not dev-dependencies: tests may use anything),
//! followed transitively. A new dependency that breaks a rule fails here with the path that
//! breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each crate's direct `[dependencies]` (names as written, `slipway-` kept).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut g = BTreeMap::new();
    for e in std::fs::read_dir(&crates).unwrap().flatten() {
        let Ok(toml) = std::fs::read_to_string(e.path().join("Cargo.toml")) else {
            continue;
        };
        let name = toml
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no name in {}", e.path().display()));
        let mut deps = BTreeSet::new();
        let mut in_deps = false;
        for l in toml.lines() {
            let l = l.trim();
            if l.starts_with('[') {
                in_deps = l == "[dependencies]";
                continue;
            }
            if in_deps && !l.is_empty() && !l.starts_with('#') {
                let dep = l.split(['.', '=', ' ']).next().unwrap_or_default();
                deps.insert(dep.to_string());
            }
        }
        g.insert(name, deps);
    }
    assert!(g.len() >= 10, "read the workspace's crates: {g:?}");
    g
}

/// The path from `from` to `to` through `[dependencies]`, if there is one.
fn path(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut todo = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(p) = todo.pop() {
        let last = p.last().unwrap().clone();
        if last == to && p.len() > 1 {
            return Some(p);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for d in g.get(&last).into_iter().flatten() {
            let mut next = p.clone();
            next.push(d.clone());
            todo.push(next);
        }
    }
    None
}

#[test]
fn crates_know_nothing_of_what_they_must_not() {
    let g = graph();
    let rules: &[(&str, &[&str], &str)] = &[
        (
            "slipway-types",
            &["tokio", "sqlx", "hyper", "axum", "reqwest", "rustls"],
            "the data model does no I/O: everything depends on it",
        ),
        (
            "slipway-store",
            &[
                "slipway-controller",
                "slipway-scheduler",
                "slipway-host",
                "axum",
            ],
            "the store is the model's rules over a database, nothing above it",
        ),
        (
            "slipway-host",
            &[
                "slipway-store",
                "slipway-scheduler",
                "slipway-controller",
                "slipway-router",
            ],
            "the host agent (Layer 0) knows jobs, not apps' state or the control plane",
        ),
        (
            "slipway-scheduler",
            &[
                "slipway-controller",
                "slipway-router",
                "slipway-builder",
                "slipway-registry",
            ],
            "the scheduler turns formations into jobs; it does not know the API or traffic",
        ),
        (
            "slipway-router",
            &[
                "slipway-scheduler",
                "slipway-host",
                "slipway-controller",
                "slipway-builder",
            ],
            "the router follows routes (store) and backends (discovery) only",
        ),
        (
            "slipway-discovery",
            &[
                "slipway-store",
                "slipway-host",
                "slipway-scheduler",
                "slipway-router",
            ],
            "discovery stands alone: services and instances, nothing of apps' state",
        ),
        (
            "slipway-etcd",
            &[
                "slipway-types",
                "slipway-store",
                "slipway-discovery",
                "slipway-scheduler",
                "slipway-host",
                "slipway-controller",
                "axum",
            ],
            "the etcd client knows etcd, nothing of Slipway: every role may use it",
        ),
        (
            "slipway-controller",
            &[
                "slipway-scheduler",
                "slipway-host",
                "slipway-router",
                "slipway-builder",
            ],
            "the API reaches the cluster through its Cluster trait, not the crates behind it",
        ),
        (
            "slipway-deploy",
            &[
                "slipway-controller",
                "slipway-scheduler",
                "slipway-host",
                "slipway-router",
                "slipway-builder",
                "slipway-registry",
            ],
            "deploying writes formations and reads job rows through the store, nothing else",
        ),
        (
            "slipway-builder",
            &["slipway-controller", "slipway-registry"],
            "a git push deploys through slipway-deploy, not through the API or the registry",
        ),
        (
            "slipway-registry",
            &[
                "slipway-controller",
                "slipway-scheduler",
                "slipway-host",
                "slipway-builder",
            ],
            "an image push deploys through slipway-deploy, not through the API or the build",
        ),
        (
            "slipway-server",
            &["slipway", "slipway-testkit"],
            "the roles know nothing of the CLI (its config, its output) nor of test harnesses",
        ),
        (
            "slipway-dashboard",
            &[
                "slipway-store",
                "slipway-controller",
                "slipway-scheduler",
                "slipway-host",
                "slipway-deploy",
                "sqlx",
            ],
            "the dashboard acts through the API (slipway-client), as the CLI does: same validation",
        ),
        (
            "slipway-api-error",
            &[
                "slipway-controller",
                "slipway-logs",
                "slipway-registry",
                "slipway-builder",
                "slipway-scheduler",
                "slipway-host",
            ],
            "the one API error sits under every HTTP role: the model and the store only",
        ),
    ];
    let mut broken = Vec::new();
    for (from, not, why) in rules {
        assert!(g.contains_key(*from), "no crate {from}");
        for to in *not {
            if let Some(p) = path(&g, from, to) {
                broken.push(format!("{from} → {to} ({}): {why}", p.join(" → ")));
            }
        }
    }
    // No library depends on the binary crate, and only the binary on the server's roles.
    for (name, deps) in &g {
        if deps.contains("slipway") {
            broken.push(format!("{name} depends on the binary crate `slipway`"));
        }
        if deps.contains("slipway-server") && name != "slipway" {
            broken.push(format!(
                "{name} depends on `slipway-server`: only the binary starts the roles"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The check itself finds a path when there is one (the rules would pass vacuously otherwise).
#[test]
fn the_graph_reader_sees_real_dependencies() {
    let g = graph();
    assert!(
        path(&g, "slipway-router", "slipway-types").is_some(),
        "{g:?}"
    );
    assert!(path(&g, "slipway-builder", "slipway-host").is_some());
    assert!(path(&g, "slipway-registry", "slipway-deploy").is_some());
    assert!(path(&g, "slipway", "slipway-router").is_some());
    assert!(path(&g, "slipway", "slipway-server").is_some());
}
