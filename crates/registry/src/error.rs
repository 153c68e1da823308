//! Errors in the registry's JSON format (`{"errors":[{"code","message","detail"}]}`), which
//! Docker and skopeo print to their users, so the message says what failed and what to do.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use slipway_blobstore::BlobError;

#[derive(Debug, Clone)]
pub struct RegistryError {
    pub status: StatusCode,
    /// One of the distribution spec's codes (`BLOB_UNKNOWN`, `DIGEST_INVALID`, …).
    pub code: &'static str,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    pub fn manifest_invalid(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", m)
    }
    pub fn digest_invalid(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", m)
    }
    pub fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "repository {name:?} is not an app: the repository name is the app name; create it \
                 first with `slipway create {name}`"
            ),
        )
    }
    pub fn blob_unknown(d: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {d} is not in the registry"),
        )
        .with_detail(serde_json::json!({ "digest": d }))
    }
    pub fn upload_unknown() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "no such upload: it finished, was cancelled, or was abandoned for too long; start again",
        )
    }
    pub fn manifest_unknown(reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("no manifest {reference:?} in this repository"),
        )
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", m)
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RegistryError {}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match &e {
            BlobError::DigestMismatch { expected, actual } => {
                RegistryError::digest_invalid(e.to_string()).with_detail(serde_json::json!({
                    "expected": expected.to_string(), "actual": actual.to_string()
                }))
            }
            BlobError::InvalidDigest(_) => RegistryError::digest_invalid(e.to_string()),
            BlobError::NotFound(d) => RegistryError::blob_unknown(d.as_str()),
            _ => RegistryError::internal(e.to_string()),
        }
    }
}

/// A store error answers the status the controller's API gives it
/// ([`slipway_api_error::status_of`]: an unreachable database is a 503, not a 500) with the
/// API's message; only the code is the distribution spec's.
impl From<slipway_store::StoreError> for RegistryError {
    fn from(e: slipway_store::StoreError) -> Self {
        use slipway_store::StoreError as E;
        let status = slipway_api_error::status_of(&e);
        let code = match &e {
            E::NotFound(_) => "NAME_UNKNOWN",
            E::Conflict(_) => "DENIED",
            E::Invalid(_) => "MANIFEST_INVALID",
            // Docker's own registry answers 503 with this code.
            E::Unavailable(_) => "UNAVAILABLE",
            E::Database(_) => "UNKNOWN",
        };
        let api = slipway_api_error::ApiErr::from(e);
        let mut err = Self::new(status, code, api.0.message);
        if let Some(field) = api.0.field {
            err = err.with_detail(serde_json::json!({ "field": field }));
        }
        err
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "registry: {}", self.message);
        }
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let mut resp = (
            self.status,
            axum::Json(serde_json::json!({ "errors": [err] })),
        )
            .into_response();
        resp.headers_mut().insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        resp
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
