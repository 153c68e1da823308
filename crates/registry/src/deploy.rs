//! A pushed image becomes an Artifact and (unless told not to) a Release, deployed and waited
//! for like a `git push`: the release and the deploy are `slipway_deploy`'s (see
//! `slipway_deploy::release` for how an image's types, port, check and env are chosen), so an
//! image and a slug get the same health check and the same first-deploy rule.
//!
//! What is the registry's own:
//! - The artifact: the manifest, its digest, and the config's working dir, user and tag.
//! - Routing: the app's default route points at `APP-web`; a release whose only way in is the
//!   `app` type gets those routes moved to `APP-app` (and back to `APP-web` when a later
//!   release has a `web` type), so `APP.DOMAIN` reaches the image.
//! - The answer: the image is stored whatever the deploy does, so a failed deploy is still a
//!   201, whose body says why the image is not deployed ([`DeployOutcome::error`]).

use crate::error::{RegistryError, Result};
use crate::spec::{ImageConfig, ParsedManifest};
use serde::{Deserialize, Serialize};
use slipway_blobstore::Digest;
use slipway_deploy::release::{self, Image};
use slipway_store::Store;
use slipway_types::{
    App, ArtifactType, Id, NewArtifact, Release, RouteType, RouteUpdate, StringMap,
};
use std::sync::Arc;

pub use slipway_deploy::release::{
    DEFAULT_PORT, IMAGE_TYPE, META_DIGEST, META_ENV, META_GENERATED,
};

/// What a manifest PUT created (the JSON body of its 201, and what `slipway image push` prints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeployOutcome {
    pub artifact: Id,
    #[serde(default)]
    pub release: Option<Id>,
    #[serde(default)]
    pub deployment: Option<Id>,
    /// Process counts the release runs now, empty when nothing runs yet.
    #[serde(default)]
    pub processes: std::collections::BTreeMap<String, i64>,
    /// Flynn's line for the user: how to scale, or what runs.
    pub message: String,
    /// Why the image is stored but not deployed (`Docker image not deployed: …`); the previous
    /// release keeps serving, except after a first deploy whose initial jobs did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a release needs from the image config.
fn image(config: &ImageConfig) -> Image {
    Image {
        command: config.command(),
        port: config.first_tcp_port(),
        env: config.env(),
    }
}

pub async fn create(
    store: &Arc<dyn Store>,
    app: &App,
    parsed: &ParsedManifest,
    digest: &Digest,
    config: &ImageConfig,
    tag: Option<&str>,
    release: bool,
) -> Result<DeployOutcome> {
    let m = &parsed.manifest;
    let mut meta = StringMap::new();
    meta.insert(META_DIGEST.into(), digest.to_string());
    meta.insert("image.media_type".into(), parsed.media_type.clone());
    meta.insert("image.config".into(), m.config.digest.to_string());
    if let Some(w) = config.working_dir() {
        meta.insert("image.working_dir".into(), w);
    }
    if let Some(u) = config.user() {
        meta.insert("image.user".into(), u);
    }
    if let Some(t) = tag {
        meta.insert("image.tag".into(), t.to_string());
    }
    let size = m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let new_artifact = NewArtifact {
        kind: ArtifactType::Image,
        uri: format!("{}@{}", app.name, digest),
        manifest: Some(parsed.json.clone()),
        meta,
        size: Some(size),
        digest: Some(digest.to_string()),
    };
    new_artifact
        .validate()
        .map_err(|e| RegistryError::manifest_invalid(e.message))?;
    // The release's config is worked out first, so an image that cannot run leaves nothing.
    let mut new = None;
    if release {
        let prev = match app.release {
            Some(id) => Some(store.get_release(id).await?),
            None => None,
        };
        let prev_is_slug = match &prev {
            Some(r) => {
                let mut slug = false;
                for a in &r.artifacts {
                    slug |= store.get_artifact(*a).await?.kind == ArtifactType::Slug;
                }
                slug
            }
            None => false,
        };
        let new_release = release::release_from_image(
            app,
            prev.as_ref(),
            prev_is_slug,
            digest.as_str(),
            &image(config),
        )
        .map_err(|e| RegistryError::manifest_invalid(e.to_string()))?;
        new = Some(new_release);
    }
    let artifact = store.create_artifact(&new_artifact).await?;
    let Some(mut new) = new else {
        return Ok(DeployOutcome {
            artifact: artifact.id,
            release: None,
            deployment: None,
            processes: Default::default(),
            message: format!(
                "Stored image {digest} as artifact {} (no release: the tag starts with \"{}\" or ?deploy=false was given)",
                artifact.id,
                crate::manifests::NO_DEPLOY_TAG_PREFIX
            ),
            error: None,
        });
    };
    new.artifacts = vec![artifact.id];
    let rel = store.create_release(app.id, &new).await?;
    // The deploy runs in its own task, which this request only waits for: a pusher hanging up
    // (which drops the request) must not cut it short between creating the deployment and
    // moving the routes, nor before a first deploy's initial scale or its undoing.
    let task = tokio::spawn(deploy(store.clone(), app.clone(), artifact.id, rel));
    task.await
        .map_err(|e| RegistryError::internal(format!("the deploy task failed: {e}")))?
}

