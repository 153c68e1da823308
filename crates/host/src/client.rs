//! [`HostApi`] over HTTP: what a scheduler uses to drive a remote host agent.

use crate::api::{HostApi, HostError, HostResult};
use crate::types::{HostJob, HostStatus, JobEvent, JobInfo, LogLine};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;

#[derive(Clone)]
pub struct HttpHost {
    base: String,
    http: reqwest::Client,
}

impl HttpHost {
    /// `base` is e.g. `http://10.0.0.5:1113`; `token`: the cluster token, sent as
    /// `Authorization: Bearer` on every request. Installs the ring TLS provider if none is.
    pub fn new(base: &str, token: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        HttpHost {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("reqwest client"),
        }
    }

    /// Percent-encodes a path segment (job ids come from users).
    fn seg(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> HostResult<T> {
        let resp = req.send().await.map_err(|e| {
            HostError::Internal(format!("cannot reach the host agent at {}: {e}", self.base))
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        if status.is_success() {
            if body.is_empty() {
                return serde_json::from_slice(b"null")
                    .map_err(|e| HostError::Internal(e.to_string()));
            }
            return serde_json::from_slice(&body)
                .map_err(|e| HostError::Internal(format!("bad answer from the host agent: {e}")));
        }
        Err(
            serde_json::from_slice::<HostError>(&body).unwrap_or_else(|_| {
                HostError::Internal(format!(
                    "host agent answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ))
            }),
        )
    }

    /// Splits a byte stream into lines and parses each with `parse`.
    fn lines<T: Send + 'static>(
        resp: reqwest::Response,
        parse: fn(&str) -> Option<T>,
    ) -> BoxStream<'static, T> {
        let bytes = resp.bytes_stream();
        Box::pin(futures_util::stream::unfold(
            (bytes, Vec::<u8>::new(), std::collections::VecDeque::new()),
            move |(mut bytes, mut buf, mut ready)| async move {
                loop {
                    if let Some(x) = ready.pop_front() {
                        return Some((x, (bytes, buf, ready)));
                    }
                    let chunk = bytes.next().await?.ok()?;
                    buf.extend_from_slice(&chunk);
                    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        if let Some(x) = parse(String::from_utf8_lossy(&line).trim_end()) {
                            ready.push_back(x);
                        }
                    }
                }
            },
        ))
    }
}

#[async_trait]
impl HostApi for HttpHost {
    async fn add_job(&self, job: HostJob) -> HostResult<JobInfo> {
        let url = self.url(&format!("/host/jobs/{}", Self::seg(&job.id)));
        self.send(self.http.put(url).json(&job)).await
    }
    async fn list_jobs(&self) -> HostResult<Vec<JobInfo>> {
        self.send(self.http.get(self.url("/host/jobs"))).await
    }
    async fn get_job(&self, id: &str) -> HostResult<JobInfo> {
        self.send(
            self.http
                .get(self.url(&format!("/host/jobs/{}", Self::seg(id)))),
        )
        .await
    }
    async fn stop_job(&self, id: &str) -> HostResult<JobInfo> {
        self.send(
            self.http
                .delete(self.url(&format!("/host/jobs/{}", Self::seg(id)))),
        )
        .await
    }
    async fn signal_job(&self, id: &str, signal: i32) -> HostResult<()> {
        let url = self.url(&format!("/host/jobs/{}/signal/{signal}", Self::seg(id)));
        self.send::<serde_json::Value>(self.http.put(url))
            .await
            .map(|_| ())
    }
    async fn wait_job(&self, id: &str) -> HostResult<JobInfo> {
        self.send(
            self.http
                .get(self.url(&format!("/host/jobs/{}/wait", Self::seg(id)))),
        )
        .await
    }
    async fn events(&self) -> HostResult<BoxStream<'static, JobEvent>> {
        let resp = self
            .http
            .get(self.url("/host/jobs"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| HostError::Internal(format!("event stream: {e}")))?;
        Ok(Self::lines(resp, |l| {
            serde_json::from_str(l.strip_prefix("data:")?.trim_start()).ok()
        }))
    }
    async fn logs(&self, id: &str, follow: bool) -> HostResult<BoxStream<'static, LogLine>> {
        let resp = self
            .http
            .get(self.url(&format!(
                "/host/jobs/{}/logs?follow={follow}",
                Self::seg(id)
            )))
            .send()
            .await
            .map_err(|e| HostError::Internal(format!("logs: {e}")))?;
        if !resp.status().is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(serde_json::from_slice(&body)
                .unwrap_or_else(|_| HostError::Internal(String::from_utf8_lossy(&body).into())));
        }
        Ok(Self::lines(resp, |l| serde_json::from_str(l).ok()))
    }
    async fn status(&self) -> HostResult<HostStatus> {
        self.send(self.http.get(self.url("/host/status"))).await
    }
    async fn fence(&self, epoch: u64) -> HostResult<()> {
        let url = self.url(&format!("/host/epoch/{epoch}"));
        self.send::<serde_json::Value>(self.http.put(url))
            .await
            .map(|_| ())
    }
    async fn add_job_fenced(&self, job: HostJob, epoch: u64) -> HostResult<JobInfo> {
        let url = self.url(&format!("/host/jobs/{}", Self::seg(&job.id)));
        let req = self.http.put(url).json(&job);
        self.send(req.header(crate::http::EPOCH_HEADER, epoch))
            .await
    }
    async fn stop_job_fenced(&self, id: &str, epoch: u64) -> HostResult<JobInfo> {
        let url = self.url(&format!("/host/jobs/{}", Self::seg(id)));
        let req = self.http.delete(url);
        self.send(req.header(crate::http::EPOCH_HEADER, epoch))
            .await
    }
    async fn attach(&self, id: &str) -> HostResult<crate::attach::AttachStream> {
        let url = self.url(&format!("/host/jobs/{}/attach", Self::seg(id)));
        crate::attach::upgrade_request(self.http.post(url))
            .await
            .map_err(HostError::Conflict)
    }
}
