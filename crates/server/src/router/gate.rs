//! The zero-downtime gate over every live router: the scheduler counts a job up once every
//! router registered in discovery ([`ROUTER_SERVICE`]) has it as a backend, and stops a job
//! only after every one of them drained it (took it out and finished its requests in flight).
//!
//! Each router registers itself (its admin address) when it starts; the gate re-reads that
//! set on every poll ([`POLL`]), so a router that starts during a wait is waited for too, and
//! one that dies is dropped once its registration expires (discovery's TTL, 10 s). The router
//! of this process is asked directly; others over their admin endpoint
//! (`GET /backends/{job}`, 200 `routed` / 404 `absent`, behind the cluster token). A router
//! that cannot be asked (down, refusing the token) counts as not there yet: the waits are
//! bounded ([`ROUTE_TIMEOUT`], [`DRAIN_TIMEOUT`]) and then say which routers they gave up on.
//! With no router known anywhere, the gate is discovery's ([`DiscoveryGate`]).

use crate::discovery::bridge::{Bridge, takes_traffic};
use crate::discovery::gate::DiscoveryGate;
use slipway_discovery::Registry;
use slipway_host::JobInfo;
use slipway_scheduler::TrafficGate;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The discovery service every router registers in.
pub const ROUTER_SERVICE: &str = "slipway-router";
/// How long a new job may take to appear in every router before it counts as up anyway (a
/// job whose port is not registered, e.g. no health check passed yet, must not block a deploy).
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping job's in-flight requests may take before it gets SIGTERM anyway; longer
/// than discovery's TTL, so a router that died mid-drain expires within it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the routers are asked during a wait.
pub const POLL: Duration = Duration::from_millis(100);
/// One question to one router: connect, ask, answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of a router's answer read: a status line and a word.
const MAX_ANSWER: usize = 1024;

/// A process-unique router id: `router-` and 16 hex digits (random, from the standard
/// library's hasher keys, and the pid).
pub fn router_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("router-{:016x}", h.finish())
}

/// The scheduler's [`slipway_scheduler::TrafficGate`] over every router of the cluster.
pub struct RoutersGate {
    bridge: Arc<Bridge>,
    registry: Arc<dyn Registry>,
    /// Sent to other routers' admin endpoints.
    credential: String,
    /// This process's router, and its id in discovery.
    local: Option<(String, slipway_router::Router)>,
}

/// One router to ask.
enum Target {
    Local(slipway_router::Router),
    Remote { id: String, addr: String },
}

impl RoutersGate {
    /// `local`: the router of this process, if it runs one. `credential`: the cluster token
    /// (or the API key of a cluster without one).
    pub fn new(
        discovery: &crate::discovery::Discovery,
        local: Option<&super::RouterRole>,
        credential: String,
    ) -> Arc<RoutersGate> {
        Arc::new(RoutersGate {
            bridge: discovery.bridge.clone(),
            registry: discovery.registry.clone(),
            credential,
            local: local.map(|r| (r.id.clone(), r.router().clone())),
        })
    }

