//! The push side of the registry protocol, used by `slipway image push`: HEAD each blob, upload
//! only the missing ones (monolithic `POST …/blobs/uploads/?digest=`, streamed from the archive),
//! then PUT the manifest. The server is the same [`crate::server`] that skopeo and docker talk
//! to, so there is one protocol and one set of checks.

use crate::deploy::DeployOutcome;
use crate::local::{LocalBlob, LocalImage};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::sync::Arc;

/// Told how many bytes of the current blob went out (for a progress bar).
pub trait Progress: Send + Sync {
    fn blob_start(&self, _blob: &LocalBlob) {}
    fn bytes(&self, _n: u64) {}
    fn blob_done(&self, _blob: &LocalBlob, _uploaded: bool) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub bytes_uploaded: u64,
    pub outcome: DeployOutcome,
}

pub struct PushClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl PushClient {
    /// `base` is the controller URL (`http://HOST:PORT`); `key` its API key.
    pub fn new(base: &str, key: &str) -> Result<PushClient> {
        // reqwest is built without a default TLS provider: ring, as everywhere in Slipway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(PushClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Turns a registry error response into words.
    async fn fail(what: &str, resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Errs {
            errors: Vec<Err1>,
        }
        #[derive(serde::Deserialize)]
        struct Err1 {
            code: String,
            message: String,
        }
        if let Ok(e) = serde_json::from_str::<Errs>(&text)
            && let Some(first) = e.errors.first()
        {
            return anyhow::anyhow!("{what}: {} ({})", first.message, first.code);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(m) = v.get("message").and_then(|m| m.as_str())
        {
            return anyhow::anyhow!("{what}: {m} (HTTP {status})");
        }
        anyhow::anyhow!(
            "{what}: HTTP {status} {}",
            text.chars().take(200).collect::<String>()
        )
    }

    /// Checks the server speaks the registry protocol and takes our key.
    pub async fn ping(&self) -> Result<()> {
        let resp = self
            .req(reqwest::Method::GET, "/v2/")
            .send()
            .await
            .with_context(|| format!("cannot reach the registry at {}/v2/", self.base))?;
        if resp.status() == StatusCode::NOT_FOUND {
            bail!(
                "{} has no registry endpoint (/v2/): is it a `slipway server` with image support?",
                self.base
            );
        }
        if !resp.status().is_success() {
            return Err(Self::fail("registry ping", resp).await);
        }
        Ok(())
    }

    pub async fn has_blob(&self, app: &str, blob: &LocalBlob) -> Result<bool> {
        let resp = self
            .req(
                reqwest::Method::HEAD,
                &format!("/v2/{app}/blobs/{}", blob.digest),
            )
            .send()
            .await
            .context("cannot ask the registry for a blob")?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => {
                // A 404 for an unknown app carries no body on HEAD: tell the cases apart.
                Ok(false)
            }
            _ => Err(Self::fail(&format!("checking blob {}", blob.digest), resp).await),
        }
    }

    /// Streams one blob up, in one request; the server verifies its digest.
    pub async fn upload_blob(
        &self,
        app: &str,
        blob: &LocalBlob,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let reader = tokio::task::spawn_blocking({
            let s = blob.source.clone();
            move || s.open()
        })
        .await??;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        // Read on a blocking thread: the sources are plain files (or ranges of a tar).
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(bytes::Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let p = progress.clone();
        let stream = tokio_stream_from(rx).inspect(move |chunk| {
            if let Ok(c) = chunk {
                p.bytes(c.len() as u64);
            }
        });
        let resp = self
            .req(
                reqwest::Method::POST,
                &format!("/v2/{app}/blobs/uploads/?digest={}", blob.digest),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, blob.size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("uploading blob {}", blob.digest))?;
        let _ = reading.await;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::fail(&format!("uploading blob {}", blob.digest), resp).await);
        }
        Ok(())
    }

    pub async fn put_manifest(
        &self,
        app: &str,
        reference: &str,
        image: &LocalImage,
        deploy: bool,
    ) -> Result<DeployOutcome> {
        let query = if deploy { "" } else { "?deploy=false" };
        let resp = self
            .req(
                reqwest::Method::PUT,
                &format!("/v2/{app}/manifests/{reference}{query}"),
            )
            .header(reqwest::header::CONTENT_TYPE, &image.media_type)
            .body(image.manifest.clone())
            .send()
            .await
            .context("cannot send the manifest")?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::fail("pushing the manifest", resp).await);
        }
        resp.json()
            .await
            .context("the registry's answer to the manifest is not Slipway's")
    }

    /// The whole push: blobs the server lacks, then the manifest under `reference`.
    pub async fn push(
        &self,
        app: &str,
        image: &LocalImage,
        reference: &str,
        deploy: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<PushReport> {
        self.ping().await?;
        let (mut uploaded, mut skipped, mut bytes) = (0, 0, 0);
        let mut seen = std::collections::HashSet::new();
        for blob in &image.blobs {
            if !seen.insert(blob.digest.clone()) {
                continue;
            }
            progress.blob_start(blob);
            let have = self.has_blob(app, blob).await?;
            if !have {
                self.upload_blob(app, blob, progress.clone()).await?;
                uploaded += 1;
                bytes += blob.size;
            } else {
                skipped += 1;
            }
            progress.blob_done(blob, !have);
        }
        let outcome = self.put_manifest(app, reference, image, deploy).await?;
        Ok(PushReport {
            blobs_uploaded: uploaded,
            blobs_skipped: skipped,
            bytes_uploaded: bytes,
            outcome,
        })
    }
}

use std::io::Read as _;

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
