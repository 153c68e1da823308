//! `/v3/watch` over the gateway: one POST whose response is a stream of JSON lines
//! (`{"result": WatchResponse}`), the first one confirming the watch was created.

use crate::{
    Client, Error, MAX_WATCH_LINE, Result, WatchRequest, WatchResponse, error_chain, gateway_error,
    read_bounded,
};

/// A live watch. [`WatchStream::next`] gives responses with events; it ends (`Ok(None)` or an
/// error) when the member closes the stream or the connection breaks, and the caller decides
/// how to resync.
pub struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Where the next line starts in `buf` (lines before it were handed out; they are dropped
    /// only when more must be read, not one by one).
    start: usize,
    /// How far `buf` is known to hold no newline. With `start`, each byte is looked at and
    /// moved once: a peer sending a long line in small pieces, or a flood of empty lines,
    /// costs linear time, not quadratic.
    scanned: usize,
    endpoint: String,
    /// The header revision of the `created` response: the store's revision when the watch
    /// started.
    pub created_revision: i64,
}

#[derive(serde::Deserialize)]
struct Line {
    result: Option<WatchResponse>,
    error: Option<serde_json::Value>,
}

pub(crate) async fn start(client: &Client, req: &WatchRequest) -> Result<WatchStream> {
    let body = serde_json::json!({ "create_request": req });
    let mut failures = Vec::new();
    for (i, endpoint) in client.rotation() {
        // No total timeout: the response lasts as long as the watch. Only getting it started
        // is bounded.
        let sent = tokio::time::timeout(
            client.timeout(),
            client
                .http()
                .post(format!("{endpoint}/v3/watch"))
                // etcd's "require leader" (the gateway passes Grpc-Metadata-* on as gRPC
                // metadata): a member cut off from its cluster's leader cancels the watch
                // instead of keeping it open with no events, so the caller re-watches
                // through a member that still has one.
                .header("Grpc-Metadata-hasleader", "true")
                .json(&body)
                .send(),
        )
        .await;
        let resp = match sent {
            Err(_) => {
                failures.push(format!(
                    "{endpoint}: no answer within {:?}",
                    client.timeout()
                ));
                continue;
            }
            Ok(Err(e)) => {
                failures.push(format!("{endpoint}: {}", error_chain(&e)));
                continue;
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            // Bounded in time too: this response has no total timeout (a watch's never ends),
            // and a member must not hold the caller by never finishing an error's body.
            let body = tokio::time::timeout(client.timeout(), read_bounded(resp, 64 << 10))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = gateway_error(&body)
                .map(|(_, m)| m)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if status.is_server_error() {
                failures.push(format!("{endpoint}: {status} {message}"));
                continue;
            }
            return Err(Error::Refused {
                endpoint: endpoint.to_string(),
                call: "watch",
                code: status.as_u16().into(),
                message,
            });
        }
        let mut stream = WatchStream {
            resp,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            endpoint: endpoint.to_string(),
            created_revision: 0,
        };
        let first = tokio::time::timeout(client.timeout(), stream.next_line()).await;
        match first {
            // Compaction is the cluster's answer, the same on every member.
            Ok(Ok(Some(r))) if r.canceled && r.compact_revision > 0 => {
                return Err(stream.canceled(&r));
            }
            // Canceled otherwise (a member without a leader cancels its watches): the next.
            Ok(Ok(Some(r))) if r.canceled => {
                failures.push(format!("{endpoint}: {}", stream.canceled(&r)));
            }
            Ok(Ok(Some(r))) if r.created => {
                stream.created_revision = r.header.revision;
                client.prefer(i);
                return Ok(stream);
            }
            Ok(Ok(_)) => failures.push(format!("{endpoint}: the watch was not created")),
            // An error line instead of the confirmation (the gateway sent 200 before it knew:
            // "no leader" from a member cut off from its cluster) or garbage: this member's
            // failure, so the next one is asked, as for a unary call.
            Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
            Err(_) => failures.push(format!(
                "{endpoint}: the watch was not confirmed within {:?}",
                client.timeout()
            )),
        }
    }
    Err(Error::Unavailable {
        endpoints: client.endpoints().join(","),
        detail: failures.join("; "),
    })
}

impl WatchStream {
    /// The next response with events. `Ok(None)`: the stream ended; `Err(Compacted)`: the
    /// history asked for is gone.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>> {
        loop {
            let Some(r) = self.next_line().await? else {
                return Ok(None);
            };
            if r.canceled {
                return Err(self.canceled(&r));
            }
            if !r.events.is_empty() {
                return Ok(Some(r));
            }
            // Progress notifications and the like: nothing to report.
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn canceled(&self, r: &WatchResponse) -> Error {
        if r.compact_revision > 0 {
            Error::Compacted {
                endpoint: self.endpoint.clone(),
                compact_revision: r.compact_revision,
            }
        } else {
            Error::Refused {
                endpoint: self.endpoint.clone(),
                call: "watch",
                code: -1,
                message: format!("the watch was canceled: {}", r.cancel_reason),
            }
        }
    }

    async fn next_line(&mut self) -> Result<Option<WatchResponse>> {
        loop {
            if let Some(p) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let (from, to) = (self.start, self.scanned + p);
                self.start = to + 1;
                self.scanned = self.start;
                let line = self.buf[from..to].trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let parsed: Line = serde_json::from_slice(line).map_err(|e| self.bad(e))?;
                if let Some(e) = parsed.error {
                    return Err(Error::Refused {
                        endpoint: self.endpoint.clone(),
                        call: "watch",
                        code: e.get("code").and_then(|c| c.as_i64()).unwrap_or(-1),
                        message: e
                            .get("message")
                            .and_then(|m| m.as_str())
                            .map_or_else(|| e.to_string(), str::to_string),
                    });
                }
                return match parsed.result {
                    Some(r) => Ok(Some(r)),
                    None => Err(self.bad("a line without a result")),
                };
            }
            // No newline left: drop the lines handed out, keep the one being received.
            self.buf.drain(..self.start);
            self.start = 0;
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_WATCH_LINE {
                return Err(self.bad(format!("a watch response over {MAX_WATCH_LINE} bytes")));
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::debug!(endpoint = %self.endpoint, "etcd watch ended: {}", error_chain(&e));
                    return Ok(None);
                }
            }
        }
    }

    fn bad(&self, detail: impl std::fmt::Display) -> Error {
        Error::Protocol {
            endpoint: self.endpoint.clone(),
            call: "watch",
            detail: detail.to_string(),
        }
    }
}
