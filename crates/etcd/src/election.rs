//! Leader election with fencing, on etcd's usual recipe.
//!
//! Every campaigner of `<name>` puts its own key `/slipway/leaders/<name>/<lease id>` under a
//! lease of its own (TTL 10 s by default, renewed every TTL/3). The leader is the key with the
//! lowest create revision under the prefix; the others wait for the keys before theirs to go.
//!
//! **Fencing.** A leader that paused (GC, SIGSTOP, a full disk) or lost etcd for longer than
//! its TTL has lost its lease, and another campaigner may lead — but the paused process does
//! not know it yet. Two guards keep it from acting:
//! - [`Leadership::is_current`] turns false by the local clock alone once the last successful
//!   keep-alive is older than the TTL minus a margin (before etcd can have expired the lease),
//!   or when the key is seen gone; [`Leadership::lost`] resolves then.
//! - [`Leadership::txn_if_leader`] runs writes in an etcd transaction that compares the own
//!   key's create revision with the [`Leadership::epoch`]: once the key is gone (or was
//!   re-created by anyone) the transaction fails on etcd's side, whatever the local clock says.
//!   The epoch is also a fencing token for other stores: it increases with every new
//!   leadership, cluster-wide, so a write stamped with an older epoch can be refused.

use crate::{
    Client, Compare, CompareResult, CompareTarget, Error, EventType, KeyValue, PutRequest,
    RangeRequest, RequestOp, Result, SortOrder, SortTarget, TxnRequest, TxnResponse, WatchRequest,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where leadership keys live.
pub const PREFIX: &str = "/slipway/leaders/";
/// The default lease TTL of a campaigner.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// An election for one role (`scheduler`, `blob-gc`, …).
#[derive(Clone, Debug)]
pub struct Election {
    client: Client,
    name: String,
    ttl: Duration,
}

impl Election {
    /// An election named `name` (letters, digits, `-`, `_`, `.`) with the default TTL.
    pub fn new(client: Client, name: &str) -> Result<Election> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Error::Config(format!(
                "invalid election name {name:?}: use 1-63 letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Election {
            client,
            name: name.to_string(),
            ttl: DEFAULT_TTL,
        })
    }

    /// Another lease TTL (whole seconds; etcd raises one below its minimum, 2 s by default).
    pub fn with_ttl(mut self, ttl: Duration) -> Election {
        self.ttl = ttl;
        self
    }

    fn prefix(&self) -> String {
        format!("{PREFIX}{}/", self.name)
    }

    /// The current leader's key (its value is what the leader campaigned with; its create
    /// revision is the leader's epoch), if anyone campaigns.
    pub async fn leader(&self) -> Result<Option<KeyValue>> {
        let mut req = RangeRequest::prefix(self.prefix());
        req.sort_target = SortTarget::Create;
        req.sort_order = SortOrder::Ascend;
        req.limit = 1;
        Ok(self.client.range(&req).await?.kvs.into_iter().next())
    }

    /// Campaigns with `value` (who this is: an id, an address) and returns once this process
    /// leads. Runs until then; dropping the future gives up (the key is revoked). A
    /// [`Leadership`] dropped or [`resigned`](Leadership::resign) steps down at once.
    pub async fn campaign(&self, value: &str) -> Result<Leadership> {
        let secs = (self.ttl.as_millis().div_ceil(1000) as i64).max(1);
        // The lease's TTL runs at etcd from when it granted it, which may be long before its
        // answer arrives (a slow member, a retry on the next one): the local deadline counts
        // from before the grant was asked, never from after.
        let sent = Instant::now();
        let lease = self.client.lease_grant(secs).await?;
        // Local decisions use the TTL etcd actually granted.
        let ttl = Duration::from_secs(lease.ttl.max(1) as u64);
        let key = format!("{}{:016x}", self.prefix(), lease.id).into_bytes();
        let t = self
            .client
            .txn(&TxnRequest {
                compare: vec![Compare::new(
                    key.clone(),
                    CompareResult::Equal,
                    CompareTarget::Create(0),
                )],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: value.as_bytes().to_vec(),
                    lease: lease.id,
                    prev_kv: false,
                })],
                failure: vec![],
            })
            .await?;
        if !t.succeeded {
            let _ = self.client.lease_revoke(lease.id).await;
            return Err(Error::Refused {
                endpoint: self.client.endpoints().join(","),
                call: "campaign",
                code: -1,
                message: format!(
                    "the key {} already exists: another campaigner holds lease {:x}?",
                    String::from_utf8_lossy(&key),
                    lease.id
                ),
            });
        }
        let epoch = t.header.revision;
        let shared = Arc::new(Shared {
            deadline: Mutex::new(sent + ttl.saturating_sub(margin(ttl))),
            lost: watch::channel(false).0,
        });
        // Keep-alives start now: waiting for the leaders before us may take longer than a TTL.
        let keeper = tokio::spawn(keep_alive(
            self.client.clone(),
            lease.id,
            ttl,
            shared.clone(),
        ));
        let watcher = tokio::spawn(watch_own_key(
            self.client.clone(),
            key.clone(),
            epoch,
            shared.clone(),
        ));
        let leadership = Leadership {
            client: self.client.clone(),
            name: self.name.clone(),
            key,
            lease: lease.id,
            epoch,
            shared,
            tasks: [keeper, watcher],
        };
        leadership.wait_for_turn(&self.prefix()).await?;
        tracing::info!(election = %self.name, epoch, "won the election");
        Ok(leadership)
    }
}

