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
//! - One client address may hold at most a quarter of them ([`per_peer_cap`]): a client that
//!   opens idle connections and opens them again each time the header timeout closes them would
//!   otherwise hold every slot and lock everyone else out (git pushes, remote hosts). Loopback
//!   is exempt: on it are the CLI, the agent and the tests of this machine, already trusted
//!   with more than a connection.
//! - At shutdown the connections drain ([`drain`]): requests in flight finish, event streams
//!   and followed logs end, idle keep-alive connections close, a request that starts gets a 503
//!   (but a push's hook); [`drain_timeout`] bounds it all, then the listener closes.

pub mod drain;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// How long the requests in flight get at shutdown, process-wide: `--drain-timeout`, set once
/// at start ([`set_drain_timeout`]) so that every listener drains alike.
static DRAIN_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// The default of `--drain-timeout`: a `git push` of a large repo under way has that long.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets [`drain_timeout`]; only the first call counts.
pub fn set_drain_timeout(d: Duration) {
    let _ = DRAIN_TIMEOUT.set(d);
}

pub fn drain_timeout() -> Duration {
    DRAIN_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT)
}

/// Connections one non-loopback client address may hold at once.
pub fn per_peer_cap(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}

/// Connections open per client address; a [`PeerSlot`] gives its one back when dropped.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct PeerSlot(Peers, IpAddr);

impl Peers {
    fn take(&self, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().expect("peers");
        let n = m.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self.clone(), ip))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().expect("peers");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Answers 503 in one write (the connection is closed when `stream` drops).
fn refuse(stream: &tokio::net::TcpStream, message: &str) {
    let body = serde_json::json!({"code": "unavailable", "message": message}).to_string();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
}

/// Serves `app` on `listener` until `shutdown` completes; then drains: ends the
/// event streams and followed logs, and gives the other requests in flight up to
/// [`drain_timeout`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = drain::channel();
    let app = stop_rx.layer(app);
    tokio::pin!(shutdown);
    let mut warned: Option<tokio::time::Instant> = None;
    let peers = Peers::default();
    let per_peer = per_peer_cap(limits.max_connections);
    let all = limits.max_connections.max(1);
    let timeout = drain_timeout();
    // Set at shutdown: when the drain started. Connections are still accepted while it lasts
    // (the pre-receive hook of a push in flight calls this API back), but their requests are
    // answered 503 but for that hook ([`drain::Drain::layer`]).
    let mut draining: Option<tokio::time::Instant> = None;
    // One clone per connection accepted before the drain: the drain waits for those alone. One
    // accepted during it is answered 503 (or is the hook of a push in flight, whose own
    // connection is one of those): it must not hold the drain (one that sends nothing would
    // until the header timeout).
    let before_drain = Arc::new(());
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
            _ = &mut shutdown, if draining.is_none() => {
                stop_tx.start();
                draining = Some(tokio::time::Instant::now());
                let open = all - slots.available_permits();
                tracing::info!("{what}: draining {open} connection(s), {timeout:?} at most");
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if draining.is_some() => {
                let done = Arc::strong_count(&before_drain) == 1;
                if done || draining.is_some_and(|d| d.elapsed() >= timeout) {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(
                &stream,
                &format!(
                    "{what} has {} connections open, its limit; try again later",
                    limits.max_connections
                ),
            );
            if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, "{what}: {} connections open, the limit: refusing new ones", limits.max_connections);
            }
            continue;
        };
        let peer_slot = if peer.ip().to_canonical().is_loopback() {
            None
        } else {
            let Some(slot) = peers.take(peer.ip().to_canonical(), per_peer) else {
                refuse(
                    &stream,
                    &format!(
                        "{what} has {per_peer} connections open from your address, the most one \
                         address may hold; close some or try again later"
                    ),
                );
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warned = Some(tokio::time::Instant::now());
                    tracing::warn!(%peer, "{what}: {per_peer} connections from one address, its limit: refusing new ones");
                }
                continue;
            };
            Some(slot)
        };
        let app = app.clone();
        let stop = stop_rx.clone();
        // Accepted during the drain: one request, then closed.
        let late = draining.is_some();
        let in_flight = (!late).then(|| before_drain.clone());
        tokio::spawn(async move {
            let _permit = (permit, peer_slot, in_flight);
            // The peer's address as `ConnectInfo` (the dashboard's login throttle counts per client).
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower_service::Service::call(&mut app.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(!late)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(slipway_controller::MAX_CONN_BUFFER)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            if late {
                let _ = conn.await;
                return;
            }
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, "{what}: connection ended: {e}");
                    }
                }
                _ = stop.begun() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let open = Arc::strong_count(&before_drain) - 1;
    match draining {
        Some(started) if open == 0 => {
            tracing::info!("{what}: drained in {:?}", started.elapsed())
        }
        Some(_) => tracing::warn!(
            "{what}: {open} connection(s) still open after the drain timeout ({timeout:?}): cut"
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// This machine's first non-loopback IPv4 address (a UDP "connect" sends nothing).
    fn host_address() -> IpAddr {
        let from_interfaces = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .ok()
            .and_then(|o| {
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                out.split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .and_then(|a| a.split('/').next()?.parse().ok())
            });
        from_interfaces.expect(
            "this test needs an IPv4 address other than loopback on this machine (`ip -4 addr`)",
        )
    }

    /// What the server answered within 0.5 s (a refusal is written at accept); None: it kept the
    /// connection open and silent.
    async fn refused(c: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = vec![0; 1024];
        match tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address_as_connect_info() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { format!("peer={peer}") },
            ),
        );
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 8,
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            "the API",
            std::future::pending(),
        ));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with(&format!("peer={me}")), "{got}");
    }

    #[tokio::test]
    async fn one_address_holds_at_most_a_quarter_of_the_connections_and_loopback_is_exempt() {
        let ip = host_address();
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 8,
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            "the API",
            std::future::pending(),
        ));
        let from = |ip: IpAddr| async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind((ip, 0).into()).unwrap();
            sock.connect((ip, port).into()).await.unwrap()
        };
        // Two (8 / 4) idle connections from the address are kept; the third is refused.
        let mut held = vec![from(ip).await, from(ip).await];
        for c in &mut held {
            assert_eq!(
                refused(c).await,
                None,
                "a connection within the cap was closed"
            );
        }
        let mut third = from(ip).await;
        let got = refused(&mut third)
            .await
            .expect("the third connection was kept");
        assert!(
            got.starts_with("HTTP/1.1 503") && got.contains("from your address"),
            "{got}"
        );
        // Loopback is not held to it: the rest of the cap (6) is there for it.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut local = Vec::new();
        for _ in 0..6 {
            local.push(from(lo).await);
        }
        for c in &mut local {
            assert_eq!(refused(c).await, None, "a loopback connection was refused");
        }
        // A slot the address gives back is its again.
        drop(held.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = from(ip).await;
            match refused(&mut c).await {
                None => break,
                Some(got) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the freed slot did not come back: {got}"
                ),
            }
        }
    }
}
