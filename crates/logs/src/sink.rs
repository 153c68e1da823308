//! Per-app syslog sinks: an app whose metadata has `log_sink=syslog://HOST:PORT` gets its lines
//! forwarded as RFC 5424 messages over TCP, octet-counted (RFC 6587). Per app, because Flynn's
//! cluster-wide-only sinks were a complaint.
//!
//! A sink is a follower of the app's log (live lines only), so it never slows ingest: while the
//! syslog server is unreachable the follower falls behind and later catches up from disk (as far
//! as the history reaches). The app list is re-read every few seconds; a changed or removed
//! `log_sink` restarts or stops the sink.

use crate::aggregator::{Aggregator, Query};
use futures_util::StreamExt;
use slipway_store::Store;
use slipway_types::LogEntry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// App metadata key naming the app's syslog sink.
pub const SINK_META_KEY: &str = "log_sink";
const RESYNC: Duration = Duration::from_secs(3);

/// Where a sink sends: `syslog://HOST:PORT` (or `syslog+tcp://`).
fn parse_sink(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("syslog+tcp://")
        .or_else(|| url.strip_prefix("syslog://"))
        .ok_or_else(|| format!("log_sink {url:?}: expected syslog://HOST:PORT"))?;
    let addr = rest.trim_end_matches('/');
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(addr.to_string())
        }
        _ => Err(format!("log_sink {url:?}: expected syslog://HOST:PORT")),
    }
}

/// One RFC 5424 message, octet-counted: `LEN <PRI>1 TS HOST APP PROCID MSGID - MSG`. Facility
/// user (1); severity info for stdout, error for stderr, notice for the platform's `init` lines.
pub fn rfc5424(e: &LogEntry) -> String {
    let severity = match e.stream.as_str() {
        "stderr" => 3,
        "init" => 5,
        _ => 6,
    };
    let field = |s: &str, max: usize| -> String {
        let s: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if s.is_empty() { "-".into() } else { s }
    };
    let ptype = if e.process_type.is_empty() {
        "run"
    } else {
        &e.process_type
    };
    let msg = format!(
        "<{}>1 {} {} {} {} {} - {}",
        8 + severity,
        e.ts,
        field(&e.host_id, 255),
        field(&e.app, 48),
        field(&format!("{ptype}.{}", e.job_id), 128),
        field(&e.stream, 32),
        e.msg
    );
    format!("{} {msg}", msg.len())
}

/// Deletes the history of every app the store reports deleted from now on (and of apps
/// already gone at start), so a deleted app's lines do not outlive it.
pub fn forget_deleted_apps(agg: Aggregator, store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut notifier = store.event_notifier();
        let mut last = *notifier.borrow_and_update();
        if let Ok(apps) = store.list_apps().await {
            let known: std::collections::HashSet<String> =
                apps.iter().map(|a| a.id.to_string()).collect();
            for id in agg.app_ids() {
                if !known.contains(&id)
                    && let Err(e) = agg.forget_app(&id)
                {
                    tracing::warn!(app = %id, "logs: cannot delete a deleted app's history: {e}");
                }
            }
        }
        loop {
            let filter = slipway_types::EventFilter {
                object_types: vec![slipway_types::ObjectType::App],
                since_id: Some(last),
                limit: Some(100),
                ..Default::default()
            };
            let mut more = false;
            if let Ok(events) = store.list_events(&filter).await {
                more = events.len() == 100;
                for e in events {
                    last = last.max(e.id);
                    if e.op == slipway_types::EventOp::Delete
                        && let Some(id) = e.app_id
                        && let Err(err) = agg.forget_app(&id.to_string())
                    {
                        tracing::warn!(app = %id, "logs: cannot delete a deleted app's history: {err}");
                    }
                }
            }
            if more {
                continue;
            }
            let wait = std::time::Duration::from_secs(10);
            if tokio::time::timeout(wait, notifier.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                tokio::time::sleep(wait).await;
            }
        }
    });
}

/// Keeps one sink per app with a `log_sink`, until the process ends.
pub fn run_sinks(agg: Aggregator, store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut sinks: HashMap<String, (String, tokio::task::AbortHandle)> = HashMap::new();
        loop {
            match store.list_apps().await {
                Ok(apps) => {
                    let mut wanted: HashMap<String, String> = HashMap::new();
                    for app in apps {
                        if let Some(url) = app.meta.get(SINK_META_KEY) {
                            match parse_sink(url) {
                                Ok(addr) => {
                                    wanted.insert(app.id.to_string(), addr);
                                }
                                Err(e) => tracing::warn!(app = %app.name, "logs: {e}"),
                            }
                        }
                    }
                    sinks.retain(|id, (addr, task)| {
                        let keep = wanted.get(id) == Some(addr);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for (id, addr) in wanted {
                        if let std::collections::hash_map::Entry::Vacant(slot) = sinks.entry(id) {
                            let task =
                                tokio::spawn(sink(agg.clone(), slot.key().clone(), addr.clone()));
                            slot.insert((addr, task.abort_handle()));
                        }
                    }
                }
                Err(e) => tracing::warn!("logs: cannot read the apps' log sinks: {e}"),
            }
            tokio::time::sleep(RESYNC).await;
        }
    });
}

async fn sink(agg: Aggregator, app_id: String, addr: String) {
    let q = Query {
        lines: Some(0),
        ..Default::default()
    };
    let mut lines = match agg.follow(&app_id, &q).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(app = %app_id, "logs: sink: cannot follow the log: {e}");
            return;
        }
    };
    let mut pending: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut conn = match tokio::net::TcpStream::connect(&addr).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(app = %app_id, "logs: sink: cannot connect to syslog {addr}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        loop {
            let msg = match pending.take() {
                Some(m) => m,
                None => match lines.next().await {
                    Some(e) => rfc5424(&e),
                    None => return,
                },
            };
            // A syslog server sends nothing, so a readable socket is a closed one: find out
            // before writing, or the write would vanish into a connection already gone.
            let mut probe = [0u8; 1];
            if matches!(conn.try_read(&mut probe), Ok(0)) {
                tracing::warn!(app = %app_id, "logs: sink: syslog {addr} closed the connection");
                pending = Some(msg);
                break;
            }
            if let Err(e) = conn.write_all(msg.as_bytes()).await {
                tracing::warn!(app = %app_id, "logs: sink: syslog {addr}: {e}");
                // Sent again on the next connection.
                pending = Some(msg);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls_and_message_format() {
        assert_eq!(
            parse_sink("syslog://logs.example:514").unwrap(),
            "logs.example:514"
        );
        assert_eq!(
            parse_sink("syslog+tcp://10.0.0.1:6514/").unwrap(),
            "10.0.0.1:6514"
        );
        for bad in [
            "http://x:1",
            "syslog://x",
            "syslog://:514",
            "syslog://x:0",
            "syslog://x:y",
        ] {
            assert!(parse_sink(bad).is_err(), "{bad}");
        }
        let e = LogEntry {
            seq: 1,
            ts: slipway_types::Timestamp::parse("2026-11-22T15:04:05.123456Z").unwrap(),
            app: "demo".into(),
            app_id: "x".into(),
            release_id: String::new(),
            process_type: "web".into(),
            job_id: "h-abc".into(),
            host_id: "host-1".into(),
            stream: "stderr".into(),
            msg: "boom".into(),
            platform: false,
        };
        let body = "<11>1 2026-11-22T15:04:05.123456Z host-1 demo web.h-abc stderr - boom";
        assert_eq!(rfc5424(&e), format!("{} {body}", body.len()));
    }
}
