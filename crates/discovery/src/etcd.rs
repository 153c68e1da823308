//! The registry on etcd (cluster mode): every process that registers or watches talks to etcd
//! directly, and instances survive any one Slipway process.
//!
//! - An instance is the key `/slipway/discovery/<service>/<id>`, its value JSON
//!   (`{"addr","proto","meta"}`), under a lease of its own (the TTL rounded up to whole
//!   seconds; etcd raises it to its minimum, 2 s by default).
//! - `register` of a live instance renews its lease (the heartbeat) and rewrites the value
//!   only when address or meta changed (an `update`); of an unknown or expired one, takes a
//!   new lease and creates the key (an `up`, with a new `index`).
//! - `index` is the key's create revision plus the cluster's **epoch base**: unique and
//!   increasing across the cluster, so the leader (lowest index) is the oldest instance, as
//!   everywhere. The base is the clock (µs since 1970) when the first registry used this etcd,
//!   kept in [`EPOCH_BASE_KEY`]. Why: a leader's index is its fencing epoch, and hosts and the
//!   store only ever raise the epoch they hold. The in-process registry's indexes continue
//!   from the clock; a bare create revision (small) would be below every epoch a cluster that
//!   ran on it announced, and after a switch to etcd no leader could ever take over. With the
//!   base, a new etcd (or a fresh one after an etcd loss) starts above every epoch handed out
//!   before it, as long as revisions grow slower than a million a second.
//! - `watch` reads a snapshot at revision R, then watches from R + 1: no event is missed or
//!   reported twice. A watch that breaks (etcd member gone, history compacted) ends the stream;
//!   the caller re-watches and resyncs from a new snapshot, as with every registry.
//!
//! **What "expires within its TTL" means here.** The registry that registered an instance
//! revokes its lease itself when no heartbeat came within the TTL (measured from when the last
//! `register` began), so while the registrant's process lives the instance is `down` at
//! TTL + the time of one etcd write, as with the in-process registry. When that process is gone
//! (crashed, paused, partitioned) etcd expires the lease: TTL (rounded up to seconds) plus up
//! to 0.5 s (etcd checks leases twice a second). One exception is etcd's: when etcd's own raft
//! leader changes, the new leader renews every lease for its full TTL, so an instance of a dead
//! registrant can live up to one TTL after that election — about 2 × TTL in the worst case.
//!
//! So an instance's heartbeats must all go through one registry (one process): the host agent
//! registers its jobs through its own process's registry, an `HttpRegistry` follows one
//! discovery URL. A registry that stops hearing from an instance revokes it even if another
//! process heartbeats it meanwhile (etcd keeps no record of who renewed a lease last).

use crate::{Error, Event, EventKind, Instance, NewInstance, Registry, Result, Watch};
use slipway_etcd::{
    Client, Compare, CompareResult, CompareTarget, EventType, KeyValue, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchRequest,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where instances live in etcd.
pub const PREFIX: &str = "/slipway/discovery/";
/// The cluster's epoch base (module doc): decimal microseconds, written once, never changed.
/// Outside [`PREFIX`], so no watch sees it.
pub const EPOCH_BASE_KEY: &str = "/slipway/epoch-base";
/// Events a watcher may lag behind before it is cut off (and resyncs).
const WATCH_BUFFER: usize = 4096;

/// A [`Registry`] on etcd. Cheap to clone; clones share their registrations' expiry timers.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    ttl: Duration,
    mine: Arc<Mutex<HashMap<String, Mine>>>,
    /// [`EPOCH_BASE_KEY`], read (or set) at the first operation that needs an index.
    base: Arc<tokio::sync::OnceCell<u64>>,
}

/// An instance this registry registered: its lease and the timer that revokes it when no
/// heartbeat comes within the TTL.
struct Mine {
    lease: i64,
    timer: tokio::task::JoinHandle<()>,
}

/// The value stored under an instance's key.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Stored {
    addr: String,
    proto: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

fn unavailable(e: slipway_etcd::Error) -> Error {
    Error::Unavailable(e.to_string())
}

fn key_of(service: &str, id: &str) -> String {
    format!("{PREFIX}{service}/{id}")
}

