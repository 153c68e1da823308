//! How `slipway server` serves its control-plane HTTP listeners — the controller API (with the
//! git receiver, registry, blobs and logs on it) and discovery's API: hyper's HTTP/1.1 with
//! the timeout and the cap `axum::serve` lacks. Without them a client that sends half a
//! request head, or opens connections and sends nothing, holds a task and a file descriptor
//! for as long as it likes (measured: 330 s and counting).
//!
//! - `header_timeout` covers the request head and the wait for the next one on a kept-alive
//!   connection (hyper runs one timer for both): a silent or dripping client is closed. A
//!   response in progress is not a wait for a head: event streams, `log -f`, discovery watches
//!   and attach (an upgraded connection) run as long as they run.
//! - hyper's per-connection buffer is [`slipway_controller::MAX_CONN_BUFFER`] (64 KiB), not its
//!   ~400 KB default: a client that stops reading an event stream holds that much of the
//!   server's memory per connection (50 such subscribers: +25 MB with the default).
//! - `max_connections`: past it a new connection gets a 503 in one write and is closed, so the
//!   API cannot take the descriptors the router and the host agent need.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and gives the
/// requests in flight up to 10 s (an event stream would otherwise hold the exit forever).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: don't spin.
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let body = format!(
                "{{\"code\":\"unavailable\",\"message\":\"{what} has {} connections open, its limit; try again later\"}}",
                limits.max_connections
            );
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.try_write(resp.as_bytes());
            if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, "{what}: {} connections open, the limit: refusing new ones", limits.max_connections);
            }
            continue;
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(slipway_controller::MAX_CONN_BUFFER)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, "{what}: connection ended: {e}");
                    }
                }
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let all = limits.max_connections.max(1) as u32;
    let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
}
