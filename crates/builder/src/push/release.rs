//! From a build to a running release (Flynn's `flynn-receiver` after the slugbuilder): the slug
//! artifact, the release (previous env + the build's process types), the deployment, the
//! initial `web=1` on a first deploy, and trimming old slug releases.

use crate::pipeline::Built;
use slipway_store::Store;
use slipway_types::{
    App, Artifact, ArtifactType, DeploymentStatus, FormationUpdate, HealthCheck, HealthCheckType,
    Id, Job, JobState, NewArtifact, NewRelease, Port, ProcessType, Release, Service,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inactive slugs kept per app when `app.meta["slug.keep"]` says nothing.
pub const DEFAULT_SLUGS_KEPT: usize = 10;
/// The app meta key for it.
pub const SLUGS_KEPT_KEY: &str = "slug.keep";
/// New jobs of a first deploy may fail this many times (the deployer's threshold).
const FAILURE_THRESHOLD: usize = 5;

pub fn slug_artifact(built: &Built, stack: &str, commit: &str) -> NewArtifact {
    let mut meta = BTreeMap::new();
    meta.insert("stack".to_string(), stack.to_string());
    meta.insert("git.commit".to_string(), commit.to_string());
    if !built.buildpacks.is_empty() {
        meta.insert("buildpacks".to_string(), built.buildpacks.join(","));
    }
    NewArtifact {
        kind: ArtifactType::Slug,
        uri: format!("blob:{}", built.slug.digest),
        manifest: None,
        meta,
        size: Some(built.slug.size),
        digest: Some(built.slug.digest.to_string()),
    }
}

/// Does `ptype` serve HTTP (Flynn: `web` and `*-web`)?
fn is_web(ptype: &str) -> bool {
    ptype == "web" || ptype.ends_with("-web")
}

/// The release: the previous release's env, one process type per type the build found (empty
/// args: slug jobs run `/runner/init start TYPE`, which reads the slug's Procfile), keeping each
/// type's ports, env and limits from the previous release; web types without ports get one
/// with the `APP-web` / `APP-TYPE` service and a TCP check.
pub fn new_release(
    app: &App,
    prev: Option<&Release>,
    artifact: Id,
    built: &Built,
    commit: &str,
) -> NewRelease {
    let mut processes = BTreeMap::new();
    for ptype in built.process_types.keys() {
        let old = prev.and_then(|r| r.processes.get(ptype));
        let mut p = ProcessType {
            args: Vec::new(),
            ..old.cloned().unwrap_or_default()
        };
        p.args.clear();
        if p.ports.is_empty() && is_web(ptype) {
            let service = if ptype == "web" {
                format!("{}-web", app.name)
            } else {
                format!("{}-{ptype}", app.name)
            };
            p.ports.push(Port {
                port: 0,
                proto: "tcp".into(),
                service: Some(Service {
                    name: service,
                    create: true,
                    check: Some(tcp_check()),
                }),
            });
        }
        processes.insert(ptype.clone(), p);
    }
    let mut meta = BTreeMap::new();
    meta.insert("git".to_string(), "true".to_string());
    meta.insert("git.commit".to_string(), commit.to_string());
    NewRelease {
        artifacts: vec![artifact],
        env: prev.map(|r| r.env.clone()).unwrap_or_default(),
        meta,
        processes,
    }
}

fn tcp_check() -> HealthCheck {
    // Until it first passes the host probes from 2 ms after the start, backing off to every
    // 100 ms, whatever the interval; after that, every 2 s, and two results in a row flip the
    // state (one lost probe is not an outage).
    HealthCheck {
        kind: HealthCheckType::Tcp,
        path: None,
        status: None,
        interval_ms: 2000,
        threshold: 2,
        start_timeout_ms: 30_000,
        kill_down: false,
    }
}

/// Deploys `release` of `app` and waits: through a deployment (the old release keeps serving if
/// it fails); on a first deploy, then `web=1` and waiting for that job to be up. `say` prints a
/// progress line.
pub async fn deploy(
    store: &Arc<dyn Store>,
    app: &App,
    release: &Release,
    say: impl Fn(String),
) -> Result<(), String> {
    // First deploy: nothing ran before (no formation, or one of all zeros — also what a failed
    // first deploy leaves), so nothing would start: scale web to 1 as Flynn did.
    let first = match app.release {
        None => true,
        Some(prev) => match store.get_formation(app.id, prev).await {
            Ok(f) => f.processes.values().all(|n| *n == 0),
            Err(_) => true,
        },
    };
    let d = store
        .create_deployment(app.id, release.id)
        .await
        .map_err(|e| format!("cannot start the deployment: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(d.deploy_timeout) + 30);
    let mut notifier = store.event_notifier();
    loop {
        let d = store
            .get_deployment(d.id)
            .await
            .map_err(|e| format!("cannot read the deployment: {e}"))?;
        match d.status {
            DeploymentStatus::Complete => break,
            DeploymentStatus::Failed => {
                return Err(format!(
                    "deployment failed: {}; the previous release keeps serving",
                    d.error.as_deref().unwrap_or("no reason given")
                ));
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "deployment {} is still {} after {}s (see `slipway deployment`)",
                    d.id,
                    d.status.as_str(),
                    d.deploy_timeout + 30
                ));
            }
            _ => {
                let _ = tokio::time::timeout(Duration::from_millis(200), notifier.changed()).await;
            }
        }
    }
    if !(first && release.processes.contains_key("web")) {
        return Ok(());
    }
    say("=====> Scaling initial release to web=1".into());
    let mut update = FormationUpdate::default();
    update.processes.insert("web".into(), 1);
    store
        .put_formation(app.id, release.id, &update)
        .await
        .map_err(|e| format!("cannot scale web to 1: {e}"))?;
    let timeout = Duration::from_secs(u64::from(app.deploy_timeout.max(1)));
    match wait_web_up(store, app.id, release.id, timeout).await {
        Ok(()) => {
            say("=====> Initial web job started".into());
            Ok(())
        }
        Err(reason) => {
            update.processes.insert("web".into(), 0);
            let _ = store.put_formation(app.id, release.id, &update).await;
            // The release stays current at web=0 (Flynn's way): the next push that starts is
            // again a first deploy and scales web to 1.
            Err(format!(
                "Initial web job failed to start: {reason}. The release is kept with web=0: \
                 fix the web process and push again"
            ))
        }
    }
}

/// Waits for a `web` job of `release` to be up; fails after [`FAILURE_THRESHOLD`] failed jobs
/// or `timeout`.
async fn wait_web_up(
    store: &Arc<dyn Store>,
    app: Id,
    release: Id,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut notifier = store.event_notifier();
    loop {
        let jobs: Vec<Job> = store
            .list_jobs(app)
            .await
            .map_err(|e| format!("cannot read jobs: {e}"))?
            .into_iter()
            .filter(|j| j.release_id == release && j.process_type.as_deref() == Some("web"))
            .collect();
        if jobs.iter().any(|j| j.state == JobState::Up) {
            return Ok(());
        }
        let failed: Vec<&Job> = jobs
            .iter()
            .filter(|j| {
                matches!(j.state, JobState::Crashed | JobState::Failed)
                    || (j.state == JobState::Down && j.exit_status.is_some_and(|c| c != 0))
            })
            .collect();
        if failed.len() >= FAILURE_THRESHOLD {
            let last = failed.iter().max_by_key(|j| j.updated_at).expect("failed");
            return Err(match (&last.host_error, last.exit_status) {
                (Some(e), _) => e.clone(),
                (None, Some(c)) => format!("the web process exited with status {c}"),
                (None, None) => "the web job went down".into(),
            });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no web job was up after {}s (is the web process listening on $PORT?)",
                timeout.as_secs()
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notifier.changed()).await;
    }
}

/// What [`trim_old_slugs`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub releases: usize,
    pub slugs: usize,
}

