//! TCP routes: one listener per route port; each connection is spliced raw to a backend
//! (the leader for leader routes), power-of-two-choices like HTTP.

use crate::Shared;
use crate::backends::{InFlight, pick};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Listeners by port: started for new TCP routes, stopped for removed ones. A port that
/// cannot be listened on (held by another process, outside the allowed range) is kept in
/// `failed` with the reason, for `slipway route` to show, and tried again at the next
/// change of routes.
pub struct TcpListeners {
    running: HashMap<u16, (String, bool, JoinHandle<()>)>,
    failed: HashMap<u16, String>,
    /// [`crate::Config::takeover`]: share the ports a predecessor router holds.
    takeover: bool,
}

impl TcpListeners {
    pub fn new(takeover: bool) -> TcpListeners {
        TcpListeners {
            running: HashMap::new(),
            failed: HashMap::new(),
            takeover,
        }
    }

    /// See `Router::end_takeover`.
    pub fn end_takeover(&mut self) {
        self.takeover = false;
    }

    /// Closes every listener (the router drains); connections go on until either side closes.
    pub fn close_all(&mut self) {
        for (_, (_, _, task)) in self.running.drain() {
            task.abort();
        }
    }

    /// `listening`, `failed: REASON`, or `None` for a port no route names.
    pub fn state(&self, port: u16) -> Option<String> {
        if self.running.contains_key(&port) {
            return Some("listening".into());
        }
        self.failed.get(&port).map(|why| format!("failed: {why}"))
    }

    pub fn reconcile(
        &mut self,
        sh: &Arc<Shared>,
        bind: IpAddr,
        range: &std::ops::RangeInclusive<u16>,
        routes: &[slipway_types::TcpRoute],
    ) {
        self.failed.clear();
        if sh.is_draining() {
            return;
        }
        let wanted: HashMap<u16, (String, bool)> = routes
            .iter()
            .map(|r| (r.port, (r.service.clone(), r.leader)))
            .collect();
        self.running.retain(|port, (svc, leader, task)| {
            let keep = wanted.get(port) == Some(&(svc.clone(), *leader));
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, (service, leader)) in wanted {
            if self.running.contains_key(&port) {
                continue;
            }
            if !range.contains(&port) {
                let why = format!(
                    "port {port} is outside the TCP route range {}-{}",
                    range.start(),
                    range.end()
                );
                tracing::warn!(%service, "router: not listening for a TCP route: {why}");
                self.failed.insert(port, why);
                continue;
            }
            let addr = SocketAddr::new(bind, port);
            // As for HTTP: SO_REUSEPORT (so that a successor can take over the port), with a
            // plain bind first that fails when another process holds it, unless handing over.
            let bound = match self.takeover {
                true => Ok(()),
                false => std::net::TcpListener::bind(addr).map(drop),
            };
            let listener = match bound.and_then(|()| crate::reuseport_listener(addr)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, %service, "router: cannot listen for the TCP route: {e}");
                    let why = match e.kind() {
                        std::io::ErrorKind::AddrInUse => {
                            format!("{addr} is in use by another process")
                        }
                        _ => format!("cannot listen on {addr}: {e}"),
                    };
                    self.failed.insert(port, why);
                    continue;
                }
            };
            let task = tokio::spawn(serve(sh.clone(), listener, service.clone(), leader));
            self.running.insert(port, (service, leader, task));
        }
    }
}

async fn serve(sh: Arc<Shared>, listener: tokio::net::TcpListener, service: String, leader: bool) {
    loop {
        let Ok((mut down, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Some(permit) = sh.conns.try_open() else {
            sh.conns.refused(peer);
            continue;
        };
        let sh = sh.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = sh.backends.get(&service).unwrap_or_default();
            let cands = if leader {
                svc.leader.iter().cloned().collect()
            } else {
                svc.all.clone()
            };
            let mut skip = Vec::new();
            while let Some(b) = pick(&cands, &skip) {
                let connect = tokio::net::TcpStream::connect(b.addr);
                match tokio::time::timeout(sh.limits.connect_timeout, connect).await {
                    Ok(Ok(mut up)) => {
                        let _guard = InFlight::new(b.clone());
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        return;
                    }
                    _ => skip.push(b.addr),
                }
            }
            tracing::warn!(%service, "router: TCP connection dropped: no backend could be reached");
        });
    }
}