/// Deploys `rel` (made from `artifact`), waits for it, and says how it went.
async fn deploy(
    store: Arc<dyn Store>,
    app: App,
    artifact: Id,
    rel: Release,
) -> Result<DeployOutcome> {
    let store = &store;
    let app = &app;
    let not_deployed = |deployment: Option<Id>, e: slipway_deploy::DeployError| {
        let error = format!("Docker image not deployed: {e}");
        DeployOutcome {
            artifact,
            release: Some(rel.id),
            deployment,
            processes: Default::default(),
            message: error.clone(),
            error: Some(error),
        }
    };
    let started = match slipway_deploy::start(store, &rel).await {
        Ok(s) => s,
        Err(e) => return Ok(not_deployed(None, e)),
    };
    let deployment = started.deployment().id;
    // Only once the deployment exists: a refused one (another deploy running) changes nothing.
    retarget_routes(store, app, &rel).await?;
    let say = |line: String| tracing::info!(app = %app.name, "registry: {line}");
    let done = match started.wait(say).await {
        Ok(done) => done,
        Err(e) => return Ok(not_deployed(Some(deployment), e)),
    };
    let processes: std::collections::BTreeMap<String, i64> = done
        .processes
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| (t.clone(), i64::from(*n)))
        .collect();
    let message = if processes.is_empty() {
        let t = rel
            .processes
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| IMAGE_TYPE.into());
        format!("Docker image deployed, scale it with 'slipway scale {t}=N'")
    } else {
        let counts: Vec<String> = processes.iter().map(|(t, n)| format!("{t}={n}")).collect();
        format!("Docker image deployed, running {}", counts.join(" "))
    };
    Ok(DeployOutcome {
        artifact,
        release: Some(rel.id),
        deployment: Some(deployment),
        processes,
        message,
        error: None,
    })
}

/// Points the app's HTTP routes at the service that serves the new release: `APP-app` when it
/// has an `app` type and no `web` type, `APP-web` when it has a `web` type.
async fn retarget_routes(store: &Arc<dyn Store>, app: &App, rel: &Release) -> Result<()> {
    let web = format!("{}-web", app.name);
    let image = format!("{}-{IMAGE_TYPE}", app.name);
    let (from, to) = if rel.processes.contains_key("web") {
        (image, web)
    } else if rel.processes.contains_key(IMAGE_TYPE) {
        (web, image)
    } else {
        return Ok(());
    };
    for route in store.list_routes(Some(app.id)).await? {
        if route.kind() == RouteType::Http && route.service() == from {
            let update = RouteUpdate {
                service: Some(to.clone()),
                ..Default::default()
            };
            store
                .update_route(app.id, RouteType::Http, route.id(), &update)
                .await?;
        }
    }
    Ok(())
}
