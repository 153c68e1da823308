//! Backends: the up instances of each service as discovery reports them, their in-flight
//! counts (for power-of-two-choices and draining) and their pools of idle upstream connections.

use hyper::client::conn::http1::SendRequest;
use slipway_discovery::{EventKind, Registry};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// The request body the router sends upstream (the client's body, streamed, with limits).
pub type UpBody = crate::body::ReqBody;

/// Idle keep-alive connections kept per backend and pool slot; more are closed after use.
const MAX_IDLE: usize = 256;

/// Pools per backend: each thread uses its own slot (threads beyond this share), so a
/// connection is reused by the thread whose runtime drives it. One shared pool made half of
/// the requests of a runtime-per-core router hop threads twice (an eventfd wake-up each way):
/// 1.5 extra `write` syscalls per request, ≈25 % of its req/s (`docs/benchmarks.md`).
const POOL_SLOTS: usize = 16;

/// This thread's pool slot, handed out round-robin on first use.
pub fn pool_slot() -> usize {
    thread_pool().0
}

/// This thread's pool slot, and whether it may take other slots' idle connections: only on
/// a multi-thread runtime, whose tasks move between threads anyway. On a current-thread
/// runtime (the router's runtime per core) a connection taken from another thread's slot is
/// driven by that thread's runtime: every use wakes it through its eventfd and back. With
/// stealing, 15 % of requests did so (0.29 extra `write` per request); without, a thread
/// opens the few connections it needs once and keeps them.
fn thread_pool() -> (usize, bool) {
    use std::sync::atomic::AtomicUsize;
    use tokio::runtime::{Handle, RuntimeFlavor};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: (usize, bool) = (
            NEXT.fetch_add(1, Ordering::Relaxed) % POOL_SLOTS,
            Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() != RuntimeFlavor::CurrentThread),
        );
    }
    SLOT.with(|s| *s)
}

pub struct Backend {
    pub id: String,
    pub service: String,
    pub addr: SocketAddr,
    pub in_flight: AtomicUsize,
    /// Set when discovery reports it down: no new requests; `backend-drained` at 0 in flight.
    pub removed: AtomicBool,
    /// Idle connections by pool slot ([`pool_slot`]): each lock is taken by one thread, so
    /// it is never contended.
    idle: [Mutex<Vec<SendRequest<UpBody>>>; POOL_SLOTS],
    /// Idle connections of the plain HTTP/1.1 path ([`crate::h1`]), by pool slot likewise.
    raw_idle: [Mutex<Vec<RawConn>>; POOL_SLOTS],
    /// Where `backend-drained` goes when its last request ends.
    events: broadcast::Sender<RouterEvent>,
}

impl Backend {
    pub fn new(
        id: &str,
        service: &str,
        addr: SocketAddr,
        events: broadcast::Sender<RouterEvent>,
    ) -> Backend {
        Backend {
            id: id.into(),
            service: service.into(),
            addr,
            in_flight: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
            idle: Default::default(),
            raw_idle: Default::default(),
            events,
        }
    }

    /// A pooled connection that can take a request now, if any: this thread's own first,
    /// then, on a multi-thread runtime, another thread's (its tasks move between threads;
    /// without this it opened a pool's worth of extra connections). Connections still finishing
    /// their previous exchange stay in the pool; closed ones are dropped.
    pub fn take_idle(&self) -> Option<Pooled> {
        let (own, steal) = thread_pool();
        let slots = if steal { POOL_SLOTS } else { 1 };
        (0..slots).map(|i| (own + i) % POOL_SLOTS).find_map(|home| {
            let mut idle = self.idle[home].lock().unwrap();
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                if idle[i].is_ready() {
                    let sender = idle.swap_remove(i);
                    return Some(Pooled { sender, home });
                }
                if idle[i].is_closed() {
                    idle.swap_remove(i);
                }
            }
            None
        })
    }

    /// Returns a connection to its home slot's pool (called when its response body has been
    /// read to the end, so no task has to wait for it).
    pub fn put_idle(&self, conn: Pooled) {
        if self.removed.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle[conn.home].lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn.sender);
        }
    }
}