/// How long before the lease's TTL runs out a leader stops trusting it: clock rates differ
/// a little, and etcd may already have counted from a later instant than ours.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(200))
}

struct Shared {
    /// Past this instant the lease may have expired: not the leader any more.
    deadline: Mutex<Instant>,
    /// Set (true) once leadership is known lost; never reset.
    lost: watch::Sender<bool>,
}

impl Shared {
    fn lose(&self, why: &str) {
        if !*self.lost.borrow() {
            tracing::warn!("election: leadership lost: {why}");
        }
        self.lost.send_replace(true);
    }
}

/// Renews the lease every TTL/3; marks the leadership lost when the lease is gone or no
/// keep-alive succeeded in time. Ends then.
async fn keep_alive(client: Client, lease: i64, ttl: Duration, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let sent = Instant::now();
        match client.lease_keep_alive(lease).await {
            Ok(Some(granted)) => {
                let ttl = Duration::from_secs(granted.max(1) as u64).min(ttl);
                let mut d = shared.deadline.lock().unwrap();
                *d = (*d).max(sent + ttl.saturating_sub(margin(ttl)));
            }
            Ok(None) => return shared.lose("its lease expired"),
            Err(e) => tracing::warn!("election: keep-alive failed (retrying): {e}"),
        }
        if Instant::now() >= *shared.deadline.lock().unwrap() {
            return shared.lose("no keep-alive succeeded within the TTL");
        }
    }
}

