//! The router as `bench/router.sh` runs it: one route (`bench.test`, and `*` by Host-less
//! requests is not needed: wrk sends `Host: bench.test`) to the given backends, HTTP and HTTPS.
//!
//! `router_bench HTTP_ADDR HTTPS_ADDR BACKEND_ADDR…`

use slipway_discovery::{LocalRegistry, NewInstance, Registry};
use slipway_types::{HttpRoute, Id, Route, Timestamp};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: router_bench HTTP_ADDR HTTPS_ADDR BACKEND_ADDR…"
    );
    let registry = Arc::new(LocalRegistry::new(Duration::from_secs(365 * 86400)));
    for (i, b) in args[2..].iter().enumerate() {
        let new = NewInstance {
            addr: b.clone(),
            ..Default::default()
        };
        registry.register("bench", &format!("b{i}"), &new).await?;
    }
    let router = slipway_router::Router::new(Default::default())?;
    router.follow_registry(registry);
    let now = Timestamp::now();
    router.set_routes(&[Route::Http(HttpRoute {
        id: Id::new_v4(),
        app_id: Id::new_v4(),
        service: "bench".into(),
        domain: "bench.test".into(),
        path: "/".into(),
        sticky: false,
        leader: false,
        certificate: None,
        created_at: now,
        updated_at: now,
    })]);
    // PER_CORE=N: N threads, each a current-thread runtime with its own SO_REUSEPORT
    // listeners (nginx's worker model). Otherwise: one multi-thread runtime.
    let per_core: usize = std::env::var("PER_CORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if per_core > 0 {
        let (h, s) = (args[0].parse()?, args[1].parse()?);
        for _ in 0..per_core {
            let router = router.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let http = reuseport(h).unwrap();
                    let https = reuseport(s).unwrap();
                    let r = router.clone();
                    tokio::spawn(async move { r.serve_https(https).await });
                    router.serve_http(http).await;
                });
            });
        }
        println!("ready");
        std::future::pending::<()>().await;
    }
    let http = tokio::net::TcpListener::bind(&args[0]).await?;
    let https = tokio::net::TcpListener::bind(&args[1]).await?;
    let r = router.clone();
    tokio::spawn(async move { r.serve_https(https).await });
    println!("ready");
    router.serve_http(http).await;
    Ok(())
}

fn reuseport(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}
