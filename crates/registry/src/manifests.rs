//! Manifests: PUT (validate, store, tag, then artifact + release + deployment), GET/HEAD by tag
//! or digest, tag list.
//!
//! A manifest's bytes are kept exactly as pushed, in the blob store under their digest (a client
//! re-computes the digest of what it pulls). A store row records that this app received it and
//! its media type, another the digest a tag points at: every controller sees them.

use crate::deploy::{self, DeployOutcome};
use crate::error::{RegistryError, Result};
use crate::server::{Registry, parse_digest};
use crate::spec::{self, ImageConfig, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_blobstore::Digest;
use std::collections::HashMap;
use tokio::io::AsyncReadExt;

/// Tags whose name starts with this store the image (artifact) without a release or deploy.
pub const NO_DEPLOY_TAG_PREFIX: &str = "no-deploy";

pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

enum Reference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(r: &str) -> Result<Reference> {
    if r.contains(':') {
        return Ok(Reference::Digest(parse_digest(r)?));
    }
    if !valid_tag(r) {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("invalid tag {r:?}: use up to 128 letters, digits, '_', '.' and '-'"),
        ));
    }
    Ok(Reference::Tag(r.to_string()))
}

/// Reads a whole blob (configs, manifests) if it is no larger than `max` bytes.
pub(crate) async fn read_small_blob(
    reg: &Registry,
    d: &Digest,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    let Some((info, mut reader)) = reg.blobs.get(d).await? else {
        return Ok(None);
    };
    if info.size > max {
        return Err(RegistryError::manifest_invalid(format!(
            "blob {d} is {} bytes, more than the {max} allowed for a manifest or config",
            info.size
        )));
    }
    let mut buf = Vec::with_capacity(info.size as usize);
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| RegistryError::internal(format!("cannot read blob {d}: {e}")))?;
    Ok(Some(buf))
}

