//! The API's errors, in users' words, mapped to HTTP once.
//!
//! Every HTTP role answers a store or validation error through here, so the same failure has
//! the same status whichever port or path it comes from: the controller's API and the log
//! aggregator answer [`ApiErr`] (body `{"code", "message", "field"?}`), the registry builds its
//! v2 wire format and the git receiver its plain-text answers from [`status_of`] and the same
//! messages. The status comes from the [`ErrorCode`], never chosen per call site.

#![forbid(unsafe_code)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_store::StoreError;
use slipway_types::{ApiError, ErrorCode, ValidationError};

/// An `ApiError` on its way out as a response.
#[derive(Debug)]
pub struct ApiErr(pub ApiError);

pub type ApiResult<T> = Result<T, ApiErr>;

impl ApiErr {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErr(ApiError::new(code, message))
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        status_of_code(self.0.code)
    }
}

impl std::fmt::Display for ApiErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ApiErr {}

fn status_of_code(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The API's code for a store error: what was asked for is missing (`not_found`), clashes with
/// what is there (`conflict`) or breaks a rule (`validation_error`); the database is down
/// (`unavailable`, worth retrying) or failed otherwise (`internal`).
pub fn code_of(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::Conflict(_) => ErrorCode::Conflict,
        StoreError::Invalid(_) => ErrorCode::ValidationError,
        StoreError::Unavailable(_) => ErrorCode::Unavailable,
        StoreError::Database(_) => ErrorCode::Internal,
    }
}

/// The HTTP status every role answers a store error with.
pub fn status_of(e: &StoreError) -> StatusCode {
    status_of_code(code_of(e))
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = ?self.0.code, "{}", self.0.message);
        }
        (status, axum::Json(self.0)).into_response()
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        let code = code_of(&e);
        match e {
            StoreError::Invalid(v) => ApiErr(v.into()),
            StoreError::NotFound(m) | StoreError::Conflict(m) | StoreError::Unavailable(m) => {
                ApiErr::new(code, m)
            }
            StoreError::Database(m) => ApiErr::new(code, format!("internal error: {m}")),
        }
    }
}

impl From<ValidationError> for ApiErr {
    fn from(e: ValidationError) -> Self {
        ApiErr(e.into())
    }
}

impl From<ApiError> for ApiErr {
    fn from(e: ApiError) -> Self {
        ApiErr(e)
    }
}

/// Largest error body of axum's own rejections that is carried into the JSON message.
const MAX_REJECTION_TEXT: usize = 4096;

/// Turns every error response that is not JSON — axum's own rejections: a path parameter that is
/// not UTF-8 or does not parse, a malformed query, a missing extension — into the API's
/// `{"code", "message"}` shape, keeping its status. One layer over the whole API, so no handler
/// (and no extractor a handler adds later) can answer bad input in plain text.
pub async fn json_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::CONTENT_TYPE;
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), MAX_REJECTION_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::ValidationError,
        503 => ErrorCode::Unavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_string()
    } else {
        text
    };
    if status.is_server_error() {
        tracing::error!("{message}");
    }
    (status, axum::Json(ApiError::new(code, message))).into_response()
}

#[cfg(test)]
mod tests;
