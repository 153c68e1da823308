//! Errors as responses: the status comes from the code, the body is always `ApiError` JSON.

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
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = ?self.0.code, "{}", self.0.message);
        }
        (status, axum::Json(self.0)).into_response()
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiErr::new(ErrorCode::NotFound, m),
            StoreError::Conflict(m) => ApiErr::new(ErrorCode::Conflict, m),
            StoreError::Invalid(v) => ApiErr(v.into()),
            StoreError::Unavailable(m) => ApiErr::new(ErrorCode::Unavailable, m),
            StoreError::Database(m) => {
                ApiErr::new(ErrorCode::Internal, format!("internal error: {m}"))
            }
        }
    }
}

impl From<ValidationError> for ApiErr {
    fn from(e: ValidationError) -> Self {
        ApiErr(e.into())
    }
}
