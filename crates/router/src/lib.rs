//! Slipway's router (Flynn's `router/`): an HTTP(S) and TCP reverse proxy written on hyper 1
//! and tokio-rustls. Routes come from the controller's Store (the list, then route events);
//! backends come from discovery (a watch of all services). Both apply live: the routing table
//! is an immutable snapshot swapped whole, so changes never restart a listener or drop a
//! connection. See `docs/router.md`.

#![forbid(unsafe_code)]

mod answers;
pub mod backends;
mod body;
mod conns;
mod h1;
mod metrics;
mod prefixed;
mod proxy;
mod sticky;
mod table;
mod tcp;
pub mod tls;

pub use backends::RouterEvent;

use anyhow::Context;
use backends::Backends;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use slipway_discovery::Registry;
use slipway_store::Store;
use slipway_types::{EventFilter, ObjectType, Route};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Connections the admin endpoint (`/metrics`, `/events`) keeps open at once.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Limits and timeouts (Flynn's values where it had them).
#[derive(Clone, Debug)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub response_timeout: Duration,
    /// The whole exchange, from the request head to the response body's end (a slow upload
    /// or a slow streaming download included): past it the request gets 504 (408 if the
    /// client's body was still coming), or, once the response has started, its connection
    /// is closed. Upgraded (WebSocket) connections are not limited.
    pub request_timeout: Duration,
    /// Bigger request bodies get 413: at once for a declared `Content-Length`, when the
    /// limit is passed for a chunked one.
    pub max_request_body: u64,
    /// Time a client has to send its request head.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(600),
            // Long enough for the largest allowed upload (1 GiB) at ≈300 kB/s; a request
            // still going after an hour is a leak, not a user.
            request_timeout: Duration::from_secs(3600),
            max_request_body: 1 << 30,
            header_read_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub limits: Limits,
    /// Address TCP route listeners bind (their port is the route's).
    pub tcp_bind: IpAddr,
    /// Default HTTPS certificate (PEM cert, key); `None`: a self-signed one for `localhost`.
    pub default_certificate: Option<(String, String)>,
    /// Seals sticky-session cookies; share it between routers of a cluster. `None`: random.
    pub cookie_key: Option<[u8; 32]>,
    /// One structured log line per request (target `slipway_router::access`). Off by default.
    pub access_log: bool,
    /// Client connections open at once, over HTTP, HTTPS and TCP routes together (nginx's
    /// `worker_connections`): past it a new connection is refused at once (a plain HTTP one
    /// gets a 503 saying so) rather than taking file descriptors the process shares with the
    /// API and the host agent. Each may hold a backend connection too: two descriptors.
    pub max_connections: usize,
    /// The ports TCP routes may listen on; a route outside is not listened for (its state
    /// says why). Any by default; `slipway server` passes its `--tcp-ports` (Flynn's
    /// 3000-3500 unless told), so a route stored before the range was enforced cannot open
    /// port 22 either.
    pub tcp_ports: std::ops::RangeInclusive<u16>,
    /// Bearer tokens that may ask the admin endpoint `GET /backends/{instance}` (the
    /// zero-downtime gate of a scheduler in another process). Empty: that path answers 403.
    pub admin_tokens: Vec<String>,
    /// A predecessor router (another process) holds the ports and hands them over
    /// (`docs/router.md`, "Handoff"): every listener is bound with `SO_REUSEPORT` without the
    /// plain bind that otherwise refuses a port someone holds, so both accept until the
    /// predecessor, told to drain, closes its own.
    pub takeover: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            tcp_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            default_certificate: None,
            cookie_key: None,
            access_log: false,
            max_connections: 10_000,
            tcp_ports: 1..=u16::MAX,
            admin_tokens: Vec::new(),
            takeover: false,
        }
    }
}

pub(crate) struct Shared {
    pub table: RwLock<Arc<table::Table>>,
    pub backends: Arc<Backends>,
    pub events: broadcast::Sender<RouterEvent>,
    pub limits: Limits,
    pub cookie_key: sticky::CookieKey,
    pub metrics: metrics::Metrics,
    pub access_log: bool,
    pub conns: conns::ConnLimit,
    /// Instances between their `backend-up` and their `backend-drained` (see [`Router::routed`]).
    pub routed: Mutex<std::collections::HashSet<String>>,
    pub admin_tokens: Vec<String>,
    /// Set once by [`Router::drain`]: the accept loops stop (their listeners close), idle
    /// keep-alive connections close, and each response from then on says `Connection: close`.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Set by the first [`Router::set_routes`]: see [`Router::wait_loaded`].
    pub routes_loaded: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Whether [`Router::drain`] was called.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }
}

