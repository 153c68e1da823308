//! Request parsing that answers in our error shape instead of axum's plain-text rejections.

use crate::error::ApiErr;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use slipway_types::{ErrorCode, Id};

/// A JSON request body. Malformed JSON is a 400; well-formed JSON of the wrong shape (unknown
/// field, wrong type, missing field) is a 422 naming the problem; over the size limit is a 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiErr;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
                return Err(ApiErr::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("expected a JSON body (Content-Type: application/json), got {ct:?}"),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner)
                if inner.body_text().contains("length limit") || e.status() == 413 =>
            {
                ApiErr::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "request body is larger than the limit of {} bytes",
                        crate::MAX_BODY_BYTES
                    ),
                )
            }
            other if other.status() == 413 => ApiErr::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than the limit of {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            ),
            other => ApiErr::new(
                ErrorCode::BadRequest,
                format!("cannot read request body: {}", other.body_text()),
            ),
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a request body, which must be a JSON object: every body the API takes is one. serde
/// reads a struct from an array too (`[]` is a struct with every field defaulted), which made
/// `PUT` formation with `[]` scale an app to 0 and `POST /apps` with `[]` create an app.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiErr> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiErr::new(
            ErrorCode::BadRequest,
            "request body is empty; expected JSON",
        ));
    };
    let kind = match first {
        b'{' => None,
        b'[' => Some("an array"),
        b'"' => Some("a string"),
        b'-' | b'0'..=b'9' => Some("a number"),
        b't' | b'f' => Some("a boolean"),
        b'n' => Some("null"),
        _ => None, // not JSON at all: serde's error below says where
    };
    if let Some(kind) = kind {
        // Malformed JSON is still a 400, whatever it starts with.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(ApiErr::new(
                ErrorCode::BadRequest,
                format!("malformed JSON: {e}"),
            ));
        }
        return Err(ApiErr::new(
            ErrorCode::ValidationError,
            format!("invalid request: the body must be a JSON object ({{…}}), not {kind}"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                ApiErr::new(ErrorCode::ValidationError, format!("invalid request: {e}"))
            }
            _ => ApiErr::new(ErrorCode::BadRequest, format!("malformed JSON: {e}")),
        }
    })
}

/// Parses an id from a path; a malformed one names what was not found, like a missing one.
pub fn parse_id(what: &str, raw: &str) -> Result<Id, ApiErr> {
    raw.parse()
        .map_err(|_| ApiErr::new(ErrorCode::NotFound, format!("{what} {raw} not found")))
}