/// Deletes the releases of slugs older than the newest `keep` inactive ones (the current
/// release's slug is active), then those slug artifacts, so that the blob store's GC frees
/// their blobs (it keeps every blob an artifact names). Releases without a slug, image
/// artifacts and a slug the current release uses are never touched; a slug another app's
/// release still names stays (the store refuses to delete it). A release's build record and
/// log go with it.
pub async fn trim_old_slugs(store: &Arc<dyn Store>, app: &App) -> Result<Trimmed, String> {
    let keep = app
        .meta
        .get(SLUGS_KEPT_KEY)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_SLUGS_KEPT);
    let releases = store
        .list_releases(app.id)
        .await
        .map_err(|e| e.to_string())?;
    let mut kinds: BTreeMap<Id, Option<Artifact>> = BTreeMap::new();
    let current_slugs: Vec<Id> = releases
        .iter()
        .filter(|r| Some(r.id) == app.release)
        .flat_map(|r| r.artifacts.clone())
        .collect();
    // Slugs in order of their newest release (releases are newest first).
    let mut order: Vec<Id> = Vec::new();
    for r in &releases {
        for a in &r.artifacts {
            if !kinds.contains_key(a) {
                let art = store.get_artifact(*a).await.ok();
                kinds.insert(*a, art);
            }
            let is_slug = kinds[a]
                .as_ref()
                .is_some_and(|x| x.kind == ArtifactType::Slug);
            if is_slug && !current_slugs.contains(a) && !order.contains(a) {
                order.push(*a);
            }
        }
    }
    let old: Vec<Id> = order.into_iter().skip(keep).collect();
    let mut trimmed = Trimmed::default();
    for r in &releases {
        if Some(r.id) != app.release
            && r.artifacts.iter().any(|a| old.contains(a))
            && store.delete_release(app.id, r.id).await.is_ok()
        {
            trimmed.releases += 1;
        }
    }
    for a in &old {
        match store.delete_artifact(*a).await {
            Ok(()) => trimmed.slugs += 1,
            // Still named by a release (another app's, or one being deployed): kept.
            Err(
                slipway_store::StoreError::Conflict(_) | slipway_store::StoreError::NotFound(_),
            ) => {}
            Err(e) => return Err(format!("cannot delete slug artifact {a}: {e}")),
        }
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::NewApp;

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

    fn built(types: &[&str]) -> Built {
        Built {
            slug: slipway_blobstore::BlobInfo {
                digest: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
                size: 10,
                modified: None,
            },
            slug_size: 10,
            process_types: types
                .iter()
                .map(|t| (t.to_string(), "cmd".to_string()))
                .collect(),
            buildpacks: vec!["procfile".into()],
        }
    }

    #[test]
    fn the_release_keeps_env_and_per_type_settings_and_gives_web_types_a_service() {
        let app = app("shop");
        let mut prev: Release = serde_json::from_value(serde_json::json!({
            "id": "1b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
            "app_id": "0b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
            "env": {"GREETING": "hi"},
            "processes": {
                "web": {"args": ["old"], "ports": [{"port": 5000}], "resources": {"memory": 1048576}},
                "gone": {"args": ["x"]}
            },
            "created_at": "2026-11-22T05:00:00Z",
        }))
        .unwrap();
        prev.processes
            .get_mut("web")
            .unwrap()
            .env
            .insert("W".into(), "1".into());
        let art = Id::new_v4();
        let r = new_release(
            &app,
            Some(&prev),
            art,
            &built(&["web", "worker", "api-web"]),
            "c0ffee",
        );
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
        let first = new_release(&app, None, art, &built(&["web"]), "c0ffee");
        let svc = first.processes["web"].ports[0].service.as_ref().unwrap();
        assert_eq!(svc.name, "shop-web");
        assert!(first.env.is_empty());
        let a = slug_artifact(&built(&["web"]), "busybox", "c0ffee");
        assert_eq!(a.uri, format!("blob:sha256:{}", "ab".repeat(32)));
        assert_eq!(a.digest.as_deref(), Some(&a.uri[5..]));
        assert_eq!(a.meta.get("stack").map(String::as_str), Some("busybox"));
    }

    /// A slug artifact whose blob (content `slug N`) is in `blobs`.
    async fn slug_blob(
        store: &Arc<dyn Store>,
        blobs: &slipway_blobstore::FsBlobStore,
        n: u8,
    ) -> (Id, slipway_blobstore::Digest) {
        use slipway_blobstore::BlobStore;
        let body = Box::new(std::io::Cursor::new(format!("slug {n}").into_bytes()));
        let digest = blobs.put(body, None).await.unwrap().digest;
        let a = NewArtifact {
            kind: ArtifactType::Slug,
            uri: format!("blob:{digest}"),
            manifest: None,
            meta: Default::default(),
            size: Some(6),
            digest: Some(digest.to_string()),
        };
        (store.create_artifact(&a).await.unwrap().id, digest)
    }

    #[tokio::test]
    async fn old_slugs_go_with_their_releases_and_the_gc_frees_their_blobs() {
        use slipway_blobstore::BlobStore;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await.unwrap());
        let blobs = slipway_blobstore::FsBlobStore::open(dir.path().join("blobs")).unwrap();
        let mut meta = BTreeMap::new();
        meta.insert(SLUGS_KEPT_KEY.to_string(), "2".to_string());
        let new = NewApp {
            meta,
            ..Default::default()
        };
        let app = store.create_app("trim", &new, None).await.unwrap();
        let rel = |a: Vec<Id>| NewRelease {
            artifacts: a,
            ..Default::default()
        };
        // An old image release (older than every slug): never trimmed.
        let image = store
            .create_artifact(&NewArtifact {
                kind: ArtifactType::Image,
                uri: "registry:trim@sha256:1".into(),
                manifest: None,
                meta: Default::default(),
                size: None,
                digest: Some(format!("sha256:{}", "ee".repeat(32))),
            })
            .await
            .unwrap();
        let image_rel = store
            .create_release(app.id, &rel(vec![image.id]))
            .await
            .unwrap();
        // Slugs 1..=5, a release each, plus a second release of slug 1 (an env change after
        // it) and an earlier release of slug 3 (the current slug: it is shared, so it stays).
        let mut releases = Vec::new();
        let mut slugs = BTreeMap::new();
        for n in 1..=5u8 {
            let (s, digest) = slug_blob(&store, &blobs, n).await;
            slugs.insert(n, (s, digest));
            if n == 3 {
                releases.push((
                    3,
                    store.create_release(app.id, &rel(vec![s])).await.unwrap(),
                ));
            }
            releases.push((
                n,
                store.create_release(app.id, &rel(vec![s])).await.unwrap(),
            ));
            if n == 1 {
                releases.push((
                    1,
                    store.create_release(app.id, &rel(vec![s])).await.unwrap(),
                ));
            }
        }
        let plain = store
            .create_release(app.id, &NewRelease::default())
            .await
            .unwrap();
        let garbage = blobs
            .put(Box::new(std::io::Cursor::new(b"unrelated".to_vec())), None)
            .await
            .unwrap()
            .digest;
        // The current release is slug 3's newest: inactive are 5, 4 (kept), 2, 1 (deleted).
        let current = releases.iter().rfind(|(n, _)| *n == 3).unwrap().1.id;
        let app = store.set_app_release(app.id, current).await.unwrap();
        let trimmed = trim_old_slugs(&store, &app).await.unwrap();
        assert_eq!(
            trimmed,
            Trimmed {
                releases: 3,
                slugs: 2
            },
            "slug 2's release and slug 1's two; slugs 1 and 2"
        );
        let left: Vec<Id> = store
            .list_releases(app.id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        for (n, r) in &releases {
            assert_eq!(left.contains(&r.id), *n >= 3, "release of slug {n}");
        }
        assert!(left.contains(&plain.id), "releases without a slug stay");
        assert!(left.contains(&image_rel.id), "image releases stay");
        assert!(store.get_artifact(image.id).await.is_ok(), "images stay");
        for (n, (id, _)) in &slugs {
            assert_eq!(store.get_artifact(*id).await.is_ok(), *n >= 3, "slug {n}");
        }
        // Nothing more to do the second time.
        assert_eq!(
            trim_old_slugs(&store, &app).await.unwrap(),
            Trimmed::default()
        );

        // The GC (no grace) now frees the deleted slugs' blobs and keeps the others'.
        let listed = async || store.list_artifacts().await.map_err(|e| e.to_string());
        let report = slipway_blobstore::gc::collect(
            &blobs,
            listed,
            Duration::ZERO,
            std::time::SystemTime::now() + Duration::from_secs(1),
        )
        .await
        .unwrap();
        let mut deleted = report.deleted.clone();
        deleted.sort();
        let mut want = vec![slugs[&1].1.clone(), slugs[&2].1.clone(), garbage];
        want.sort();
        assert_eq!(deleted, want);
        for (n, (_, digest)) in &slugs {
            assert_eq!(blobs.path(digest).exists(), *n >= 3, "blob of slug {n}");
        }

        // A kept inactive release still deploys as the current one (rollback).
        let back = releases.iter().find(|(n, _)| *n == 4).unwrap().1.id;
        let app = store.set_app_release(app.id, back).await.unwrap();
        assert_eq!(app.release, Some(back));
        let r = store.get_release(back).await.unwrap();
        assert!(store.get_artifact(r.artifacts[0]).await.is_ok());
    }
}