/// Resolves once `flag` is true (at once if it is already).
pub(crate) async fn flag_set(flag: &tokio::sync::watch::Sender<bool>) {
    let mut rx = flag.subscribe();
    let _ = rx.wait_for(|set| *set).await;
}

#[derive(Clone)]
pub struct Router {
    sh: Arc<Shared>,
    sni: Arc<tls::SniResolver>,
    tcp: Arc<Mutex<tcp::TcpListeners>>,
    tcp_bind: IpAddr,
    tcp_ports: std::ops::RangeInclusive<u16>,
    /// [`Config::takeover`].
    takeover: bool,
}

impl Router {
    pub fn new(config: Config) -> anyhow::Result<Router> {
        let (cert, key) = match config.default_certificate {
            Some(ck) => ck,
            None => tls::self_signed(&["localhost"])?,
        };
        let default = tls::load(&cert, &key).context("the default HTTPS certificate")?;
        Ok(Router {
            sh: Arc::new(Shared {
                table: RwLock::default(),
                backends: Arc::default(),
                events: broadcast::channel(1024).0,
                limits: config.limits,
                cookie_key: sticky::CookieKey::new(config.cookie_key),
                metrics: Default::default(),
                access_log: config.access_log,
                conns: conns::ConnLimit::new(config.max_connections),
                routed: Mutex::default(),
                admin_tokens: config.admin_tokens,
                draining: tokio::sync::watch::Sender::new(false),
                routes_loaded: tokio::sync::watch::Sender::new(false),
            }),
            sni: Arc::new(tls::SniResolver::new(default)),
            tcp: Arc::new(Mutex::new(tcp::TcpListeners::new(config.takeover))),
            tcp_bind: config.tcp_bind,
            tcp_ports: config.tcp_ports,
            takeover: config.takeover,
        })
    }

