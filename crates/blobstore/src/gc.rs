//! Garbage collection: deletes the blobs no artifact refers to.
//!
//! A blob is in use when an artifact names it: a slug's digest (or its `blob:` uri), an image's
//! manifest digest, its config and its layers. Blobs younger than the grace period are kept even
//! when nothing names them yet, so an upload whose artifact is not created yet (a build between
//! slug upload and release, a registry push between layers and manifest) survives. Blobs whose
//! age the backend cannot tell are kept.

use crate::{BlobError, BlobStore, Digest};
use slipway_types::{Artifact, ArtifactType};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// Grace period of `slipway server`'s hourly collection.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// The blobs `a` refers to.
pub fn artifact_digests(a: &Artifact) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    let mut add = |s: &str| {
        if let Ok(d) = s.parse::<Digest>() {
            out.push(d);
        }
    };
    if let Some(d) = &a.digest {
        add(d);
    }
    if let Some(d) = a.uri.strip_prefix("blob:") {
        add(d);
    }
    if a.kind == ArtifactType::Image
        && let Some(m) = &a.manifest
    {
        if let Some(d) = m.pointer("/config/digest").and_then(|d| d.as_str()) {
            add(d);
        }
        for l in m
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                add(d);
            }
        }
    }
    out
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs in the store when the collection started.
    pub scanned: usize,
    /// Kept because an artifact names them.
    pub referenced: usize,
    /// Kept because they are younger than the grace period (or of unknown age).
    pub young: usize,
    pub deleted: Vec<Digest>,
    pub freed_bytes: u64,
}

/// Deletes every blob of `blobs` that none of `artifacts` names and that is older than `grace`
/// at `now`. List the blobs' ages before reading the artifacts (as this does, by taking the
/// artifacts last) so an artifact created meanwhile is not missed for an old blob.
pub async fn collect<E: std::fmt::Display>(
    blobs: &dyn BlobStore,
    artifacts: impl AsyncFnOnce() -> Result<Vec<Artifact>, E>,
    grace: Duration,
    now: SystemTime,
) -> Result<GcReport, BlobError> {
    collect_keeping(blobs, artifacts, async || Ok(vec![]), grace, now).await
}

/// [`collect`], also keeping every blob `keep` names: state outside artifacts that names
/// blobs (the registry's manifests, tags and uploads in progress, the git receiver's stored
/// repositories). Failing to list it deletes nothing.
pub async fn collect_keeping<E: std::fmt::Display>(
    blobs: &dyn BlobStore,
    artifacts: impl AsyncFnOnce() -> Result<Vec<Artifact>, E>,
    keep: impl AsyncFnOnce() -> Result<Vec<String>, E>,
    grace: Duration,
    now: SystemTime,
) -> Result<GcReport, BlobError> {
    let listed = blobs.list().await?;
    let artifacts = artifacts()
        .await
        .map_err(|e| BlobError::Http(format!("cannot list artifacts: {e}")))?;
    let kept = keep()
        .await
        .map_err(|e| BlobError::Http(format!("cannot list the blobs other state names: {e}")))?;
    let used: HashSet<Digest> = artifacts
        .iter()
        .flat_map(artifact_digests)
        .chain(kept.iter().filter_map(|d| d.parse().ok()))
        .collect();
    let mut report = GcReport {
        scanned: listed.len(),
        ..Default::default()
    };
    for b in listed {
        if used.contains(&b.digest) {
            report.referenced += 1;
            continue;
        }
        let old = b
            .modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= grace);
        if !old {
            report.young += 1;
            continue;
        }
        if blobs.delete(&b.digest).await? {
            tracing::info!(digest = %b.digest, size = b.size, "deleted an unused blob");
            report.freed_bytes += b.size;
            report.deleted.push(b.digest);
        }
    }
    Ok(report)
}
