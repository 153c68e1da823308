//! Aggregated log lines (`GET /apps/:app/log`): what the log aggregator keeps per app and
//! streams as newline-delimited JSON (or SSE), and how `slipway log` prints them.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// Streams a line can come from: the job's `stdout` and `stderr`, and `init`: notes about the
/// job from the host and the platform (started, health checks, exit status, OOM, restarts).
pub const LOG_STREAMS: [&str; 3] = ["stdout", "stderr", "init"];

/// Job metadata key that makes an attached one-off job's output logged (`slipway run
/// --enable-log` sets it to `"1"`). Formation jobs, build jobs and detached one-off jobs
/// (`run -d`) are always logged.
pub const LOG_METADATA_KEY: &str = "log";

/// One line of an app's log.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the app's log, increasing by one per line (a resume point and a seam check).
    pub seq: u64,
    /// When the line was written (captured by the host), in microseconds.
    pub ts: Timestamp,
    /// App name and id.
    pub app: String,
    pub app_id: String,
    #[serde(default)]
    pub release_id: String,
    /// Process type; empty for one-off jobs (`run`).
    #[serde(default)]
    pub process_type: String,
    pub job_id: String,
    #[serde(default)]
    pub host_id: String,
    /// `stdout`, `stderr` or `init`.
    pub stream: String,
    pub msg: String,
    /// Written by the platform about the job (from its events: started, health checks, exit),
    /// not read from the job's output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform: bool,
}

impl LogEntry {
    /// Flynn's `app[web.8f3a2c]` (`app[run.8f3a2c]` for one-off jobs): the type and the last
    /// six characters of the job id.
    pub fn source(&self) -> String {
        let ptype = if self.process_type.is_empty() {
            "run"
        } else {
            &self.process_type
        };
        let tail: String = {
            let chars: Vec<char> = self.job_id.chars().collect();
            chars[chars.len().saturating_sub(6)..].iter().collect()
        };
        format!("{}[{ptype}.{tail}]", self.app)
    }
}

impl std::fmt::Display for LogEntry {
    /// `2026-11-22T15:04:05.123456Z app[web.8f3a2c]: message` (Flynn's format).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.ts, self.source(), self.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flynn_line_format() {
        let e = LogEntry {
            seq: 1,
            ts: Timestamp::parse("2026-11-22T15:04:05.123456Z").unwrap(),
            app: "app".into(),
            app_id: "x".into(),
            release_id: String::new(),
            process_type: "web".into(),
            job_id: "host-1-0123456789abcdef8f3a2c".into(),
            host_id: "host-1".into(),
            stream: "stdout".into(),
            msg: "message".into(),
            platform: false,
        };
        assert_eq!(
            e.to_string(),
            "2026-11-22T15:04:05.123456Z app[web.8f3a2c]: message"
        );
        let one_off = LogEntry {
            process_type: String::new(),
            job_id: "ab".into(),
            ..e
        };
        assert_eq!(one_off.source(), "app[run.ab]");
    }
}
