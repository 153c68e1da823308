//! The blob store over HTTP (served on the controller's port, behind its API key):
//!
//! | method | path | |
//! |---|---|---|
//! | PUT | `/blobs/{digest}` | streams the body in, verified against `{digest}` → `BlobInfo` (201, or 200 if it was there) |
//! | POST | `/blobs` | streams the body in, digest computed by the server → `BlobInfo` (201/200) |
//! | GET | `/blobs/{digest}` | the content; `Content-Length`, `Docker-Content-Digest` |
//! | HEAD | `/blobs/{digest}` | the same headers, no body |
//! | DELETE | `/blobs/{digest}` | → `{}`; 404 if absent; 409 while an artifact names it ([`router_guarded`]) |
//! | GET | `/blobs` | → `[BlobInfo]` |
//!
//! Bodies are streamed both ways and have no size limit beyond the disk. A malformed digest is a
//! 400, a body that does not match its digest a 422 (`digest_mismatch`, nothing stored), an absent
//! blob a 404. Errors are `{"code","message"}` like the controller's. [`crate::HttpBlobStore`] is
//! the client.

use crate::{BlobError, BlobInfo, BlobStore, Digest};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use slipway_types::Artifact;
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

/// The digest header, as Docker's registry API names it.
pub const DIGEST_HEADER: &str = "docker-content-digest";

/// Lists every artifact (the controller's store), to tell which blobs are in use.
pub type ArtifactLister =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<Artifact>, String>> + Send + Sync>;

/// Lists the blobs other state names (registry manifests, tags and uploads, stored git
/// repositories), which are in use as what artifacts name is.
pub type KeptLister =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    store: Arc<dyn BlobStore>,
    artifacts: Option<ArtifactLister>,
    kept: Option<KeptLister>,
}

/// The HTTP API over any blob store (normally an [`crate::FsBlobStore`]), with no knowledge of
/// artifacts: a delete deletes. For a host's or a test's store; the controller's is
/// [`router_guarded`].
pub fn router(store: Arc<dyn BlobStore>) -> Router {
    routes(Shared {
        store,
        artifacts: None,
        kept: None,
    })
}

/// [`router`], refusing (409) to delete a blob an artifact names — as `DELETE /artifacts/:id`
/// refuses while a release names the artifact — so a current slug or an image layer cannot be
/// pulled from under a release. Which blobs an artifact names is the garbage collector's rule
/// ([`crate::gc::artifact_digests`]).
pub fn router_guarded(store: Arc<dyn BlobStore>, artifacts: ArtifactLister) -> Router {
    routes(Shared {
        store,
        artifacts: Some(artifacts),
        kept: None,
    })
}

/// [`router_guarded`], also refusing (409) to delete a blob `kept` lists (as garbage
/// collection keeps them: [`crate::gc::collect_keeping`]).
pub fn router_guarded_keeping(
    store: Arc<dyn BlobStore>,
    artifacts: ArtifactLister,
    kept: KeptLister,
) -> Router {
    routes(Shared {
        store,
        artifacts: Some(artifacts),
        kept: Some(kept),
    })
}

fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/blobs", get(list).post(post))
        .route(
            "/blobs/{digest}",
            get(get_blob).head(head_blob).put(put).delete(delete),
        )
        // Blobs are layers and slugs: the only bound is the disk.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

/// The JSON error response for a blob error.
pub fn error_response(e: &BlobError) -> Response {
    let (status, code) = match e {
        BlobError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        BlobError::DigestMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch"),
        BlobError::InvalidDigest(_) => (StatusCode::BAD_REQUEST, "invalid_digest"),
        BlobError::Io(_) | BlobError::Http(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "blob_store_error")
        }
    };
    (
        status,
        Json(serde_json::json!({"code": code, "message": e.to_string()})),
    )
        .into_response()
}

fn parse(d: &str) -> Result<Digest, Box<Response>> {
    d.parse().map_err(|e| Box::new(error_response(&e)))
}

