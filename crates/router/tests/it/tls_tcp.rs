use crate::*;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use slipway_types::Certificate;

fn route_with_cert(domain: &str, service: &str, cert: &(String, String)) -> Route {
    let mut r = http_route(domain, "/", service);
    if let Route::Http(h) = &mut r {
        h.certificate = Some(Certificate {
            cert: cert.0.clone(),
            key: cert.1.clone(),
        });
    }
    r
}

/// TLS to the router with SNI `name`, trusting only `trust`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    trust: &str,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trust.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(name.to_string()).unwrap(), s)
        .await
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_speaks_h2() {
    let t = start(Config::default()).await;
    t.add("a", "a1", backend("a").await).await;
    t.add("b", "b1", backend("b").await).await;
    let cert_a = slipway_router::tls::self_signed(&["a.test"]).unwrap();
    let cert_b = slipway_router::tls::self_signed(&["*.b.test"]).unwrap();
    t.router.set_routes(&[
        route_with_cert("a.test", "a", &cert_a),
        route_with_cert("*.b.test", "b", &cert_b),
        http_route("plain.test", "/", "a"),
    ]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = l.local_addr().unwrap();
    let r = t.router.clone();
    tokio::spawn(async move { r.serve_https(l).await });

    // Each name verifies against its own certificate only.
    assert!(
        tls_connect(https, "a.test", &cert_a.0, b"http/1.1")
            .await
            .is_ok()
    );
    assert!(
        tls_connect(https, "x.b.test", &cert_b.0, b"http/1.1")
            .await
            .is_ok()
    );
    assert!(
        tls_connect(https, "x.b.test", &cert_a.0, b"http/1.1")
            .await
            .is_err()
    );
    // No route certificate: the default (self-signed) one, which neither trust anchor signs.
    assert!(
        tls_connect(https, "plain.test", &cert_a.0, b"http/1.1")
            .await
            .is_err()
    );

    // HTTP/1.1 over TLS, with X-Forwarded-Proto https.
    let s = tls_connect(https, "a.test", &cert_a.0, b"http/1.1")
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/headers")
        .header("host", "a.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let h = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(h.contains("x-forwarded-proto: https\n"), "{h}");

    // h2 chosen by ALPN, proxied to the HTTP/1.1 backend.
    let s = tls_connect(https, "y.b.test", &cert_b.0, b"h2")
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://y.b.test/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    }
}

#[tokio::test]
async fn tcp_route_echoes_through_the_router() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start(Config {
        tcp_bind: "127.0.0.1".parse().unwrap(),
        ..Config::default()
    })
    .await;
    // A raw TCP echo backend.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    t.add("redis", "r1", echo_addr).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.router.set_routes(&[tcp_route(port, "redis")]);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"PING\r\n");

    // Removing the route closes the listener.
    t.router.set_routes(&[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