pub async fn put(
    State(reg): State<Registry>,
    Path((name, reference)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Response> {
    let app = reg.app(&name).await?;
    let reference = parse_reference(&reference)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            RegistryError::manifest_invalid(format!(
                "cannot read the manifest (at most {MAX_MANIFEST_BYTES} bytes): {e}"
            ))
        })?;
    let digest = Digest::of_bytes(&bytes);
    if let Reference::Digest(d) = &reference
        && *d != digest
    {
        return Err(RegistryError::digest_invalid(format!(
            "the manifest's digest is {digest}, not {d} as its URL says"
        )));
    }
    let parsed = spec::parse_manifest(&bytes, content_type.as_deref())?;
    // Every blob the manifest names must be here, with the size it says.
    let m = &parsed.manifest;
    for desc in std::iter::once(&m.config).chain(&m.layers) {
        match reg.blobs.head(&desc.digest).await? {
            None => {
                return Err(RegistryError::new(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!(
                        "the manifest refers to blob {} which was not uploaded: push its blobs first",
                        desc.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": desc.digest.to_string() })));
            }
            Some(info) if info.size != desc.size => {
                return Err(RegistryError::manifest_invalid(format!(
                    "the manifest says blob {} has {} bytes, the stored blob has {}",
                    desc.digest, desc.size, info.size
                )));
            }
            Some(_) => {}
        }
    }
    // Hostile or broken layers are refused now, with the reason, not later on a host.
    for l in &m.layers {
        reg.verify_layer(&l.digest, &l.media_type).await?;
    }
    let config_bytes = read_small_blob(&reg, &m.config.digest, MAX_CONFIG_BYTES)
        .await?
        .ok_or_else(|| RegistryError::blob_unknown(m.config.digest.as_str()))?;
    let config = ImageConfig::parse(&config_bytes)?;
    if !config.os.is_empty() && config.os != "linux" {
        return Err(RegistryError::unsupported(format!(
            "the image is for os {:?}: Slipway runs linux images",
            config.os
        )));
    }

    reg.store_manifest_bytes(&bytes, &digest).await?;
    reg.store
        .put_registry_manifest(app.id, digest.as_str(), &parsed.media_type)
        .await?;
    let tag = match &reference {
        Reference::Tag(t) => {
            reg.store
                .set_registry_tag(app.id, t, digest.as_str())
                .await?;
            Some(t.clone())
        }
        Reference::Digest(_) => None,
    };
    reg.count_manifest();
    let no_deploy = q
        .get("deploy")
        .is_some_and(|v| v == "false" || v == "0" || v == "no")
        || tag
            .as_deref()
            .is_some_and(|t| t.starts_with(NO_DEPLOY_TAG_PREFIX));
    let outcome = deploy::create(
        &reg.store,
        &app,
        &parsed,
        &digest,
        &config,
        tag.as_deref(),
        !no_deploy,
    )
    .await?;
    tracing::info!(app = %app.name, %digest, release = ?outcome.release, "registry: image pushed");
    Ok(created(&name, &digest, &outcome))
}

fn created(name: &str, digest: &Digest, outcome: &DeployOutcome) -> Response {
    let mut resp = (StatusCode::CREATED, axum::Json(outcome)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/manifests/{digest}")).expect("ASCII"),
    );
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest.as_str()).expect("ASCII"),
    );
    h.insert(
        "Slipway-Artifact",
        HeaderValue::from_str(&outcome.artifact.to_string()).expect("ASCII"),
    );
    if let Some(r) = outcome.release {
        h.insert(
            "Slipway-Release",
            HeaderValue::from_str(&r.to_string()).expect("ASCII"),
        );
    }
    resp
}

impl Registry {
    async fn store_manifest_bytes(&self, bytes: &[u8], digest: &Digest) -> Result<()> {
        let body: slipway_blobstore::Body = Box::new(std::io::Cursor::new(bytes.to_vec()));
        self.blobs.put(body, Some(digest)).await?;
        Ok(())
    }

    /// The digest and media type of `reference` in `name`'s repository.
    async fn resolve_manifest(&self, name: &str, reference: &str) -> Result<(Digest, String)> {
        let app = self.app(name).await?;
        let digest = match parse_reference(reference)? {
            Reference::Digest(d) => d,
            Reference::Tag(t) => {
                let d = self
                    .store
                    .registry_tag(app.id, &t)
                    .await?
                    .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
                parse_digest(&d)?
            }
        };
        let media_type = self
            .store
            .registry_manifest(app.id, digest.as_str())
            .await?
            .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
        Ok((digest, media_type))
    }
}

fn manifest_headers(resp: &mut Response, digest: &Digest, media_type: &str, len: usize) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media_type).unwrap_or(HeaderValue::from_static(spec::OCI_MANIFEST)),
    );
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest.as_str()).expect("ASCII"),
    );
}

async fn load(reg: &Registry, name: &str, reference: &str) -> Result<(Digest, String, Vec<u8>)> {
    let (digest, media_type) = reg.resolve_manifest(name, reference).await?;
    let bytes = read_small_blob(reg, &digest, MAX_MANIFEST_BYTES as u64)
        .await?
        .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
    Ok((digest, media_type, bytes))
}

pub async fn get(
    State(reg): State<Registry>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Response> {
    let (digest, media_type, bytes) = load(&reg, &name, &reference).await?;
    let len = bytes.len();
    let mut resp = bytes.into_response();
    manifest_headers(&mut resp, &digest, &media_type, len);
    Ok(resp)
}

pub async fn head(
    State(reg): State<Registry>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Response> {
    let (digest, media_type, bytes) = load(&reg, &name, &reference).await?;
    let mut resp = StatusCode::OK.into_response();
    manifest_headers(&mut resp, &digest, &media_type, bytes.len());
    Ok(resp)
}

pub async fn tags(State(reg): State<Registry>, Path(name): Path<String>) -> Result<Response> {
    let app = reg.app(&name).await?;
    let tags: Vec<String> = reg
        .store
        .list_registry_tags(app.id)
        .await?
        .into_iter()
        .filter(|t| valid_tag(t))
        .collect();
    Ok(axum::Json(serde_json::json!({ "name": name, "tags": tags })).into_response())
}