fn body_reader(body: Body) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(StreamReader::new(
        body.into_data_stream().map_err(std::io::Error::other),
    ))
}

fn info_headers(info: &BlobInfo, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Ok(v) = HeaderValue::from_str(info.digest.as_str()) {
        h.insert(DIGEST_HEADER, v.clone());
        h.insert(header::ETAG, v);
    }
    resp
}

async fn stored(s: &Arc<dyn BlobStore>, body: Body, expected: Option<&Digest>) -> Response {
    // Already there: drain the body (so the client's upload completes cleanly) and answer 200.
    if let Some(d) = expected {
        match s.head(d).await {
            Ok(Some(_)) => {
                let mut r = body_reader(body);
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
                // The store's own idempotent put (it reads nothing for a blob it has, and
                // marks it as used again for garbage collection).
                return match s.put(Box::new(tokio::io::empty()), Some(d)).await {
                    Ok(info) => (StatusCode::OK, Json(info)).into_response(),
                    Err(e) => error_response(&e),
                };
            }
            Ok(None) => {}
            Err(e) => return error_response(&e),
        }
    }
    match s.put(body_reader(body), expected).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => {
            if !matches!(e, BlobError::DigestMismatch { .. }) {
                tracing::warn!(error = %e, "blob upload failed");
            }
            error_response(&e)
        }
    }
}

async fn put(State(s): State<Shared>, Path(d): Path<String>, body: Body) -> Response {
    let d = match parse(&d) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    stored(&s.store, body, Some(&d)).await
}

async fn post(State(s): State<Shared>, body: Body) -> Response {
    stored(&s.store, body, None).await
}

async fn get_blob(State(s): State<Shared>, Path(d): Path<String>) -> Response {
    let d = match parse(&d) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match s.store.get(&d).await {
        Ok(Some((info, reader))) => {
            let resp = Response::new(Body::from_stream(ReaderStream::with_capacity(
                reader,
                256 * 1024,
            )));
            let mut resp = info_headers(&info, resp);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        Ok(None) => error_response(&BlobError::NotFound(d)),
        Err(e) => error_response(&e),
    }
}

async fn head_blob(State(s): State<Shared>, Path(d): Path<String>) -> Response {
    let d = match parse(&d) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match s.store.head(&d).await {
        Ok(Some(info)) => info_headers(&info, StatusCode::OK.into_response()),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn delete(State(s): State<Shared>, Path(d): Path<String>) -> Response {
    let d = match parse(&d) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    if let Some(list) = &s.artifacts {
        let artifacts = match list().await {
            Ok(a) => a,
            Err(e) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("cannot tell whether an artifact uses blob {d}, so it stays: {e}"),
                );
            }
        };
        if let Some(a) = artifacts
            .iter()
            .find(|a| crate::gc::artifact_digests(a).contains(&d))
        {
            return json_error(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "blob {d} is in use by {} artifact {}: delete the artifact first (DELETE /artifacts/{}; a release naming it must go before that)",
                    a.kind.as_str(),
                    a.id,
                    a.id
                ),
            );
        }
    }
    if let Some(list) = &s.kept {
        match list().await {
            Ok(kept) if kept.iter().any(|k| k == d.as_str()) => {
                return json_error(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "blob {d} is in use by a registry manifest, tag or upload, or a stored git repository: it stays"
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("cannot tell whether blob {d} is in use, so it stays: {e}"),
                );
            }
        }
    }
    match s.store.delete(&d).await {
        Ok(true) => Json(serde_json::json!({})).into_response(),
        Ok(false) => error_response(&BlobError::NotFound(d)),
        Err(e) => error_response(&e),
    }
}

async fn list(State(s): State<Shared>) -> Response {
    match s.store.list().await {
        Ok(l) => Json(l).into_response(),
        Err(e) => error_response(&e),
    }
}
