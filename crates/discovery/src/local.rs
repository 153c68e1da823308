//! The in-process registry (embedded mode): a map under one mutex, an expiry task, and one
//! bounded channel per watcher.

use crate::{Error, Event, EventKind, Instance, NewInstance, Registry, Result, Watch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events a watcher may lag behind before it is cut off (and resyncs).
const WATCH_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct LocalRegistry {
    inner: Arc<Mutex<State>>,
    ttl: Duration,
}

struct Entry {
    inst: Instance,
    expires: Instant,
}

#[derive(Default)]
struct State {
    /// service → instances in registration order (oldest first, so `[0]` is the leader).
    services: HashMap<String, Vec<Entry>>,
    next_index: u64,
    watchers: Vec<(Option<String>, mpsc::Sender<Event>)>,
}

impl State {
    fn emit(&mut self, ev: Event) {
        self.watchers.retain(|(filter, tx)| {
            if filter.as_ref().is_some_and(|f| *f != ev.service) {
                return !tx.is_closed();
            }
            // A full buffer drops the watcher: it sees its stream end and resyncs.
            tx.try_send(ev.clone()).is_ok()
        });
    }

    fn leader_of(&self, service: &str) -> Option<Instance> {
        self.services
            .get(service)
            .and_then(|v| v.first())
            .map(|e| e.inst.clone())
    }

    /// Removes `id` from `service` and reports `down` (and a new leader if it was the leader).
    fn remove(&mut self, service: &str, id: &str) -> bool {
        let Some(list) = self.services.get_mut(service) else {
            return false;
        };
        let Some(pos) = list.iter().position(|e| e.inst.id == id) else {
            return false;
        };
        let gone = list.remove(pos).inst;
        let empty = list.is_empty();
        if empty {
            self.services.remove(service);
        }
        self.emit(Event {
            kind: EventKind::Down,
            service: service.to_string(),
            instance: Some(gone),
        });
        if pos == 0
            && let Some(leader) = self.leader_of(service)
        {
            self.emit(Event {
                kind: EventKind::Leader,
                service: service.to_string(),
                instance: Some(leader),
            });
        }
        true
    }
}

impl LocalRegistry {
    /// A registry whose instances expire `ttl` after their last heartbeat. Needs a tokio
    /// runtime: it starts the expiry task, which stops when the last clone is dropped.
    pub fn new(ttl: Duration) -> LocalRegistry {
        // Indexes continue from the clock (microseconds), not from 0: a leader's index is its
        // fencing epoch (docs/scheduler.md), which must keep rising when discovery restarts.
        let next_index = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let reg = LocalRegistry {
            inner: Arc::new(Mutex::new(State {
                next_index,
                ..State::default()
            })),
            ttl,
        };
        let weak: Weak<Mutex<State>> = Arc::downgrade(&reg.inner);
        // Check often enough that an instance never outlives its TTL by more than 10%.
        let period = (ttl / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let mut st = inner.lock().unwrap();
                let now = Instant::now();
                let expired: Vec<(String, String)> = st
                    .services
                    .iter()
                    .flat_map(|(s, v)| {
                        v.iter()
                            .filter(|e| e.expires <= now)
                            .map(|e| (s.clone(), e.inst.id.clone()))
                    })
                    .collect();
                for (s, id) in expired {
                    tracing::info!(service = %s, id = %id, "discovery: instance expired (no heartbeat)");
                    st.remove(&s, &id);
                }
            }
        });
        reg
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[async_trait::async_trait]
impl Registry for LocalRegistry {
    async fn register(&self, service: &str, id: &str, new: &NewInstance) -> Result<Instance> {
        crate::validate_name("service name", service)?;
        crate::validate_name("instance id", id)?;
        if new.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Invalid(format!(
                "invalid address {:?}: expected IP:PORT",
                new.addr
            )));
        }
        let proto = new.proto.clone().unwrap_or_else(|| "tcp".into());
        let expires = Instant::now() + self.ttl;
        let mut st = self.inner.lock().unwrap();
        let list = st.services.entry(service.to_string()).or_default();
        if let Some(e) = list.iter_mut().find(|e| e.inst.id == id) {
            e.expires = expires;
            if e.inst.addr == new.addr && e.inst.proto == proto && e.inst.meta == new.meta {
                return Ok(e.inst.clone());
            }
            e.inst.addr = new.addr.clone();
            e.inst.proto = proto;
            e.inst.meta = new.meta.clone();
            let inst = e.inst.clone();
            st.emit(Event {
                kind: EventKind::Update,
                service: service.to_string(),
                instance: Some(inst.clone()),
            });
            return Ok(inst);
        }
        st.next_index += 1;
        let inst = Instance {
            id: id.to_string(),
            service: service.to_string(),
            addr: new.addr.clone(),
            proto,
            meta: new.meta.clone(),
            index: st.next_index,
        };
        let list = st.services.entry(service.to_string()).or_default();
        list.push(Entry {
            inst: inst.clone(),
            expires,
        });
        let first = list.len() == 1;
        st.emit(Event {
            kind: EventKind::Up,
            service: service.to_string(),
            instance: Some(inst.clone()),
        });
        if first {
            st.emit(Event {
                kind: EventKind::Leader,
                service: service.to_string(),
                instance: Some(inst.clone()),
            });
        }
        Ok(inst)
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        if self.inner.lock().unwrap().remove(service, id) {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "instance {id:?} of service {service:?} is not registered"
            )))
        }
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>> {
        let st = self.inner.lock().unwrap();
        Ok(st
            .services
            .get(service)
            .map(|v| v.iter().map(|e| e.inst.clone()).collect())
            .unwrap_or_default())
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watch> {
        let mut st = self.inner.lock().unwrap();
        let mut snapshot = Vec::new();
        for (name, list) in &st.services {
            if service.is_some_and(|s| s != name) {
                continue;
            }
            for e in list {
                snapshot.push(Event {
                    kind: EventKind::Up,
                    service: name.clone(),
                    instance: Some(e.inst.clone()),
                });
            }
            if let Some(first) = list.first() {
                snapshot.push(Event {
                    kind: EventKind::Leader,
                    service: name.clone(),
                    instance: Some(first.inst.clone()),
                });
            }
        }
        snapshot.push(Event {
            kind: EventKind::Current,
            service: service.unwrap_or_default().to_string(),
            instance: None,
        });
        let (tx, rx) = mpsc::channel(WATCH_BUFFER.max(snapshot.len() + 64));
        for ev in snapshot {
            let _ = tx.try_send(ev);
        }
        // Registered under the same lock as the snapshot: no event falls between them.
        st.watchers.push((service.map(str::to_string), tx));
        Ok(rx)
    }
}