    /// The routers to wait for now: every registered one, and this process's own (registered
    /// or not: it may have failed to, and it is here).
    async fn targets(&self) -> Vec<Target> {
        let registered = match self.registry.instances(ROUTER_SERVICE).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!("traffic gate: cannot list the routers: {e}");
                Vec::new()
            }
        };
        let mut targets: Vec<Target> = registered
            .into_iter()
            .filter(|i| self.local.as_ref().is_none_or(|(id, _)| *id != i.id))
            .map(|i| Target::Remote {
                id: i.id,
                addr: i.addr,
            })
            .collect();
        if let Some((_, r)) = &self.local {
            targets.push(Target::Local(r.clone()));
        }
        targets
    }

    /// Polls every router until each answers `want` (routed or not) for `job`, or `timeout`.
    /// `Ok(())` when all did; `Err(pending)` names those that had not, and why. `None` when
    /// no router is known at all (the caller falls back to discovery's gate).
    async fn wait_all(
        &self,
        job: &str,
        want: bool,
        timeout: Duration,
    ) -> Option<Result<(), String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let targets = self.targets().await;
            if targets.is_empty() {
                return None;
            }
            let mut pending = Vec::new();
            for t in &targets {
                match t {
                    Target::Local(r) => {
                        if r.routed(job) != want {
                            pending.push("this process's router".to_string());
                        }
                    }
                    Target::Remote { id, addr } => match ask(addr, job, &self.credential).await {
                        Ok(routed) if routed == want => {}
                        Ok(_) => pending.push(format!("{id} ({addr})")),
                        Err(why) => pending.push(format!("{id} ({addr}: {why})")),
                    },
                }
            }
            if pending.is_empty() {
                return Some(Ok(()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(Err(pending.join(", ")));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Asks the router whose admin endpoint is `addr` whether it has `job` as a backend.
async fn ask(addr: &str, job: &str, credential: &str) -> Result<bool, String> {
    // The id goes into a request line: only the characters discovery allows in ids.
    slipway_discovery::validate_name("instance id", job).map_err(|e| e.to_string())?;
    if credential.bytes().any(|b| b.is_ascii_control()) {
        return Err("the credential has control characters".into());
    }
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "GET /backends/{job} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {credential}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        (&mut s)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(ASK_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {ASK_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or_default();
    match status.split(' ').nth(1) {
        Some("200") => Ok(true),
        Some("404") => Ok(false),
        _ if status.is_empty() => Err("closed without an answer".into()),
        _ => Err(format!("answered {status:?}")),
    }
}

#[async_trait::async_trait]
impl TrafficGate for RoutersGate {
    async fn routed(&self, job: &JobInfo) {
        if !takes_traffic(job) {
            return;
        }
        let id = &job.job.id;
        match self.wait_all(id, true, ROUTE_TIMEOUT).await {
            None => {
                let fallback = DiscoveryGate {
                    bridge: self.bridge.clone(),
                };
                fallback.routed(job).await
            }
            Some(Ok(())) => {}
            Some(Err(pending)) => tracing::warn!(
                job = %id,
                "not every router had the job within {ROUTE_TIMEOUT:?} (still waiting for {pending}); counting it up anyway"
            ),
        }
    }

    async fn drain(&self, job_id: &str) {
        // Once deregistered, every router stops sending new requests, and reports it drained
        // when the last one in flight is done.
        if !self.bridge.deregister_for_drain(job_id).await {
            return;
        }
        let t0 = std::time::Instant::now();
        match self.wait_all(job_id, false, DRAIN_TIMEOUT).await {
            None => tokio::time::sleep(crate::discovery::gate::DRAIN_GRACE).await,
            Some(Ok(())) => {
                tracing::debug!(job = %job_id, "drained from every router in {:?}", t0.elapsed())
            }
            Some(Err(pending)) => tracing::warn!(
                job = %job_id,
                "routers still had the job after {DRAIN_TIMEOUT:?} ({pending}); stopping it anyway"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::bridge::sync_job;
    use slipway_discovery::{LocalRegistry, NewInstance};
    use std::time::Instant;

    const TOKEN: &str = "the-cluster-token";

    fn job(id: &str) -> JobInfo {
        serde_json::from_value(serde_json::json!({
            "job": {
                "id": id,
                "app_name": "shop",
                "release_id": "r1",
                "process_type": "web",
                "config": { "args": ["httpd"], "stack": "busybox" },
            },
            "status": "running",
            "ip": "10.200.0.2",
        }))
        .unwrap()
    }

    /// A real router with its admin endpoint on loopback, registered as `id`.
    async fn router(registry: &Arc<dyn Registry>, id: &str) -> slipway_router::Router {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = slipway_router::Router::new(slipway_router::Config {
            admin_tokens: vec![TOKEN.into()],
            ..Default::default()
        })
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn({
            let r = r.clone();
            async move { r.serve_admin(l).await }
        });
        registry
            .register(
                ROUTER_SERVICE,
                id,
                &NewInstance {
                    addr,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        r
    }

    fn gate(registry: &Arc<dyn Registry>, bridge: &Arc<Bridge>) -> Arc<RoutersGate> {
        Arc::new(RoutersGate {
            bridge: bridge.clone(),
            registry: registry.clone(),
            credential: TOKEN.into(),
            local: None,
        })
    }

    #[tokio::test]
    async fn a_job_is_up_once_every_router_has_it_and_stopped_once_every_router_dropped_it() {
        // Nothing heartbeats the routers' registrations here: a long TTL keeps them.
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(Duration::from_secs(60)));
        let bridge = Arc::new(Bridge::default());
        let a = router(&registry, "router-a").await;
        a.follow_registry(registry.clone());
        let b = router(&registry, "router-b").await;
        let gate = gate(&registry, &bridge);
        let web = job("j1");
        let waiting = tokio::spawn({
            let (gate, web) = (gate.clone(), web.clone());
            async move { gate.routed(&web).await }
        });
        sync_job(&registry, &bridge, &web, None).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(a.routed("j1"), "router a follows discovery");
        assert!(
            !waiting.is_finished(),
            "up while router b did not have the job"
        );
        b.follow_registry(registry.clone());
        tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("up once both routers have the job")
            .unwrap();
        assert!(b.routed("j1"));

        let t0 = Instant::now();
        gate.drain("j1").await;
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(!a.routed("j1") && !b.routed("j1"));
        assert!(registry.instances("shop-web").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dead_router_is_waited_for_only_until_its_registration_expires() {
        let ttl = Duration::from_secs(2);
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(ttl));
        let bridge = Arc::new(Bridge::default());
        // A router that registered and died: its port answers nothing.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        registry
            .register(
                ROUTER_SERVICE,
                "router-dead",
                &NewInstance {
                    addr: dead_addr,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let gate = gate(&registry, &bridge);
        let web = job("j2");
        sync_job(&registry, &bridge, &web, None).await;
        let t0 = Instant::now();
        gate.drain("j2").await;
        let took = t0.elapsed();
        assert!(
            took >= ttl - Duration::from_millis(200) && took < ttl * 3,
            "drain took {took:?}, the dead router's registration expires after {ttl:?}"
        );
    }

    #[tokio::test]
    async fn a_router_answers_the_gate_only_with_its_token() {
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(Duration::from_secs(60)));
        let _r = router(&registry, "router-t").await;
        let addr = registry.instances(ROUTER_SERVICE).await.unwrap()[0]
            .addr
            .clone();
        assert_eq!(ask(&addr, "j3", TOKEN).await, Ok(false));
        let wrong = ask(&addr, "j3", "not-the-token").await.unwrap_err();
        assert!(wrong.contains("401"), "{wrong}");
        // An id that would break the request line is not sent.
        assert!(ask(&addr, "j3 HTTP/1.1\r\nX: y", TOKEN).await.is_err());
    }
}