impl Backend {
    /// An idle connection of the plain HTTP/1.1 path, if one is still open: the same slot
    /// rules as [`Backend::take_idle`]. The check is a `try_read`, which makes no system
    /// call unless the reactor saw the socket turn readable since its last short read (an
    /// idle backend connection only does when the backend closed it or sent garbage).
    pub fn take_raw(&self) -> Option<RawConn> {
        let (own, steal) = thread_pool();
        let slots = if steal { POOL_SLOTS } else { 1 };
        (0..slots).map(|i| (own + i) % POOL_SLOTS).find_map(|home| {
            let mut idle = self.raw_idle[home].lock().unwrap();
            while let Some(c) = idle.pop() {
                match c.io.try_read(&mut [0u8; 1]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(c),
                    _ => {} // closed, failed, or bytes nobody asked for: not reusable
                }
            }
            None
        })
    }

    /// Back to its home slot after a complete exchange.
    pub fn put_raw(&self, conn: RawConn) {
        if self.removed.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.raw_idle[conn.home].lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// A keep-alive connection to a backend for the plain HTTP/1.1 path: the socket and its
/// read buffer, which outlives requests so that reading a response allocates nothing.
pub struct RawConn {
    pub io: tokio::net::TcpStream,
    pub buf: bytes::BytesMut,
    home: usize,
}

impl RawConn {
    /// A connection just made on this thread.
    pub fn new(io: tokio::net::TcpStream) -> RawConn {
        RawConn {
            io,
            buf: bytes::BytesMut::with_capacity(crate::h1::HEAD_READ),
            home: pool_slot(),
        }
    }
}

/// An upstream connection and the pool slot of the thread whose runtime drives it (where it
/// goes back to, whoever used it).
pub struct Pooled {
    pub sender: SendRequest<UpBody>,
    pub home: usize,
}

impl Pooled {
    /// A connection just made on this thread.
    pub fn new(sender: SendRequest<UpBody>) -> Pooled {
        Pooled {
            sender,
            home: pool_slot(),
        }
    }
}

/// Counts a request against its backend until dropped (when the response body is done).
/// Holds nothing but the backend: every shared reference counted per request is a cache
/// line the cores fight over.
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn new(backend: Arc<Backend>) -> InFlight {
        // SeqCst with `retire`: either it sees this request, or the caller sees `removed`.
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { backend }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.backend.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.backend.removed.load(Ordering::Acquire) {
            let _ = self
                .backend
                .events
                .send(RouterEvent::drained(&self.backend));
        }
    }
}

/// What the router reports to whoever listens (the scheduler waits for `backend-drained`
/// before stopping a job, and for `backend-up` before counting a new job as up).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterEvent {
    pub kind: &'static str,
    pub service: String,
    pub instance: String,
    pub addr: String,
}

impl RouterEvent {
    fn new(kind: &'static str, b: &Backend) -> RouterEvent {
        RouterEvent {
            kind,
            service: b.service.clone(),
            instance: b.id.clone(),
            addr: b.addr.to_string(),
        }
    }
    fn drained(b: &Backend) -> RouterEvent {
        RouterEvent::new("backend-drained", b)
    }
}

/// One service's up backends and leader, replaced as a whole on change.
#[derive(Default, Clone)]
pub struct ServiceBackends {
    pub all: Vec<Arc<Backend>>,
    pub leader: Option<Arc<Backend>>,
}

impl ServiceBackends {
    /// The backends a route may send to: the leader alone for a leader route.
    pub fn candidates(&self, leader_only: bool) -> &[Arc<Backend>] {
        if leader_only {
            self.leader.as_slice()
        } else {
            &self.all
        }
    }
}

/// After discovery comes back (a watch opened again after a broken one), how long a backend
/// its new snapshot lacks keeps its traffic, waiting to be registered again. A restarted
/// server's discovery starts empty: the jobs it re-adopts, and those of the hosts that
/// register again (within their 10 s TTL), come in over the next seconds; retiring their
/// backends at the snapshot answered 503 meanwhile. An instance reported down is retired at
/// once, and one that really went away just fails to connect (the request goes to another).
pub const HOLD_AFTER_RECONNECT: Duration = Duration::from_secs(20);

pub struct Backends {
    services: RwLock<HashMap<String, Arc<ServiceBackends>>>,
    /// Set at discovery's first snapshot: see `Router::wait_loaded`.
    pub loaded: tokio::sync::watch::Sender<bool>,
}

