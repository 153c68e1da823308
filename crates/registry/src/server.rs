//! The registry v2 endpoint (the push/pull subset of the OCI distribution spec): ping, blobs
//! (HEAD/GET, monolithic and chunked uploads, cross-repo mount), manifests (PUT/GET/HEAD by tag
//! and digest), tag list. The repository name is the app name.
//!
//! Blobs go straight into the blob store, verified against their digest; an upload in progress
//! is a file under `<dir>/uploads/` (removed when it completes, fails, or is left idle for
//! [`UPLOAD_IDLE`]). Tags and the manifests each app received are small files under
//! `<dir>/repos/<app id>/`: keyed by the app's id, so a deleted and re-created app starts empty.

use crate::error::{RegistryError, Result};
use crate::manifests;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use slipway_blobstore::{BlobStore, Digest};
use slipway_store::Store;
use slipway_types::App;
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// An upload nobody touched for this long is abandoned and removed.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(3600);

pub const API_VERSION: &str = "registry/2.0";

/// Counters of what the registry stored, for tests and benchmarks (`GET /v2/_slipway/stats`):
/// a blob a client already had on the server is never counted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize, Clone, PartialEq, Eq)]
pub struct Stats {
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub manifests_pushed: u64,
}

#[derive(Default)]
struct Counters {
    blobs: AtomicU64,
    bytes: AtomicU64,
    manifests: AtomicU64,
}

/// What the registry needs: the controller's state, the blob store and a directory of its own.
#[derive(Clone)]
pub struct Registry {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) dir: PathBuf,
    counters: Arc<Counters>,
}

