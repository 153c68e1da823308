//! [`HttpBlobStore`]: the client of [`crate::http::router`], so a host agent or a builder on
//! another machine uses the server's store through the same trait.

use crate::http::DIGEST_HEADER;
use crate::{BlobError, BlobInfo, BlobStore, Body, Digest};
use futures_util::TryStreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio_util::io::{ReaderStream, StreamReader};

#[derive(Clone, Debug)]
pub struct HttpBlobStore {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl HttpBlobStore {
    /// `base_url` is the controller's URL (the store is under `/blobs`); `api_key` its key.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> HttpBlobStore {
        // reqwest is built without a default crypto provider (ring everywhere, DESIGN.md §4).
        let _ = rustls::crypto::ring::default_provider().install_default();
        HttpBlobStore {
            base: base_url.into().trim_end_matches('/').to_string(),
            key: api_key,
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    fn blob_path(d: &Digest) -> String {
        format!("/blobs/{d}")
    }
}

fn http_err(e: reqwest::Error) -> BlobError {
    BlobError::Http(e.to_string())
}

/// Maps an error response back to the error the server's store returned.
async fn error_of(resp: reqwest::Response, d: Option<&Digest>) -> BlobError {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["message"].as_str().unwrap_or("").to_string();
    match (status, body["code"].as_str(), d) {
        (StatusCode::NOT_FOUND, _, Some(d)) => BlobError::NotFound(d.clone()),
        (_, Some("invalid_digest"), _) => BlobError::InvalidDigest(message),
        (_, Some("digest_mismatch"), Some(expected)) => {
            // "… the content is sha256:… ;" — recover the actual digest from the message.
            let actual = message
                .split_whitespace()
                .filter_map(|w| w.trim_end_matches([';', ',']).parse::<Digest>().ok())
                .find(|a| a != expected);
            match actual {
                Some(actual) => BlobError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                },
                None => BlobError::Http(message),
            }
        }
        _ => BlobError::Http(format!("{status}: {message}")),
    }
}

fn info_of(resp: &reqwest::Response, d: &Digest) -> BlobInfo {
    // The header, not the body's size hint: a HEAD response has an empty body.
    let size = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| resp.content_length())
        .unwrap_or(0);
    BlobInfo::new(d.clone(), size)
}

#[async_trait::async_trait]
impl BlobStore for HttpBlobStore {
    async fn put(&self, body: Body, expected: Option<&Digest>) -> Result<BlobInfo, BlobError> {
        if let Some(d) = expected
            && self.head(d).await?.is_some()
        {
            // The server has it: an empty PUT marks it as used again (garbage collection) without
            // sending the content. If it was deleted meanwhile, that PUT fails and the content
            // is sent after all.
            let resp = self
                .req(Method::PUT, &Self::blob_path(d))
                .body(Vec::new())
                .send()
                .await
                .map_err(http_err)?;
            if resp.status().is_success() {
                return resp.json().await.map_err(http_err);
            }
        }
        let path = match expected {
            Some(d) => Self::blob_path(d),
            None => "/blobs".to_string(),
        };
        let method = if expected.is_some() {
            Method::PUT
        } else {
            Method::POST
        };
        let stream = ReaderStream::with_capacity(body, 256 * 1024);
        let resp = self
            .req(method, &path)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(error_of(resp, expected).await);
        }
        resp.json().await.map_err(http_err)
    }

    async fn get(&self, d: &Digest) -> Result<Option<(BlobInfo, Body)>, BlobError> {
        let resp = self
            .req(Method::GET, &Self::blob_path(d))
            .send()
            .await
            .map_err(http_err)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(error_of(resp, Some(d)).await);
        }
        let info = info_of(&resp, d);
        let reader = StreamReader::new(resp.bytes_stream().map_err(std::io::Error::other));
        Ok(Some((info, Box::new(reader))))
    }

    async fn head(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        let resp = self
            .req(Method::HEAD, &Self::blob_path(d))
            .send()
            .await
            .map_err(http_err)?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                if let Some(h) = resp.headers().get(DIGEST_HEADER)
                    && h.to_str().ok() != Some(d.as_str())
                {
                    return Err(BlobError::Http(format!(
                        "the server answered HEAD {d} with digest {h:?}"
                    )));
                }
                Ok(Some(info_of(&resp, d)))
            }
            _ => Err(error_of(resp, Some(d)).await),
        }
    }

    async fn delete(&self, d: &Digest) -> Result<bool, BlobError> {
        let resp = self
            .req(Method::DELETE, &Self::blob_path(d))
            .send()
            .await
            .map_err(http_err)?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(error_of(resp, Some(d)).await),
        }
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let resp = self
            .req(Method::GET, "/blobs")
            .send()
            .await
            .map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(error_of(resp, None).await);
        }
        resp.json().await.map_err(http_err)
    }
}