impl Default for Backends {
    fn default() -> Backends {
        Backends {
            services: RwLock::default(),
            loaded: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// Backends kept after a reconnect though missing from discovery's snapshot, by (service,
/// instance), with when they are retired unless discovery reports them up by then.
type Held = HashMap<(String, String), tokio::time::Instant>;

impl Backends {
    pub fn get(&self, service: &str) -> Option<Arc<ServiceBackends>> {
        self.services.read().unwrap().get(service).cloned()
    }

    /// The instances the router sends new requests to now.
    pub fn up_ids(&self) -> std::collections::HashSet<String> {
        let map = self.services.read().unwrap();
        map.values()
            .flat_map(|s| s.all.iter())
            .filter(|b| !b.removed.load(Ordering::Relaxed))
            .map(|b| b.id.clone())
            .collect()
    }

    fn update(&self, service: &str, f: impl FnOnce(&mut ServiceBackends)) {
        let mut map = self.services.write().unwrap();
        let mut s = map.get(service).map(|s| (**s).clone()).unwrap_or_default();
        f(&mut s);
        if s.all.is_empty() {
            map.remove(service);
        } else {
            map.insert(service.to_string(), Arc::new(s));
        }
    }

    fn remove(&self, service: &str, id: &str, events: &broadcast::Sender<RouterEvent>) {
        self.update(service, |s| {
            if let Some(pos) = s.all.iter().position(|b| b.id == id) {
                let b = s.all.remove(pos);
                retire(&b, events);
            }
            if s.leader.as_ref().is_some_and(|l| l.id == id) {
                s.leader = None;
            }
        });
    }

    /// Follows a registry forever: a full resync from each watch's snapshot, then live events.
    /// While discovery is away (no watch), every backend is kept; after it comes back, the
    /// ones its snapshot lacks are held for [`HOLD_AFTER_RECONNECT`].
    pub async fn follow(
        self: Arc<Self>,
        registry: Arc<dyn Registry>,
        events: broadcast::Sender<RouterEvent>,
    ) {
        self.follow_holding(registry, events, HOLD_AFTER_RECONNECT)
            .await
    }

    /// [`Backends::follow`], holding missing backends for `hold` after a reconnect.
    async fn follow_holding(
        self: Arc<Self>,
        registry: Arc<dyn Registry>,
        events: broadcast::Sender<RouterEvent>,
        hold: Duration,
    ) {
        let mut held = Held::new();
        let mut synced_once = false;
        loop {
            match registry.watch(None).await {
                Ok(mut w) => {
                    let mut snapshot: HashMap<String, ServiceBackends> = HashMap::new();
                    let mut current = false;
                    loop {
                        let expiry = held.values().min().copied();
                        let ev = tokio::select! {
                            ev = w.recv() => match ev {
                                Some(ev) => ev,
                                None => break,
                            },
                            _ = sleep_until(expiry), if expiry.is_some() => {
                                self.expire(&mut held, &events);
                                continue;
                            }
                        };
                        let Some(inst) = ev.instance.as_ref() else {
                            if ev.kind == EventKind::Current {
                                current = true;
                                let fresh = std::mem::take(&mut snapshot);
                                // The first snapshot is the truth; a later one may be a
                                // restarted discovery's, not yet complete.
                                let held = synced_once.then_some((&mut held, hold));
                                self.resync(fresh, &events, held);
                                synced_once = true;
                                self.loaded.send_replace(true);
                            }
                            continue;
                        };
                        if current {
                            // Reported again (up, or down): no longer held.
                            held.remove(&(ev.service.clone(), inst.id.clone()));
                        }
                        let Ok(addr) = inst.addr.parse::<SocketAddr>() else {
                            continue;
                        };
                        if current && matches!(ev.kind, EventKind::Up | EventKind::Update) {
                            // Its address is another instance's now: not to be held on.
                            self.release_held_at(&mut held, addr, &inst.id, &events);
                        }
                        if !current {
                            let s = snapshot.entry(ev.service.clone()).or_default();
                            match ev.kind {
                                EventKind::Up => s.all.push(Arc::new(Backend::new(
                                    &inst.id,
                                    &ev.service,
                                    addr,
                                    events.clone(),
                                ))),
                                EventKind::Leader => {
                                    s.leader = s.all.iter().find(|b| b.id == inst.id).cloned()
                                }
                                _ => {}
                            }
                            continue;
                        }
                        match ev.kind {
                            EventKind::Up | EventKind::Update => {
                                let b = Arc::new(Backend::new(
                                    &inst.id,
                                    &ev.service,
                                    addr,
                                    events.clone(),
                                ));
                                let mut added = false;
                                self.update(&ev.service, |s| {
                                    if let Some(pos) = s.all.iter().position(|x| x.id == inst.id) {
                                        if s.all[pos].addr == addr {
                                            return;
                                        }
                                        retire(&s.all[pos], &events);
                                        s.all[pos] = b.clone();
                                    } else {
                                        s.all.push(b.clone());
                                    }
                                    added = true;
                                });
                                // Only once requests can reach it: a listener may act on it.
                                if added {
                                    let _ = events.send(RouterEvent::new("backend-up", &b));
                                }
                            }
                            EventKind::Down => self.remove(&ev.service, &inst.id, &events),
                            EventKind::Leader => self.update(&ev.service, |s| {
                                s.leader = s.all.iter().find(|b| b.id == inst.id).cloned()
                            }),
                            EventKind::Current => {}
                        }
                    }
                    tracing::warn!("router: discovery watch ended; resyncing");
                }
                Err(e) => tracing::warn!("router: cannot watch discovery: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Retires the held backends at `addr` but `id`: discovery reports another instance there
    /// (the address was given to another job), so the held one is surely gone.
    fn release_held_at(
        &self,
        held: &mut Held,
        addr: SocketAddr,
        id: &str,
        events: &broadcast::Sender<RouterEvent>,
    ) {
        let gone: Vec<(String, String)> = held
            .keys()
            .filter(|(service, held_id)| {
                held_id != id
                    && self
                        .get(service)
                        .is_some_and(|s| s.all.iter().any(|b| b.id == *held_id && b.addr == addr))
            })
            .cloned()
            .collect();
        for key in gone {
            held.remove(&key);
            self.remove(&key.0, &key.1, events);
        }
    }

    /// Retires the held backends whose time is up (discovery did not report them again).
    fn expire(&self, held: &mut Held, events: &broadcast::Sender<RouterEvent>) {
        let now = tokio::time::Instant::now();
        let due: Vec<(String, String)> = held
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            held.remove(&key);
            tracing::info!(
                service = %key.0,
                instance = %key.1,
                "router: backend not registered again since discovery's return; retired"
            );
            self.remove(&key.0, &key.1, events);
        }
    }

    /// Replaces everything with a fresh snapshot, keeping the `Backend` (and its pool and
    /// in-flight count) of instances that are still there. With `hold` (a snapshot after a
    /// reconnect), the ones it lacks are kept too, and put in `hold` (keeping an earlier
    /// deadline) instead of being retired.
    fn resync(
        &self,
        fresh: HashMap<String, ServiceBackends>,
        events: &broadcast::Sender<RouterEvent>,
        hold: Option<(&mut Held, Duration)>,
    ) {
        let mut map = self.services.write().unwrap();
        let old = std::mem::take(&mut *map);
        let mut fresh = fresh;
        if let Some((held, hold)) = hold {
            let until = tokio::time::Instant::now() + hold;
            let mut kept = 0;
            // Addresses the snapshot gives to instances: a missing one found at one of them
            // is gone (its address went to another job), not held.
            let taken: std::collections::HashSet<SocketAddr> = fresh
                .values()
                .flat_map(|s| s.all.iter().map(|b| b.addr))
                .collect();
            for (name, s) in &old {
                let f = fresh.entry(name.clone()).or_default();
                for b in &s.all {
                    let reported = f.all.iter().any(|x| x.id == b.id);
                    if b.removed.load(Ordering::Relaxed) || reported || taken.contains(&b.addr) {
                        continue;
                    }
                    f.all.push(b.clone());
                    held.entry((name.clone(), b.id.clone())).or_insert(until);
                    kept += 1;
                }
                if f.leader.is_none() {
                    f.leader.clone_from(&s.leader);
                }
            }
            fresh.retain(|_, s| !s.all.is_empty());
            if kept > 0 {
                tracing::info!(
                    "router: discovery is back; keeping {kept} backend(s) its snapshot lacks for up to {hold:?} while they register again"
                );
            }
        }
        let mut fresh_ids = std::collections::HashSet::new();
        for (name, mut s) in fresh {
            let prev = old.get(&name);
            for b in s.all.iter_mut() {
                fresh_ids.insert((name.clone(), b.id.clone()));
                if let Some(p) =
                    prev.and_then(|p| p.all.iter().find(|x| x.id == b.id && x.addr == b.addr))
                {
                    *b = p.clone();
                } else {
                    let _ = events.send(RouterEvent::new("backend-up", b));
                }
            }
            if let Some(l) = s.leader.take() {
                s.leader = s.all.iter().find(|b| b.id == l.id).cloned();
            }
            map.insert(name, Arc::new(s));
        }
        for (name, s) in old {
            for b in &s.all {
                if !fresh_ids.contains(&(name.clone(), b.id.clone())) {
                    retire(b, events);
                }
            }
        }
    }
}

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stops new traffic to a backend; reports `backend-down`, and `backend-drained` once it has
/// nothing in flight (now, or when its last request finishes: see [`InFlight`]).
fn retire(b: &Arc<Backend>, events: &broadcast::Sender<RouterEvent>) {
    b.removed.store(true, Ordering::SeqCst);
    for slot in &b.idle {
        slot.lock().unwrap().clear();
    }
    let _ = events.send(RouterEvent::new("backend-down", b));
    if b.in_flight.load(Ordering::SeqCst) == 0 {
        let _ = events.send(RouterEvent::drained(b));
    }
}

/// The backend for a request's next attempt: the one its sticky cookie names, while it is up
/// and has not failed this request, else [`pick`].
pub fn choose(
    cands: &[Arc<Backend>],
    sticky_to: Option<SocketAddr>,
    skip: &[SocketAddr],
) -> Option<Arc<Backend>> {
    let sticky = sticky_to.filter(|a| !skip.contains(a)).and_then(|a| {
        cands
            .iter()
            .find(|b| b.addr == a && !b.removed.load(Ordering::Relaxed))
    });
    sticky.cloned().or_else(|| pick(cands, skip))
}

/// Power of two choices: two random candidates, the one with fewer requests in flight.
/// `skip` holds backends that already failed to connect for this request.
pub fn pick(cands: &[Arc<Backend>], skip: &[SocketAddr]) -> Option<Arc<Backend>> {
    let usable = |b: &&Arc<Backend>| !skip.contains(&b.addr) && !b.removed.load(Ordering::Relaxed);
    let n = cands.len();
    if n == 0 {
        return None;
    }
    if skip.is_empty() && n >= 2 {
        let i = rand_below(n);
        let mut j = rand_below(n - 1);
        if j >= i {
            j += 1;
        }
        let (a, b) = (&cands[i], &cands[j]);
        let la = a.in_flight.load(Ordering::Relaxed);
        let lb = b.in_flight.load(Ordering::Relaxed);
        let best = if la <= lb { a } else { b };
        if !best.removed.load(Ordering::Relaxed) {
            return Some(best.clone());
        }
    }
    let start = rand_below(n);
    cands
        .iter()
        .cycle()
        .skip(start)
        .take(n)
        .filter(usable)
        .min_by_key(|b| b.in_flight.load(Ordering::Relaxed))
        .cloned()
}

/// A fast per-thread xorshift: choosing backends needs spread, not cryptographic randomness.
fn rand_below(n: usize) -> usize {
    (rand_u64() % n as u64) as usize
}

/// A random UUID-shaped (version 4) request id, without a system call or formatting
/// machinery per request.
pub fn request_id() -> hyper::header::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (rand_u64(), rand_u64());
    // 32 random nibbles; the version (4) and variant (8..b) nibbles are set below.
    let mut out = [0u8; 36];
    let mut nib = (0..16)
        .map(|i| (a >> (i * 4)) & 15)
        .chain((0..16).map(|i| (b >> (i * 4)) & 15));
    for (i, c) in out.iter_mut().enumerate() {
        *c = match i {
            8 | 13 | 18 | 23 => b'-',
            14 => b'4',
            19 => HEX[(8 | (nib.next().unwrap_or(0) & 3)) as usize],
            _ => HEX[nib.next().unwrap_or(0) as usize],
        };
    }
    hyper::header::HeaderValue::from_bytes(&out).expect("hex and dashes are a valid header value")
}

fn rand_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests;
