//! `GET /apps/:app/log`: an app's aggregated log, as a stream of lines (NDJSON).

use crate::{Client, ClientError, Result};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::Method;
use slipway_types::LogEntry;

/// What to read: filters and whether to follow.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The last N lines of history (all kept lines when unset).
    pub lines: Option<u64>,
    /// After the history, stream new lines until the connection is closed.
    pub follow: bool,
    pub process_type: Option<String>,
    pub job_id: Option<String>,
    /// `stdout`, `stderr` or `init`.
    pub stream: Option<String>,
}

impl Client {
    /// An app's log lines, oldest first; with `follow`, then every new line as it comes.
    pub async fn log(
        &self,
        app: &str,
        query: &LogQuery,
    ) -> Result<BoxStream<'static, Result<LogEntry>>> {
        let mut url = self.endpoint(&["apps", app, "log"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = query.lines {
                q.append_pair("lines", &n.to_string());
            }
            if query.follow {
                q.append_pair("follow", "true");
            }
            if let Some(t) = &query.process_type {
                q.append_pair("process_type", t);
            }
            if let Some(j) = &query.job_id {
                q.append_pair("job_id", j);
            }
            if let Some(s) = &query.stream {
                q.append_pair("stream", s);
            }
        }
        let resp = self.send(self.request(Method::GET, url)).await?;
        let display = self.display_url.clone();
        let bytes = resp.bytes_stream().boxed();
        let lines = futures_util::stream::unfold(
            (bytes, Vec::<u8>::new(), 0usize, display),
            |(mut bytes, mut buf, mut start, display)| async move {
                loop {
                    if let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
                        let line = &buf[start..start + i];
                        start += i + 1;
                        let parsed = serde_json::from_slice::<LogEntry>(line).map_err(|e| {
                            ClientError::Protocol {
                                url: display.clone(),
                                reason: format!("cannot read a log line: {e}"),
                            }
                        });
                        return Some((parsed, (bytes, buf, start, display)));
                    }
                    buf.drain(..start);
                    start = 0;
                    if buf.len() > crate::MAX_LINE {
                        let err = crate::line_too_long(&display);
                        return Some((Err(err), (bytes, Vec::new(), 0, display)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let err = ClientError::from_reqwest(&display, e);
                            return Some((Err(err), (bytes, Vec::new(), 0, display)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(lines.boxed())
    }
}
