//! The registry v2 endpoint (the push/pull subset of the OCI distribution spec): ping, blobs
//! (HEAD/GET, monolithic and chunked uploads, cross-repo mount), manifests (PUT/GET/HEAD by tag
//! and digest), tag list. The repository name is the app name.
//!
//! Nothing a push or pull needs lives on this controller's disk, so a push whose PATCH reaches
//! one controller and whose PUT reaches another works, and a pull from any controller sees
//! every tag. Blobs go straight into the blob store, verified against their digest. A chunked
//! upload in progress is a store row naming its chunks, each chunk a blob of its own (the row
//! goes when the upload completes, fails, or is left idle for [`UPLOAD_IDLE`]; its chunk blobs
//! are then named by nothing and garbage collection removes them after its grace period).
//! Tags and the manifests each app received are store rows keyed by the app's id (they go with
//! the app, so a re-created app starts empty); manifest bytes are blobs. The only local state
//! is a cache of which layers were already verified (`<dir>/verified`).

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
use slipway_store::{MAX_UPLOAD_CHUNKS, RegistryUpload, Store, StoreError};
use slipway_types::{App, Id};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;

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
    /// Opens the registry's directory (its cache of verified layers; creating it).
    pub fn open(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        dir: impl Into<PathBuf>,
    ) -> std::io::Result<Registry> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Registry {
            store,
            blobs,
            dir,
            counters: Default::default(),
        })
    }

    /// Removes uploads idle for `idle` or longer (of every controller: the state is shared);
    /// returns how many.
    pub async fn clean_uploads(&self, idle: Duration) -> Result<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let before = now.saturating_sub(idle.as_secs()) as i64;
        Ok(self.store.delete_idle_registry_uploads(before).await?)
    }

    /// Moves what an older version kept in files (`<dir>/repos/<app id>/{tags,manifests}/`)
    /// into the store, then removes those files and `<dir>/uploads` (uploads in progress are
    /// not carried over: their clients start again). Apps deleted meanwhile are skipped; a
    /// failure leaves the files for the next start. Returns the tags imported.
    pub async fn import_legacy_files(&self) -> Result<usize> {
        let repos = self.dir.join("repos");
        let mut tags = 0;
        let apps = match std::fs::read_dir(&repos) {
            Ok(rd) => rd.flatten().collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => {
                return Err(RegistryError::internal(format!(
                    "cannot read {repos:?}: {e}"
                )));
            }
        };
        for entry in apps {
            let Some(app_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Id>().ok())
            else {
                continue;
            };
            if let Err(StoreError::NotFound(_)) = self.store.get_app(app_id).await {
                continue;
            }
            let files = |sub: &str| -> Vec<(String, String)> {
                let Ok(rd) = std::fs::read_dir(entry.path().join(sub)) else {
                    return vec![];
                };
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        // Small files we wrote; anything else is not ours.
                        if e.metadata().ok()?.len() > 4096 {
                            return None;
                        }
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((name, text.trim().to_string()))
                    })
                    .collect()
            };
            for (hex, media_type) in files("manifests") {
                if let Ok(d) = Digest::from_hex(&hex) {
                    self.store
                        .put_registry_manifest(app_id, d.as_str(), &media_type)
                        .await?;
                }
            }
            for (tag, digest) in files("tags") {
                if crate::manifests::valid_tag(&tag) && digest.parse::<Digest>().is_ok() {
                    self.store.set_registry_tag(app_id, &tag, &digest).await?;
                    tags += 1;
                }
            }
        }
        for old in [repos, self.dir.join("uploads")] {
            match std::fs::remove_dir_all(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("registry: cannot remove {old:?}: {e}"),
            }
        }
        Ok(tags)
    }

    /// Imports an older version's files ([`Self::import_legacy_files`]), then cleans abandoned
    /// uploads now and every few minutes, for as long as the process runs.
    pub fn spawn_cleaner(&self) {
        let reg = self.clone();
        tokio::spawn(async move {
            match reg.import_legacy_files().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("registry: moved {n} tag(s) from files into the store"),
                Err(e) => {
                    tracing::warn!("registry: cannot move tags from files into the store: {e:?}")
                }
            }
            loop {
                match reg.clean_uploads(UPLOAD_IDLE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("registry: removed {n} abandoned upload(s)"),
                    Err(e) => tracing::warn!("registry: cannot remove abandoned uploads: {e:?}"),
                }
                tokio::time::sleep(Duration::from_secs(300)).await;
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

    /// Upload `id` of `app`'s repository (an upload of another app's is unknown here).
    async fn upload(&self, app: &App, id: &str) -> Result<RegistryUpload> {
        let id: Id = id.parse().map_err(|_| RegistryError::upload_unknown())?;
        match self.store.registry_upload(id).await? {
            Some(u) if u.app_id == app.id => Ok(u),
            _ => Err(RegistryError::upload_unknown()),
        }
    }

    /// Streams `body` into the blob store, verified against `digest`.
    async fn store_blob(&self, body: slipway_blobstore::Body, digest: &Digest) -> Result<u64> {
        let existed = self.blobs.head(digest).await?.is_some();
        self.store_blob_new(body, digest, existed).await
    }

    /// [`Self::store_blob`], counted as uploaded unless `existed`.
    async fn store_blob_new(
        &self,
        body: slipway_blobstore::Body,
        digest: &Digest,
        existed: bool,
    ) -> Result<u64> {
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
    let app = reg.app(&name).await?;
    let id = Id::new_v4();
    reg.store.create_registry_upload(id, app.id).await?;
    Ok(upload_accepted(&name, &id.to_string(), 0))
}

async fn upload_status(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    let app = reg.app(&name).await?;
    let upload = reg.upload(&app, &id).await?;
    let mut resp = upload_accepted(&name, &id, upload.size);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

fn range_error(range: &str, size: u64) -> RegistryError {
    RegistryError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
        format!("Content-Range {range:?} does not continue the upload, which has {size} bytes"),
    )
}

/// Appends `body` to the upload as a chunk blob of its own. A `Content-Range: START-END` must
/// start where the upload stands, else 416 with the current range (the client resumes from
/// there); so must the upload when the chunk is recorded (another request may have appended).
async fn append(
    reg: &Registry,
    upload: &RegistryUpload,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64> {
    let size = upload.size;
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
            return Err(range_error(range, size));
        }
    }
    if upload.chunks.len() as u64 >= MAX_UPLOAD_CHUNKS {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!(
                "the upload has {} chunks, the most one upload may have: send larger chunks",
                upload.chunks.len()
            ),
        ));
    }
    // Peek: an empty body adds nothing (and no chunk row).
    let mut reader = body_reader(body);
    let mut first = vec![0u8; 64 * 1024];
    let n = reader
        .read(&mut first)
        .await
        .map_err(|e| interrupted(size, e))?;
    if n == 0 {
        return Ok(size);
    }
    first.truncate(n);
    let chained: slipway_blobstore::Body = Box::new(std::io::Cursor::new(first).chain(reader));
    let info = reg.blobs.put(chained, None).await.map_err(|e| match e {
        slipway_blobstore::BlobError::Io(e) => interrupted(size, e),
        e => e.into(),
    })?;
    match reg
        .store
        .append_registry_upload(upload.id, size, info.digest.as_str(), info.size)
        .await
    {
        Ok(size) => Ok(size),
        Err(StoreError::NotFound(_)) => Err(RegistryError::upload_unknown()),
        Err(StoreError::Conflict(m)) => Err(RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            m,
        )),
        Err(e) => Err(e.into()),
    }
}