/// Watches the own key: its deletion (revoked, deleted by an operator) means leadership is
/// lost at once, before the next keep-alive would tell. A broken watch is restarted.
async fn watch_own_key(client: Client, key: Vec<u8>, epoch: i64, shared: Arc<Shared>) {
    let mut from = epoch + 1;
    loop {
        let req = WatchRequest {
            key: key.clone(),
            start_revision: from,
            ..Default::default()
        };
        match client.watch(&req).await {
            Ok(mut w) => loop {
                match w.next().await {
                    Ok(Some(r)) => {
                        if r.events.iter().any(|e| e.kind == EventType::Delete) {
                            return shared.lose("its key was deleted");
                        }
                        from = r.header.revision + 1;
                    }
                    Ok(None) => break,
                    Err(Error::Compacted { .. }) => {
                        // History gone: read the key instead.
                        match client.get(key.clone()).await {
                            Ok(Some(kv)) if kv.create_revision == epoch => {}
                            Ok(_) => return shared.lose("its key is gone"),
                            Err(_) => {}
                        }
                        from = 0;
                        break;
                    }
                    Err(_) => break,
                }
            },
            Err(e) => tracing::debug!("election: watching the own key: {e}"),
        }
        if *shared.lost.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// This process's leadership (or candidacy, until [`Election::campaign`] returns it).
pub struct Leadership {
    client: Client,
    name: String,
    key: Vec<u8>,
    lease: i64,
    epoch: i64,
    shared: Arc<Shared>,
    /// The keep-alive and the own key's watch.
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .field("current", &self.is_current())
            .finish()
    }
}

impl Leadership {
    /// The own key's create revision: unique, and higher for every later leadership
    /// cluster-wide. A fencing token.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// True while this process may act as leader: the lease cannot have expired yet by the
    /// local clock and the key was not seen gone.
    pub fn is_current(&self) -> bool {
        !*self.shared.lost.borrow() && Instant::now() < *self.shared.deadline.lock().unwrap()
    }

    /// Resolves once leadership is lost (at the latest when the local deadline passes).
    pub async fn lost(&self) {
        let mut rx = self.shared.lost.subscribe();
        loop {
            let deadline = *self.shared.deadline.lock().unwrap();
            if *rx.borrow_and_update() || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// The compare that holds only while this leadership lasts (the own key exists with the
    /// epoch as its create revision), for callers building their own transactions.
    pub fn fence(&self) -> Compare {
        Compare::new(
            self.key.clone(),
            CompareResult::Equal,
            CompareTarget::Create(self.epoch),
        )
    }

    /// Runs `ops` atomically if and only if this process still leads: refused locally when
    /// [`Self::is_current`] is false, and on etcd's side by [`Self::fence`].
    pub async fn txn_if_leader(&self, ops: Vec<RequestOp>) -> Result<TxnResponse> {
        if !self.is_current() {
            return Err(self.not_leader());
        }
        let t = self
            .client
            .txn(&TxnRequest {
                compare: vec![self.fence()],
                success: ops,
                failure: vec![],
            })
            .await?;
        if !t.succeeded {
            self.shared.lose("a fenced transaction found its key gone");
            return Err(self.not_leader());
        }
        Ok(t)
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            name: self.name.clone(),
            epoch: self.epoch,
        }
    }

    /// Steps down now: the lease (and so the key) is revoked and the next campaigner leads.
    pub async fn resign(self) -> Result<()> {
        self.tasks.iter().for_each(|t| t.abort());
        self.shared.lose("resigned");
        self.client.lease_revoke(self.lease).await
    }

    /// Waits until no key under `prefix` is older than the own one.
    async fn wait_for_turn(&self, prefix: &str) -> Result<()> {
        loop {
            let mut req = RangeRequest::prefix(prefix.to_string());
            req.sort_target = SortTarget::Create;
            req.sort_order = SortOrder::Ascend;
            let r = self.client.range(&req).await?;
            if !r.kvs.iter().any(|kv| kv.key == self.key) {
                return Err(self.not_leader());
            }
            let Some(before) = r
                .kvs
                .iter()
                .filter(|kv| kv.create_revision < self.epoch)
                .max_by_key(|kv| kv.create_revision)
            else {
                return Ok(());
            };
            // Wait for the one just before ours to go (no herd: each waits for one key).
            let mut w = self
                .client
                .watch(&WatchRequest {
                    key: before.key.clone(),
                    start_revision: r.header.revision + 1,
                    ..Default::default()
                })
                .await?;
            let mut lost = self.shared.lost.subscribe();
            loop {
                tokio::select! {
                    r = w.next() => match r? {
                        Some(r) if r.events.iter().any(|e| e.kind == EventType::Delete) => break,
                        Some(_) => {}
                        // The watch broke: look again.
                        None => break,
                    },
                    _ = lost.wait_for(|l| *l) => return Err(self.not_leader()),
                }
            }
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
        self.shared.lose("dropped");
        // Step down at once rather than at the lease's expiry.
        let (client, lease) = (self.client.clone(), self.lease);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}
