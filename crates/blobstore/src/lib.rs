//! Slipway's blob store: immutable, content-addressed blobs (slug tarballs, image layers and
//! configs) named by their SHA-256 digest.
//!
//! Every backend implements [`BlobStore`] and passes the one conformance suite
//! (`tests/it`). [`FsBlobStore`] keeps blobs on the local filesystem (embedded mode);
//! [`HttpBlobStore`] is the client of [`http::router`], so a host agent on another machine
//! fetches layers from the server's store; [`PgBlobStore`] keeps them in PostgreSQL, shared by
//! every controller of a cluster. Blobs are verified on the way in: a body whose
//! digest differs from the one the caller expected is never stored, so a digest names exactly
//! one content everywhere.

#![forbid(unsafe_code)]

mod digest;
mod fs;
pub mod gc;
pub mod http;
mod http_client;
mod pg;

pub use digest::{Digest, Hasher};
pub use fs::FsBlobStore;
pub use http_client::HttpBlobStore;
pub use pg::PgBlobStore;

use std::time::SystemTime;
use tokio::io::AsyncRead;

/// A body being read from or written to a store. Bodies are streamed, never buffered whole:
/// a layer may be gigabytes.
pub type Body = Box<dyn AsyncRead + Send + Unpin>;

/// What a store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// When the blob was stored, if the backend knows: garbage collection spares blobs younger
    /// than its grace period, so an upload whose artifact is not created yet survives.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "unix_secs")]
    pub modified: Option<SystemTime>,
}

impl BlobInfo {
    pub fn new(digest: Digest, size: u64) -> Self {
        BlobInfo {
            digest,
            size,
            modified: None,
        }
    }
}

/// Why a blob operation failed. Messages say what failed and why.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is not in the blob store")]
    NotFound(Digest),
    #[error("digest mismatch: expected {expected}, the content is {actual}; nothing was stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest(String),
    #[error("blob store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("blob store HTTP error: {0}")]
    Http(String),
}

/// A content-addressed blob store.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Streams `body` in; verifies `expected` if given (mismatch → [`BlobError::DigestMismatch`],
    /// nothing stored); idempotent; returns the digest and size.
    async fn put(&self, body: Body, expected: Option<&Digest>) -> Result<BlobInfo, BlobError>;
    /// The blob and a reader of its content, or `None` if absent.
    async fn get(&self, d: &Digest) -> Result<Option<(BlobInfo, Body)>, BlobError>;
    async fn head(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError>;
    /// Whether the blob existed.
    async fn delete(&self, d: &Digest) -> Result<bool, BlobError>;
    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError>;
}

mod unix_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        Ok(v.filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| UNIX_EPOCH + Duration::from_secs_f64(v)))
    }
}