fn interrupted(size: u64, e: std::io::Error) -> RegistryError {
    RegistryError::new(
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
        format!("upload interrupted after the upload had {size} bytes: {e}"),
    )
}

/// The upload's chunks read one after the other, as one body.
fn concat(blobs: Arc<dyn BlobStore>, chunks: Vec<String>) -> slipway_blobstore::Body {
    type State = (
        Arc<dyn BlobStore>,
        std::vec::IntoIter<String>,
        Option<slipway_blobstore::Body>,
    );
    let start: State = (blobs, chunks.into_iter(), None);
    let stream = futures_util::stream::try_unfold(start, |(blobs, mut rest, mut cur)| async move {
        loop {
            if let Some(r) = cur.as_mut() {
                let mut buf = vec![0u8; 256 * 1024];
                let n = r.read(&mut buf).await?;
                if n > 0 {
                    buf.truncate(n);
                    return Ok(Some((bytes::Bytes::from(buf), (blobs, rest, cur))));
                }
            }
            // The current chunk is done (or none was open): the next one.
            let Some(d) = rest.next() else {
                return Ok(None);
            };
            let missing = || std::io::Error::other(format!("chunk {d} of the upload is gone"));
            let d: Digest = d.parse().map_err(|_| missing())?;
            match blobs.get(&d).await {
                Ok(Some((_, r))) => cur = Some(r),
                Ok(None) => return Err(missing()),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

async fn patch_upload(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let app = reg.app(&name).await?;
    let upload = reg.upload(&app, &id).await?;
    let (parts, body) = req.into_parts();
    let size = append(&reg, &upload, &parts.headers, body).await?;
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
    let app = reg.app(&name).await?;
    let upload = reg.upload(&app, &id).await?;
    let digest = parse_digest(q.get("digest").map(String::as_str).unwrap_or(""))?;
    let (parts, body) = req.into_parts();
    let size = append(&reg, &upload, &parts.headers, body).await?;
    let upload = reg.upload(&app, &id).await?;
    // A layer sent in one PATCH is its own only chunk: it was not here before the upload.
    let existed = reg.blobs.head(&digest).await?.is_some()
        && !upload.chunks.iter().any(|c| c == digest.as_str());
    let whole = concat(reg.blobs.clone(), upload.chunks);
    let stored = reg.store_blob_new(whole, &digest, existed).await;
    if let Err(e) = reg.store.delete_registry_upload(upload.id).await {
        tracing::warn!(upload = %upload.id, "registry: cannot delete a finished upload: {e}");
    }
    stored?;
    crate::metrics::upload_done(size);
    Ok(blob_created(&name, &digest))
}

async fn cancel_upload(
    State(reg): State<Registry>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    let app = reg.app(&name).await?;
    let upload = reg.upload(&app, &id).await?;
    reg.store.delete_registry_upload(upload.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