    /// Waits until the routes were set once and discovery's first snapshot of the backends
    /// came in, for at most `timeout`; returns whether both did. A router taking over from
    /// another one waits for this before it accepts: a connection it took earlier would get
    /// a 404 or a 503 that its predecessor, still fully loaded, would not have given.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let both = async {
            flag_set(&self.sh.routes_loaded).await;
            flag_set(&self.sh.backends.loaded).await;
        };
        tokio::time::timeout(timeout, both).await.is_ok()
    }

    /// The handoff is over (the predecessor was told to stop): TCP-route ports opened from
    /// now on are refused again when another process holds them.
    pub fn end_takeover(&self) {
        self.tcp.lock().unwrap().end_takeover();
    }

    /// Graceful stop: the listeners close (HTTP, HTTPS, TCP routes, admin) — with
    /// `net.ipv4.tcp_migrate_req=1`, connections still in their accept queues move to another
    /// process's listener on the same port (the successor's) instead of being reset — idle
    /// keep-alive connections close, requests in flight finish (their responses say
    /// `Connection: close`), h2 connections get a GOAWAY, and TCP-route connections go on until
    /// either side closes. Returns once no client connection is open, or after `timeout` (then
    /// `false`: the caller exits and cuts what is left).
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.sh.draining.send_replace(true);
        self.tcp.lock().unwrap().close_all();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.sh.conns.open() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces all routes: HTTP table, SNI certificates, TCP listeners.
    pub fn set_routes(&self, routes: &[Route]) {
        let table = table::Table::new(routes);
        self.sni.set(
            table
                .certificates()
                .filter_map(|r| Some((r.domain.as_str(), r.certificate.as_ref()?))),
        );
        self.tcp
            .lock()
            .unwrap()
            .reconcile(&self.sh, self.tcp_bind, &self.tcp_ports, &table.tcp);
        *self.sh.table.write().unwrap() = Arc::new(table);
        self.sh.routes_loaded.send_replace(true);
    }

    /// The state of the listener for a TCP route's port: `listening`, or `failed: REASON`
    /// (the port is held by another process, or outside the allowed range); `None` for a port
    /// no route of this router names.
    pub fn tcp_listener_state(&self, port: u16) -> Option<String> {
        self.tcp.lock().unwrap().state(port)
    }

    /// Client connections open now (HTTP, HTTPS and TCP routes).
    pub fn open_connections(&self) -> usize {
        self.sh.conns.open()
    }

    /// Prometheus text: requests per route and status class, latency histograms.
    pub fn metrics(&self) -> String {
        self.sh.metrics.render()
    }

    /// The admin endpoint: `GET /metrics` (Prometheus text), `GET /ping`, `GET /events`,
    /// `GET /backends/{instance}` (behind a token: see [`Config::admin_tokens`]).
    /// Like the other control listeners: a request head (and the wait for the next one on a
    /// kept-alive connection) has `Limits::header_read_timeout`, and at most [`ADMIN_MAX_CONNECTIONS`]
    /// connections are open at once (an event stream is a response, not an idle connection:
    /// the timeout does not cut it).
    pub async fn serve_admin(&self, listener: TcpListener) {
        let header_timeout = self.sh.limits.header_read_timeout;
        let limit = conns::ConnLimit::new(ADMIN_MAX_CONNECTIONS);
        loop {
            let accepted = tokio::select! {
                _ = flag_set(&self.sh.draining) => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Some(permit) = limit.try_open() else {
                conns::refuse_http(&stream, "the router's admin endpoint");
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let me = me.clone();
                        async move {
                            use http_body_util::{BodyExt, Full};
                            if req.uri().path() == "/events" {
                                return Ok(me.event_stream().map(|b| b.boxed()));
                            }
                            let path = req.uri().path();
                            let (status, body) = match path {
                                _ if path.starts_with("/backends/") => {
                                    me.admin_backend(&req, &path["/backends/".len()..])
                                }
                                "/metrics" => (200, me.metrics()),
                                "/ping" => (200, "ok\n".to_string()),
                                _ => (404, "not found: try /metrics\n".to_string()),
                            };
                            let full = Full::new(bytes::Bytes::from(body))
                                .map_err(|never| match never {})
                                .boxed();
                            let mut resp = hyper::Response::new(full);
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    /// Router events as Server-Sent Events (Flynn's router-api `/events`): one
    /// `data: {"kind","service","instance","addr"}` per event, for a scheduler in another
    /// process. A reader that falls behind by more than 1024 events is disconnected.
    fn event_stream(
        &self,
    ) -> hyper::Response<
        http_body_util::StreamBody<
            impl futures_util::Stream<
                Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
            > + Send
            + use<>,
        >,
    > {
        let rx = self.events();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await.ok()?;
            let line = format!("data: {}\n\n", serde_json::to_string(&ev).ok()?);
            Some((Ok(hyper::body::Frame::data(bytes::Bytes::from(line))), rx))
        });
        let mut resp = hyper::Response::new(http_body_util::StreamBody::new(stream));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        resp
    }

    /// Whether this router has `instance` as a backend: from its `backend-up` (requests can
    /// reach it) until its `backend-drained` (taken out and nothing in flight). What the
    /// zero-downtime gate asks every router before counting a job up or stopping it.
    pub fn routed(&self, instance: &str) -> bool {
        self.sh.routed.lock().unwrap().contains(instance)
    }

    /// Keeps [`Router::routed`] from the events. A tracker that fell behind the events takes
    /// the backends the router has now (a draining one then counts as drained: logged).
    fn track_routed(&self) {
        let mut rx = self.events();
        let sh = self.sh.clone();
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let mut routed = sh.routed.lock().unwrap();
                        match ev.kind {
                            "backend-up" => {
                                routed.insert(ev.instance);
                            }
                            "backend-drained" => {
                                routed.remove(&ev.instance);
                            }
                            _ => {}
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            "router: missed {n} backend events; taking the backends it has now"
                        );
                        *sh.routed.lock().unwrap() = sh.backends.up_ids();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// `GET /backends/{instance}` with a bearer token of `Config::admin_tokens`: 200 `routed`
    /// or 404 `absent` ([`Router::routed`]); 401 without a token it knows.
    fn admin_backend(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
        instance: &str,
    ) -> (u16, String) {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if self.sh.admin_tokens.is_empty() {
            return (403, "no token may ask this router's backends\n".into());
        }
        let known = given.is_some_and(|g| {
            self.sh
                .admin_tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), g.as_bytes()))
        });
        if !known {
            return (
                401,
                "a bearer token (the cluster token or API key) is required\n".into(),
            );
        }
        match self.routed(instance) {
            true => (200, "routed\n".into()),
            false => (404, "absent\n".into()),
        }
    }

    /// `backend-up`, `backend-down`, `backend-drained` as they happen.
    pub fn events(&self) -> broadcast::Receiver<RouterEvent> {
        self.sh.events.subscribe()
    }

    /// Follows discovery forever (resyncing after a broken watch).
    pub fn follow_registry(&self, registry: Arc<dyn Registry>) -> tokio::task::JoinHandle<()> {
        // Subscribed before the follow starts: no `backend-up` can come before it.
        self.track_routed();
        tokio::spawn(
            self.sh
                .backends
                .clone()
                .follow(registry, self.sh.events.clone()),
        )
    }

    /// Loads the routes from the Store, then reloads them after every route event. Returns
    /// once the first load is done, so traffic is routed from the start.
    pub async fn follow_store(
        &self,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let mut notifier = store.event_notifier();
        let mut mark = *notifier.borrow_and_update();
        let routes = store
            .list_routes(None)
            .await
            .context("cannot load the routes")?;
        self.set_routes(&routes);
        let me = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                if notifier.changed().await.is_err() {
                    return;
                }
                let filter = EventFilter {
                    object_types: vec![ObjectType::Route],
                    since_id: Some(mark),
                    ..Default::default()
                };
                let seen = *notifier.borrow_and_update();
                match store.list_events(&filter).await {
                    Ok(ev) if ev.is_empty() => mark = mark.max(seen),
                    Ok(ev) => {
                        let last = ev.last().map_or(mark, |e| e.id);
                        // A full reload is simple and always right; routes are few.
                        match store.list_routes(None).await {
                            Ok(routes) => {
                                me.set_routes(&routes);
                                mark = last;
                            }
                            Err(e) => tracing::warn!("router: cannot reload routes: {e}"),
                        }
                    }
                    Err(e) => tracing::warn!("router: cannot read route events: {e}"),
                }
            }
        }))
    }

    /// Serves HTTP on `http` and HTTPS on `https` from `threads` OS threads, each running its
    /// own current-thread runtime on its own `SO_REUSEPORT` listeners, so the kernel spreads
    /// connections and a request never hops between threads (nginx's worker model: measured
    /// 15–40 % more req/s than one multi-thread runtime, `docs/benchmarks.md`). Port 0 picks a
    /// free port; returns the bound addresses. Must be called inside a tokio runtime.
    pub fn spawn_per_core(
        &self,
        http: std::net::SocketAddr,
        https: Option<std::net::SocketAddr>,
        threads: usize,
    ) -> std::io::Result<(std::net::SocketAddr, Option<std::net::SocketAddr>)> {
        let threads = threads.max(1);
        let takeover = self.takeover;
        let bind_all = |addr: std::net::SocketAddr| -> std::io::Result<Vec<std::net::TcpListener>> {
            // SO_REUSEPORT would let a second `slipway server` share the port silently: a plain
            // bind first fails if anyone holds it, as a listener without SO_REUSEPORT would —
            // unless this router takes over from the one holding it (`Config::takeover`).
            if addr.port() != 0 && !takeover {
                drop(std::net::TcpListener::bind(addr)?);
            }
            let mut out = Vec::new();
            let mut addr = addr;
            for _ in 0..threads {
                let l = reuseport_listener(addr)?.into_std()?;
                addr = l.local_addr()?;
                out.push(l);
            }
            Ok(out)
        };
        let http_ls = bind_all(http)?;
        let http_addr = http_ls[0].local_addr()?;
        let (https_ls, https_addr) = match https {
            Some(a) => {
                let ls = bind_all(a)?;
                let addr = ls[0].local_addr()?;
                (ls.into_iter().map(Some).collect(), Some(addr))
            }
            None => ((0..threads).map(|_| None).collect::<Vec<_>>(), None),
        };
        for (i, (h, s)) in http_ls.into_iter().zip(https_ls).enumerate() {
            let me = self.clone();
            std::thread::Builder::new()
                .name(format!("router-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("router runtime");
                    rt.block_on(async move {
                        let h = TcpListener::from_std(h).expect("router listener");
                        if let Some(s) = s {
                            let s = TcpListener::from_std(s).expect("router listener");
                            let me2 = me.clone();
                            tokio::spawn(async move {
                                if let Err(e) = me2.serve_https(s).await {
                                    tracing::error!("router: HTTPS stopped: {e:#}");
                                }
                            });
                        }
                        me.serve_http(h).await;
                        // Draining: this runtime drives the connections still open; it runs
                        // until the process exits (after `Router::drain`).
                        std::future::pending::<()>().await
                    })
                })?;
        }
        Ok((http_addr, https_addr))
    }

    /// Serves plain HTTP (HTTP/1.1, and h2c with prior knowledge) until the task is dropped
    /// or [`Router::drain`] is called (then the listener is closed and this returns; the
    /// connections' tasks go on).
    pub async fn serve_http(&self, listener: TcpListener) {
        self.serve(listener, None).await
    }

    /// Serves HTTPS: SNI certificates, HTTP/1.1 or h2 by ALPN.
    pub async fn serve_https(&self, listener: TcpListener) -> anyhow::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(self.sni.clone())?);
        self.serve(listener, Some(acceptor)).await;
        Ok(())
    }

    async fn serve(&self, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(h1::MAX_HEAD)
            .timer(TokioTimer::new())
            .header_read_timeout(self.sh.limits.header_read_timeout);
        let mut draining = self.sh.draining.subscribe();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: don't spin.
                    tracing::warn!("router: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(permit) = self.sh.conns.try_open() else {
                if tls.is_none() {
                    conns::refuse_http(&stream, "the router");
                }
                self.sh.conns.refused(peer);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Arc::new(proxy::ConnInfo::new(
                self.sh.clone(),
                peer,
                tls.is_some(),
                port,
            ));
            let builder = builder.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // HTTP/1.1 starts on the plain path (`h1`), which hands hyper what it does not
                // take; h2 (by ALPN or prior knowledge) goes to hyper from the first byte on.
                let mut buf = bytes::BytesMut::new();
                let res = match tls {
                    None => {
                        let mut stream = stream;
                        if let h1::Next::Close = h1::serve(&conn, &mut stream, &mut buf).await {
                            return;
                        }
                        let io = prefixed::Prefixed::new(buf.freeze(), stream);
                        serve_hyper(&builder, io, conn).await
                    }
                    Some(acceptor) => {
                        let hs =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                        let Ok(Ok(mut stream)) = hs.await else { return };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        if !h2
                            && let h1::Next::Close = h1::serve(&conn, &mut stream, &mut buf).await
                        {
                            return;
                        }
                        let io = prefixed::Prefixed::new(buf.freeze(), stream);
                        serve_hyper(&builder, io, conn).await
                    }
                };
                if let Err(e) = res {
                    tracing::debug!(%peer, "router: connection ended: {e}");
                }
            });
        }
        tracing::info!("router: draining: no longer accepting on port {port}");
        drop(listener);
    }
}

/// A listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`: several per port (a runtime per
/// core), and a successor router's beside them during a handoff.
pub(crate) fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// One connection on the hyper path; when the router drains, hyper finishes the request in
/// flight and closes (HTTP/1: `Connection: close`; h2: GOAWAY, open streams finish).
async fn serve_hyper<IO>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    conn: Arc<proxy::ConnInfo>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let sh = conn.sh.clone();
    let svc = service(conn);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut served = std::pin::pin!(served);
    tokio::select! {
        res = served.as_mut() => return res,
        _ = flag_set(&sh.draining) => {}
    }
    served.as_mut().graceful_shutdown();
    served.await
}

/// The hyper path's service for one connection.
fn service(
    conn: Arc<proxy::ConnInfo>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<proxy::RespBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<hyper::Response<proxy::RespBody>, std::convert::Infallible>>
             + Send,
> + Clone {
    hyper::service::service_fn(move |req| proxy::handle(conn.clone(), req))
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