impl Registry {
    /// Opens the registry's directory (creating it) and removes abandoned uploads.
    pub fn open(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        dir: impl Into<PathBuf>,
    ) -> std::io::Result<Registry> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("uploads"))?;
        std::fs::create_dir_all(dir.join("repos"))?;
        let reg = Registry {
            store,
            blobs,
            dir,
            counters: Default::default(),
        };
        reg.clean_uploads(UPLOAD_IDLE);
        Ok(reg)
    }

    /// Removes uploads idle for longer than `idle`; returns how many.
    pub fn clean_uploads(&self, idle: Duration) -> usize {
        let mut n = 0;
        let Ok(entries) = std::fs::read_dir(self.dir.join("uploads")) else {
            return 0;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= idle);
            if old && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Cleans abandoned uploads every few minutes, for as long as the process runs.
    pub fn spawn_cleaner(&self) {
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                let n = reg.clean_uploads(UPLOAD_IDLE);
                if n > 0 {
                    tracing::info!("registry: removed {n} abandoned upload(s)");
                }
            }
        });
    }

    pub fn stats(&self) -> Stats {
        Stats {
            blobs_uploaded: self.counters.blobs.load(Ordering::Relaxed),
            bytes_uploaded: self.counters.bytes.load(Ordering::Relaxed),
            manifests_pushed: self.counters.manifests.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_manifest(&self) {
        self.counters.manifests.fetch_add(1, Ordering::Relaxed);
    }

    /// The app a repository name stands for.
    pub(crate) async fn app(&self, name: &str) -> Result<App> {
        if slipway_types::validate_app_name(name).is_err() {
            return Err(RegistryError::name_unknown(name));
        }
        match self.store.find_app(name).await {
            Ok(app) => Ok(app),
            Err(slipway_store::StoreError::NotFound(_)) => Err(RegistryError::name_unknown(name)),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn repo_dir(&self, app: &App) -> PathBuf {
        self.dir.join("repos").join(app.id.to_string())
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        let id = uuid::Uuid::parse_str(id).map_err(|_| RegistryError::upload_unknown())?;
        Ok(self.dir.join("uploads").join(id.to_string()))
    }

    /// Streams `body` into the blob store, verified against `digest`.
    async fn store_blob(&self, body: slipway_blobstore::Body, digest: &Digest) -> Result<u64> {
        let existed = self.blobs.head(digest).await?.is_some();
        let info = self.blobs.put(body, Some(digest)).await?;
        if !existed {
            self.counters.blobs.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(info.size, Ordering::Relaxed);
            tracing::info!(digest = %digest, size = info.size, "registry: stored blob");
        }
        Ok(info.size)
    }
}

/// The registry's routes, to merge into the controller's router (behind its API key).
pub fn router(reg: Registry) -> Router {
    Router::new()
        .route("/v2", get(ping))
        .route("/v2/", get(ping))
        .route("/v2/_slipway/stats", get(stats))
        .route("/v2/{name}/tags/list", get(manifests::tags))
        .route(
            "/v2/{name}/manifests/{reference}",
            get(manifests::get)
                .head(manifests::head)
                .put(manifests::put),
        )
        .route("/v2/{name}/blobs/{digest}", get(get_blob).head(head_blob))
        .route("/v2/{name}/blobs/uploads", post(start_upload))
        .route("/v2/{name}/blobs/uploads/", post(start_upload))
        .route(
            "/v2/{name}/blobs/uploads/{id}",
            get(upload_status)
                .patch(patch_upload)
                .put(finish_upload)
                .delete(cancel_upload),
        )
        // Layers are as large as they are: the only bound is the disk. Manifests are read with
        // their own limit.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(version_header))
        .with_state(reg)
}

/// Wraps the whole server (the controller's auth answers before the registry's routes run) so
/// that every `/v2` response says `Docker-Distribution-API-Version: registry/2.0`, the 401 of a
/// ping without credentials included: Docker reads the header there to know it talks to a v2
/// registry before it sends Basic credentials.
pub fn with_api_version(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |req: Request, next: axum::middleware::Next| async move {
            let v2 = req.uri().path() == "/v2" || req.uri().path().starts_with("/v2/");
            let resp = next.run(req).await;
            if v2 { version_header(resp).await } else { resp }
        },
    ))
}

async fn version_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

async fn ping() -> impl IntoResponse {
    axum::Json(serde_json::json!({}))
}

async fn stats(State(reg): State<Registry>) -> impl IntoResponse {
    axum::Json(reg.stats())
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|_| {
        RegistryError::digest_invalid(format!(
            "invalid digest {:?}: expected sha256:<64 lowercase hex digits>",
            s.chars().take(100).collect::<String>()
        ))
    })
}

/// A request body as a reader for the blob store.
pub(crate) fn body_reader(body: Body) -> slipway_blobstore::Body {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

fn blob_headers(h: &mut HeaderMap, digest: &Digest, size: u64) {
    h.insert(header::CONTENT_LENGTH, size.into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest.as_str()).expect("digest is ASCII"),
    );
}

async fn head_blob(
    State(reg): State<Registry>,
    Path((name, digest)): Path<(String, String)>,
) -> Result<Response> {
    reg.app(&name).await?;
    let digest = parse_digest(&digest)?;
    let info = reg
        .blobs
        .head(&digest)
        .await?
        .ok_or_else(|| RegistryError::blob_unknown(digest.as_str()))?;
    let mut resp = StatusCode::OK.into_response();
    blob_headers(resp.headers_mut(), &digest, info.size);
    Ok(resp)
}

async fn get_blob(
    State(reg): State<Registry>,
    Path((name, digest)): Path<(String, String)>,
) -> Result<Response> {
    reg.app(&name).await?;
    let digest = parse_digest(&digest)?;
    let (info, reader) = reg
        .blobs
        .get(&digest)
        .await?
        .ok_or_else(|| RegistryError::blob_unknown(digest.as_str()))?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response();
    blob_headers(resp.headers_mut(), &digest, info.size);
    Ok(resp)
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/blobs/{digest}")).expect("ASCII"),
    );
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest.as_str()).expect("ASCII"),
    );
    h.insert(header::CONTENT_LENGTH, 0.into());
    resp
}

