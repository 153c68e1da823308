//! The router with real backends on loopback: real HTTP through real sockets.

mod drain;
mod h1;
mod handover;
mod http;
mod limits;
mod listeners;
mod live;
mod tls_tcp;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use slipway_discovery::{LocalRegistry, NewInstance, Registry};
use slipway_router::{Config, Router};
use slipway_types::{HttpRoute, Id, Route, TcpRoute, Timestamp};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Resp = Response<Full<Bytes>>;

/// A backend answering by path: `/headers` lists the request headers, `/echo` streams the
/// body back, `/sink` reads the whole body then answers its length, `/drip` streams `.` every
/// 100 ms for 10 s, `/slow` answers after 500 ms, `Upgrade` requests switch and echo raw bytes;
/// anything else answers its name.
pub async fn backend(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(answer(name, req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> AnyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn answer(name: &'static str, mut req: Request<Incoming>) -> Response<AnyBody> {
    if req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let up = on.await.unwrap();
            let mut io = TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        return Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(Bytes::new()))
            .unwrap();
    }
    match req.uri().path() {
        "/headers" => {
            let mut s = String::new();
            for (k, v) in req.headers() {
                s.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
            }
            Response::new(full(s))
        }
        "/echo" => Response::new(req.into_body().boxed()),
        "/sink" => {
            let n = req
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            Response::new(full(n.to_string()))
        }
        "/drip" => {
            let dots = futures_util::stream::unfold(0, |i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let dot = hyper::body::Frame::data(Bytes::from_static(b"."));
                (i < 100).then_some((Ok::<_, hyper::Error>(dot), i + 1))
            });
            Response::new(http_body_util::StreamBody::new(dots).boxed())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(full(name))
        }
        _ => Response::new(full(name)),
    }
}

pub fn http_route(domain: &str, path: &str, service: &str) -> Route {
    let now = Timestamp::now();
    Route::Http(HttpRoute {
        id: Id::new_v4(),
        app_id: Id::new_v4(),
        service: service.into(),
        domain: domain.into(),
        path: path.into(),
        sticky: false,
        leader: false,
        certificate: None,
        created_at: now,
        updated_at: now,
    })
}

pub fn tcp_route(port: u16, service: &str) -> Route {
    let now = Timestamp::now();
    Route::Tcp(TcpRoute {
        id: Id::new_v4(),
        app_id: Id::new_v4(),
        service: service.into(),
        port,
        leader: false,
        created_at: now,
        updated_at: now,
        listener: None,
    })
}

/// A router on a free port following `registry`.
pub struct TestRouter {
    pub router: Router,
    pub http: SocketAddr,
    pub registry: Arc<LocalRegistry>,
}

pub async fn start(config: Config) -> TestRouter {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
    let router = Router::new(config).unwrap();
    router.follow_registry(registry.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = l.local_addr().unwrap();
    let r = router.clone();
    tokio::spawn(async move { r.serve_http(l).await });
    TestRouter {
        router,
        http,
        registry,
    }
}

impl TestRouter {
    /// Registers `addr` in `service` and waits until the router has it.
    pub async fn add(&self, service: &str, id: &str, addr: SocketAddr) {
        let mut ev = self.router.events();
        self.registry
            .register(
                service,
                id,
                &NewInstance {
                    addr: addr.to_string(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        wait_event(&mut ev, "backend-up", id).await;
    }
}

pub async fn wait_event(
    ev: &mut tokio::sync::broadcast::Receiver<slipway_router::RouterEvent>,
    kind: &str,
    id: &str,
) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = ev.recv().await.unwrap();
            if e.kind == kind && e.instance == id {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event for {id} within 5s"));
}

/// One request on a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, Full::new(body))
}

/// An HTTP/2 connection with prior knowledge (h2c) to the router's plain port.
pub async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(addr, req).await;
    (resp.status(), body_string(resp).await)
}

pub async fn body_string(resp: Resp) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}
