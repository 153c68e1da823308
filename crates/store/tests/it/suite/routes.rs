//! The cases about routes: part of the suite (`super`), each with a fresh, empty store.

use super::*;

pub(super) fn http(domain: &str, path: Option<&str>) -> NewRoute {
    NewRoute::Http {
        domain: domain.into(),
        path: path.map(str::to_string),
        service: None,
        sticky: false,
        leader: false,
        certificate: None,
    }
}

pub async fn http_routes_unique_by_domain_and_path(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "web").await;
    let other = app(s, "web2").await;
    let r = s
        .create_route(a.id, &http("Example.COM", None))
        .await
        .unwrap();
    let Route::Http(h) = &r else { panic!() };
    assert_eq!(
        (h.domain.as_str(), h.path.as_str(), h.service.as_str()),
        ("example.com", "/", "web-web")
    );
    assert_eq!(r.to_string(), format!("http/{}", h.id));
    assert_conflict(
        s.create_route(other.id, &http("example.com", Some("/")))
            .await,
        "Duplicate route",
    );
    let api = s
        .create_route(a.id, &http("example.com", Some("api")))
        .await
        .unwrap();
    let Route::Http(api) = api else { panic!() };
    assert_eq!(api.path, "/api/");
    assert_conflict(
        s.create_route(a.id, &http("example.com", Some("/api/")))
            .await,
        "Duplicate route",
    );
    assert_invalid(
        s.create_route(a.id, &http("exa mple.com", None)).await,
        "domain",
    );
    assert_not_found(s.create_route(Id::new_v4(), &http("x.com", None)).await);
}

pub async fn tcp_routes_unique_by_port(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "db").await;
    let tcp = |port| NewRoute::Tcp {
        port,
        service: Some("db-pg".into()),
        leader: true,
    };
    let Route::Tcp(t1) = s.create_route(a.id, &tcp(0)).await.unwrap() else {
        panic!()
    };
    let Route::Tcp(t2) = s.create_route(a.id, &tcp(0)).await.unwrap() else {
        panic!()
    };
    assert_eq!((t1.port, t2.port), (3000, 3001));
    assert!(t1.leader);
    assert_conflict(s.create_route(a.id, &tcp(3001)).await, "Duplicate route");
    let Route::Tcp(t3) = s.create_route(a.id, &tcp(6000)).await.unwrap() else {
        panic!()
    };
    assert_eq!(t3.port, 6000);
    s.delete_route(a.id, RouteType::Tcp, t1.id).await.unwrap();
    let Route::Tcp(t4) = s.create_route(a.id, &tcp(0)).await.unwrap() else {
        panic!()
    };
    assert_eq!(t4.port, 3000, "freed ports are reused");
}

pub async fn route_update_and_delete(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "upd").await;
    let r = s
        .create_route(a.id, &http("upd.example.com", None))
        .await
        .unwrap();
    let cert = Certificate {
        cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        key: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".into(),
    };
    let upd = RouteUpdate {
        service: Some("upd-api".into()),
        sticky: Some(true),
        certificate: Some(cert.clone()),
        ..Default::default()
    };
    let Route::Http(h) = s
        .update_route(a.id, RouteType::Http, r.id(), &upd)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (h.service.as_str(), h.sticky, h.certificate.as_ref()),
        ("upd-api", true, Some(&cert))
    );
    assert_eq!(
        s.get_route(a.id, RouteType::Http, r.id()).await.unwrap(),
        Route::Http(h)
    );
    let bad = RouteUpdate {
        certificate: Some(Certificate {
            cert: "nope".into(),
            key: "nope".into(),
        }),
        ..Default::default()
    };
    assert_invalid(
        s.update_route(a.id, RouteType::Http, r.id(), &bad).await,
        "certificate",
    );
    let rm = RouteUpdate {
        remove_certificate: true,
        ..Default::default()
    };
    let Route::Http(h) = s
        .update_route(a.id, RouteType::Http, r.id(), &rm)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(h.certificate.is_none());
    assert_not_found(s.get_route(a.id, RouteType::Tcp, r.id()).await);
    s.delete_route(a.id, RouteType::Http, r.id()).await.unwrap();
    assert_not_found(s.get_route(a.id, RouteType::Http, r.id()).await);
    assert_not_found(s.delete_route(a.id, RouteType::Http, r.id()).await);
}