/// 202 with where to send the rest and how much arrived (`Range: 0-<last byte>`).
fn upload_accepted(name: &str, id: &str, size: u64) -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")).expect("ASCII"),
    );
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("ASCII"),
    );
    h.insert(
        "Docker-Upload-UUID",
        HeaderValue::from_str(id).expect("ASCII"),
    );
    h.insert(header::CONTENT_LENGTH, 0.into());
    resp
}

/// `POST /v2/NAME/blobs/uploads/`: `?digest=` uploads the body in one go; `?mount=&from=`
/// answers 201 if the blob is already here (blobs are shared by all apps) and otherwise starts
/// an upload, as the spec allows; with neither, starts a chunked upload.
async fn start_upload(
    State(reg): State<Registry>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Response> {
    reg.app(&name).await?;
    if let Some(d) = q.get("digest") {
        let digest = parse_digest(d)?;
        reg.store_blob(body_reader(req.into_body()), &digest)
            .await?;
        return Ok(blob_created(&name, &digest));
    }
    if let Some(d) = q.get("mount") {
        let digest = parse_digest(d)?;
        if reg.blobs.head(&digest).await?.is_some() {
            return Ok(blob_created(&name, &digest));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    tokio::fs::File::create(reg.upload_path(&id)?)
        .await
        .map_err(|e| RegistryError::internal(format!("cannot start an upload: {e}")))?;
    Ok(upload_accepted(&name, &id, 0))
}

async fn upload_len(path: &FsPath) -> Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::upload_unknown()),
        Err(e) => Err(RegistryError::internal(format!("upload state: {e}"))),
    }
}

async fn upload_status(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    reg.app(&name).await?;
    let size = upload_len(&reg.upload_path(&id)?).await?;
    let mut resp = upload_accepted(&name, &id, size);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// Appends `body` to the upload file. A `Content-Range: START-END` must start where the
/// upload stands, else 416 with the current range (the client resumes from there).
async fn append(path: &FsPath, headers: &HeaderMap, body: Body) -> Result<u64> {
    let size = upload_len(path).await?;
    if let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let start = range
            .trim()
            .trim_start_matches("bytes ")
            .split('-')
            .next()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(size) {
            return Err(RegistryError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!(
                    "Content-Range {range:?} does not continue the upload, which has {size} bytes"
                ),
            ));
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(|_| RegistryError::upload_unknown())?;
    let mut reader = body_reader(body);
    let n = tokio::io::copy(&mut reader, &mut file).await.map_err(|e| {
        RegistryError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("upload interrupted after the upload had {size} bytes: {e}"),
        )
    })?;
    file.flush()
        .await
        .map_err(|e| RegistryError::internal(format!("upload write: {e}")))?;
    Ok(size + n)
}

async fn patch_upload(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    reg.app(&name).await?;
    let path = reg.upload_path(&id)?;
    let (parts, body) = req.into_parts();
    let size = append(&path, &parts.headers, body).await?;
    Ok(upload_accepted(&name, &id, size))
}

/// `PUT …/uploads/ID?digest=`: the last chunk (maybe empty), then the whole upload goes into
/// the blob store, verified. The upload is gone afterwards, stored or not.
async fn finish_upload(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Response> {
    reg.app(&name).await?;
    let path = reg.upload_path(&id)?;
    let digest = parse_digest(q.get("digest").map(String::as_str).unwrap_or(""))?;
    let (parts, body) = req.into_parts();
    append(&path, &parts.headers, body).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| RegistryError::upload_unknown())?;
    let stored = reg.store_blob(Box::new(file), &digest).await;
    let _ = tokio::fs::remove_file(&path).await;
    stored?;
    Ok(blob_created(&name, &digest))
}

async fn cancel_upload(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    reg.app(&name).await?;
    let path = reg.upload_path(&id)?;
    upload_len(&path).await?;
    let _ = tokio::fs::remove_file(&path).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