/// The instance a key-value holds (its index offset by the cluster's epoch `base`), or `None`
/// (with a warning) for a key this registry did not write (a stray key under the prefix must
/// not end every watch).
fn decode(kv: &KeyValue, base: u64) -> Option<Instance> {
    let key = std::str::from_utf8(&kv.key).ok()?;
    let (service, id) = key.strip_prefix(PREFIX)?.split_once('/')?;
    match serde_json::from_slice::<Stored>(&kv.value) {
        Ok(s) => Some(Instance {
            id: id.to_string(),
            service: service.to_string(),
            addr: s.addr,
            proto: s.proto,
            meta: s.meta,
            index: base + kv.create_revision as u64,
        }),
        Err(e) => {
            tracing::warn!(
                key,
                "discovery: ignoring an etcd key that is not an instance: {e}"
            );
            None
        }
    }
}

impl EtcdRegistry {
    /// A registry whose instances expire `ttl` after their last heartbeat (see the module
    /// doc for what that means on etcd).
    pub fn new(client: Client, ttl: Duration) -> EtcdRegistry {
        EtcdRegistry {
            client,
            ttl,
            mine: Arc::new(Mutex::new(HashMap::new())),
            base: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The cluster's epoch base (module doc): read from [`EPOCH_BASE_KEY`], written there first
    /// (now, in µs) by whichever registry asks first; every registry of the cluster reads the
    /// same one.
    pub async fn epoch_base(&self) -> Result<u64> {
        let client = &self.client;
        let base = self
            .base
            .get_or_try_init(|| async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0);
                client
                    .txn(&TxnRequest {
                        compare: vec![Compare::new(
                            EPOCH_BASE_KEY,
                            CompareResult::Equal,
                            CompareTarget::Create(0),
                        )],
                        success: vec![RequestOp::Put(PutRequest {
                            key: EPOCH_BASE_KEY.into(),
                            value: now.to_string().into_bytes(),
                            lease: 0,
                            prev_kv: false,
                        })],
                        failure: vec![],
                    })
                    .await
                    .map_err(unavailable)?;
                let kv = client
                    .get(EPOCH_BASE_KEY)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        Error::Unavailable(format!(
                            "etcd lost {EPOCH_BASE_KEY} just after it was written: try again"
                        ))
                    })?;
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|b| *b < u64::MAX / 2)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "etcd's {EPOCH_BASE_KEY} is not a number of microseconds: it was \
                             not written by Slipway; delete it (a new base is taken from the \
                             clock) and restart the schedulers"
                        ))
                    })
            })
            .await?;
        Ok(*base)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn lease_seconds(&self) -> i64 {
        (self.ttl.as_millis().div_ceil(1000) as i64).max(1)
    }

    /// (Re)arms the timer that revokes `lease` at `deadline` unless a heartbeat re-arms it.
    fn arm(&self, key: &str, lease: i64, deadline: Instant) {
        let client = self.client.clone();
        let mine = Arc::downgrade(&self.mine);
        let k = key.to_string();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            let Some(mine) = mine.upgrade() else { return };
            // Still ours and not re-armed (a heartbeat replaces this task and aborts it).
            if mine
                .lock()
                .unwrap()
                .get(&k)
                .is_none_or(|m| m.lease != lease)
            {
                return;
            }
            tracing::info!(key = %k, "discovery: instance expired (no heartbeat within its TTL)");
            if let Err(e) = client.lease_revoke(lease).await {
                tracing::warn!(key = %k, "discovery: revoking an expired instance's lease: {e}");
            }
            let mut m = mine.lock().unwrap();
            if m.get(&k).is_some_and(|m| m.lease == lease) {
                m.remove(&k);
            }
        });
        let old = self
            .mine
            .lock()
            .unwrap()
            .insert(key.to_string(), Mine { lease, timer });
        if let Some(old) = old {
            old.timer.abort();
        }
    }

    /// One attempt at registering; `None` when a concurrent change made it retry.
    async fn try_register(
        &self,
        key: &str,
        stored: &Stored,
        value: &[u8],
    ) -> Result<Option<(i64, i64)>> {
        let current = self.client.get(key.as_bytes()).await.map_err(unavailable)?;
        if let Some(kv) = current {
            let alive = if kv.lease == 0 {
                false
            } else {
                self.client
                    .lease_keep_alive(kv.lease)
                    .await
                    .map_err(unavailable)?
                    .is_some()
            };
            if alive {
                let same = serde_json::from_slice::<Stored>(&kv.value).is_ok_and(|s| s == *stored);
                if same {
                    return Ok(Some((kv.create_revision, kv.lease)));
                }
                let t = self
                    .client
                    .txn(&TxnRequest {
                        compare: vec![Compare::new(
                            key,
                            CompareResult::Equal,
                            CompareTarget::Mod(kv.mod_revision),
                        )],
                        success: vec![RequestOp::Put(PutRequest {
                            key: key.into(),
                            value: value.to_vec(),
                            lease: kv.lease,
                            prev_kv: false,
                        })],
                        failure: vec![],
                    })
                    .await
                    .map_err(unavailable)?;
                return Ok(t.succeeded.then_some((kv.create_revision, kv.lease)));
            }
            // Expired, but etcd has not deleted the key yet: delete it (an expired instance
            // comes back as a new one, `down` then `up`).
            self.client
                .txn(&TxnRequest {
                    compare: vec![Compare::new(
                        key,
                        CompareResult::Equal,
                        CompareTarget::Mod(kv.mod_revision),
                    )],
                    success: vec![RequestOp::DeleteRange(slipway_etcd::DeleteRangeRequest {
                        key: key.into(),
                        ..Default::default()
                    })],
                    failure: vec![],
                })
                .await
                .map_err(unavailable)?;
            return Ok(None);
        }
        let lease = self
            .client
            .lease_grant(self.lease_seconds())
            .await
            .map_err(unavailable)?;
        let t = self
            .client
            .txn(&TxnRequest {
                compare: vec![Compare::new(
                    key,
                    CompareResult::Equal,
                    CompareTarget::Create(0),
                )],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.into(),
                    value: value.to_vec(),
                    lease: lease.id,
                    prev_kv: false,
                })],
                failure: vec![],
            })
            .await
            .map_err(unavailable)?;
        if !t.succeeded {
            // Someone else created it meanwhile: their lease rules; ours goes.
            let _ = self.client.lease_revoke(lease.id).await;
            return Ok(None);
        }
        Ok(Some((t.header.revision, lease.id)))
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, service: &str, id: &str, new: &NewInstance) -> Result<Instance> {
        crate::validate_name("service name", service)?;
        crate::validate_name("instance id", id)?;
        if new.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Invalid(format!(
                "invalid address {:?}: expected IP:PORT",
                new.addr
            )));
        }
        let started = Instant::now();
        let stored = Stored {
            addr: new.addr.clone(),
            proto: new.proto.clone().unwrap_or_else(|| "tcp".into()),
            meta: new.meta.clone(),
        };
        let value = serde_json::to_vec(&stored).expect("an instance serializes");
        let key = key_of(service, id);
        for _ in 0..5 {
            if let Some((index, lease)) = self.try_register(&key, &stored, &value).await? {
                self.arm(&key, lease, started + self.ttl);
                let base = self.epoch_base().await?;
                return Ok(Instance {
                    id: id.to_string(),
                    service: service.to_string(),
                    addr: stored.addr,
                    proto: stored.proto,
                    meta: stored.meta,
                    index: base + index as u64,
                });
            }
        }
        Err(Error::Unavailable(format!(
            "instance {id:?} of service {service:?} kept changing in etcd while it was being \
             registered (another process registers the same id?): try again"
        )))
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        let key = key_of(service, id);
        if let Some(m) = self.mine.lock().unwrap().remove(&key) {
            m.timer.abort();
        }
        let r = self
            .client
            .delete_range(&slipway_etcd::DeleteRangeRequest {
                key: key.into_bytes(),
                range_end: vec![],
                prev_kv: true,
            })
            .await
            .map_err(unavailable)?;
        let Some(gone) = r.prev_kvs.first() else {
            return Err(Error::NotFound(format!(
                "instance {id:?} of service {service:?} is not registered"
            )));
        };
        if gone.lease != 0 {
            // Its lease served this key only.
            let _ = self.client.lease_revoke(gone.lease).await;
        }
        Ok(())
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>> {
        crate::validate_name("service name", service)?;
        let base = self.epoch_base().await?;
        let r = self
            .client
            .range(&RangeRequest::prefix(format!("{PREFIX}{service}/")))
            .await
            .map_err(unavailable)?;
        let mut list: Vec<Instance> = r.kvs.iter().filter_map(|kv| decode(kv, base)).collect();
        list.sort_by_key(|i| i.index);
        Ok(list)
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watch> {
        if let Some(s) = service {
            crate::validate_name("service name", s)?;
        }
        let prefix = match service {
            Some(s) => format!("{PREFIX}{s}/"),
            None => PREFIX.to_string(),
        };
        let base = self.epoch_base().await?;
        let snap = self
            .client
            .range(&RangeRequest::prefix(prefix.clone()))
            .await
            .map_err(unavailable)?;
        let revision = snap.header.revision;
        let mut state = Followed {
            base,
            ..Default::default()
        };
        for kv in &snap.kvs {
            if let Some(i) = decode(kv, base) {
                state.insert(i);
            }
        }
        let mut events = Vec::new();
        for (name, list) in &state.services {
            events.extend(list.values().map(|i| Event {
                kind: EventKind::Up,
                service: name.clone(),
                instance: Some(i.clone()),
            }));
            if let Some(first) = list.values().next() {
                events.push(Event {
                    kind: EventKind::Leader,
                    service: name.clone(),
                    instance: Some(first.clone()),
                });
            }
        }
        events.push(Event {
            kind: EventKind::Current,
            service: service.unwrap_or_default().to_string(),
            instance: None,
        });
        // From R + 1: nothing between the snapshot and the watch is lost or repeated.
        let mut stream = self
            .client
            .watch(&WatchRequest::prefix(prefix, revision + 1))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER.max(events.len() + 64));
        for ev in events {
            let _ = tx.try_send(ev);
        }
        tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    _ = tx.closed() => return,
                    r = stream.next() => r,
                };
                let resp = match r {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        tracing::info!(
                            endpoint = stream.endpoint(),
                            "discovery: etcd watch ended; watchers resync"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("discovery: etcd watch failed, watchers resync: {e}");
                        return;
                    }
                };
                for e in resp.events {
                    for ev in state.apply(&e) {
                        // A full buffer ends the stream: the watcher resyncs.
                        if tx.try_send(ev).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// What a watch knows: every followed service's instances by index (oldest first).
#[derive(Default)]
struct Followed {
    services: BTreeMap<String, BTreeMap<u64, Instance>>,
    /// The cluster's epoch base, added to every index.
    base: u64,
}

impl Followed {
    fn insert(&mut self, i: Instance) {
        self.services
            .entry(i.service.clone())
            .or_default()
            .insert(i.index, i);
    }

    fn leader(&self, service: &str) -> Option<&Instance> {
        self.services.get(service).and_then(|l| l.values().next())
    }

    /// The discovery events one etcd event makes.
    fn apply(&mut self, e: &slipway_etcd::WatchEvent) -> Vec<Event> {
        let mut out = Vec::new();
        match e.kind {
            EventType::Put => {
                let Some(i) = decode(&e.kv, self.base) else {
                    return out;
                };
                let service = i.service.clone();
                let before = self.leader(&service).map(|l| l.index);
                let known = self
                    .services
                    .get(&service)
                    .and_then(|l| l.get(&i.index))
                    .cloned();
                let kind = match known {
                    Some(k) if k == i => return out,
                    Some(_) => EventKind::Update,
                    None => EventKind::Up,
                };
                self.insert(i.clone());
                out.push(Event {
                    kind,
                    service: service.clone(),
                    instance: Some(i),
                });
                self.leader_change(&service, before, &mut out);
            }
            EventType::Delete => {
                let Some(i) = e.prev_kv.as_ref().and_then(|kv| decode(kv, self.base)) else {
                    return out;
                };
                let service = i.service.clone();
                let before = self.leader(&service).map(|l| l.index);
                let Some(list) = self.services.get_mut(&service) else {
                    return out;
                };
                if list.remove(&i.index).is_none() {
                    return out;
                }
                if list.is_empty() {
                    self.services.remove(&service);
                }
                out.push(Event {
                    kind: EventKind::Down,
                    service: service.clone(),
                    instance: Some(i),
                });
                self.leader_change(&service, before, &mut out);
            }
        }
        out
    }

    fn leader_change(&self, service: &str, before: Option<u64>, out: &mut Vec<Event>) {
        if let Some(now) = self.leader(service)
            && Some(now.index) != before
        {
            out.push(Event {
                kind: EventKind::Leader,
                service: service.to_string(),
                instance: Some(now.clone()),
            });
        }
    }
}
