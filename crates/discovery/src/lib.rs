//! Service discovery (Flynn's discoverd): which instances of which service are up.
//!
//! The host agent registers a job's ports here once its health checks pass and heartbeats
//! them; the router watches it to learn backends. Everything goes through the [`Registry`]
//! trait: [`LocalRegistry`] in-process (embedded mode), [`EtcdRegistry`] on etcd (cluster
//! mode) and [`HttpRegistry`] over the HTTP/SSE API of [`http::router`]. All three pass the
//! same conformance suite (`tests/it/suite.rs`).
//!
//! Rules every implementation keeps:
//! - an instance that is not heartbeated (re-registered) within the TTL (10 s by default, as
//!   Flynn) expires and is reported `down`;
//! - the leader of a service is its oldest instance (lowest `index`); a `leader` event is sent
//!   whenever that changes to another instance;
//! - a watch starts with `up` for every current instance (and `leader`), then `current`, then
//!   live events. A watcher that falls too far behind is disconnected (its stream ends) rather
//!   than slowing everyone down: it re-watches and resyncs from the new snapshot.

#![forbid(unsafe_code)]

pub mod dns;
pub mod etcd;
pub mod http;
mod local;

pub use etcd::EtcdRegistry;
pub use http::HttpRegistry;
pub use local::LocalRegistry;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Flynn's default: instances expire 10 s after their last heartbeat.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// One registered instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Chosen by the registrant (the host agent uses the job id); unique within a service.
    pub id: String,
    pub service: String,
    /// `IP:PORT`.
    pub addr: String,
    /// `tcp` or `udp` (default `tcp`).
    pub proto: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Order of first registration (never reused): the lowest index is the leader.
    pub index: u64,
}

/// What a registrant sends: an [`Instance`] without the parts the registry assigns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstance {
    pub addr: String,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Up,
    Down,
    Update,
    Leader,
    /// The initial snapshot is complete: what follows is live.
    Current,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// Empty for `current` on an all-services watch.
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("discovery is unreachable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A live event stream; it ends when the watcher fell behind or the registry went away.
pub type Watch = tokio::sync::mpsc::Receiver<Event>;

#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers an instance or, if `id` is already registered in `service`, refreshes its
    /// TTL (a heartbeat) and applies changed address or meta (an `update` event).
    async fn register(&self, service: &str, id: &str, new: &NewInstance) -> Result<Instance>;
    /// Removes an instance now (`down`). `NotFound` if it is not registered (or expired).
    async fn deregister(&self, service: &str, id: &str) -> Result<()>;
    /// Up instances, oldest first.
    async fn instances(&self, service: &str) -> Result<Vec<Instance>>;
    /// The oldest instance, if any.
    async fn leader(&self, service: &str) -> Result<Option<Instance>> {
        Ok(self.instances(service).await?.into_iter().next())
    }
    /// Events of one service, or of all services with `None`: snapshot, `current`, live.
    async fn watch(&self, service: Option<&str>) -> Result<Watch>;
}

/// Checks a service name or instance id by the one rule the API's routes also use
/// ([`slipway_types::validate_service_name`]).
pub fn validate_name(what: &str, s: &str) -> Result<()> {
    slipway_types::validate_service_name(what, s).map_err(|e| Error::Invalid(e.message))
}

/// Keeps an instance registered until dropped: heartbeats every TTL/3 (re-registering if it
/// expired meanwhile, e.g. after a pause) and deregisters on drop.
///
/// It knows how long its instance is surely still registered: the lease deadline, TTL less a
/// margin after the last heartbeat that succeeded (counted from before it was sent). A leader
/// stops acting once that passes (a pause, a partition): by then another instance may lead.
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
    registry: Arc<dyn Registry>,
    service: String,
    id: String,
    lease: Arc<std::sync::Mutex<Lease>>,
    ttl: Duration,
}

/// What the last successful heartbeat said.
#[derive(Clone, Debug)]
struct Lease {
    /// When the last successful register was sent.
    sent: tokio::time::Instant,
    /// The instance as the registry returned it (its `index` changes if it expired and was
    /// registered anew).
    instance: Instance,
}

impl Registration {
    pub async fn start(
        registry: Arc<dyn Registry>,
        service: &str,
        id: &str,
        new: NewInstance,
        ttl: Duration,
    ) -> Result<Registration> {
        let sent = tokio::time::Instant::now();
        let instance = registry.register(service, id, &new).await?;
        let lease = Arc::new(std::sync::Mutex::new(Lease { sent, instance }));
        let (r, s, i, l) = (
            registry.clone(),
            service.to_string(),
            id.to_string(),
            lease.clone(),
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                let sent = tokio::time::Instant::now();
                match r.register(&s, &i, &new).await {
                    Ok(instance) => *l.lock().expect("lease") = Lease { sent, instance },
                    Err(e) => {
                        tracing::warn!(service = %s, id = %i, "discovery heartbeat failed: {e}")
                    }
                }
            }
        });
        Ok(Registration {
            task,
            registry,
            service: service.to_string(),
            id: id.to_string(),
            lease,
            ttl,
        })
    }

    /// Until when the instance is surely registered: the last successful heartbeat's send
    /// time + TTL − `margin`.
    pub fn lease_deadline(&self, margin: Duration) -> tokio::time::Instant {
        self.lease.lock().expect("lease").sent + self.ttl.saturating_sub(margin)
    }

    /// The instance as the last successful heartbeat returned it.
    pub fn instance(&self) -> Instance {
        self.lease.lock().expect("lease").instance.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
        let (r, s, i) = (
            self.registry.clone(),
            std::mem::take(&mut self.service),
            std::mem::take(&mut self.id),
        );
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = r.deregister(&s, &i).await;
            });
        }
    }
}
