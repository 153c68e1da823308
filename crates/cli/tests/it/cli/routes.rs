//! route add/list/update/remove for HTTP and TCP routes.

use crate::support::TestServer;
use slipway_types::TCP_PORT_RANGE;

/// The `http/<uuid>` (or tcp) a command printed.
fn route_id(line: &str, kind: &str) -> String {
    let id = line
        .split_whitespace()
        .next()
        .and_then(|r| r.strip_prefix(&format!("{kind}/")))
        .unwrap_or_else(|| panic!("not a {kind} route: {line:?}"));
    uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("not a UUID: {id:?}"));
    format!("{kind}/{id}")
}

#[test]
fn http_routes_add_normalise_conflict_update_and_remove() {
    let s = TestServer::start();
    let app = s.create_app("web-app");
    let route = route_id(
        &s.ok(&["route", "-a", &app, "add", "http", "example.com/api"]),
        "http",
    );

    let routes = s.json(&["route", "-a", &app, "--json"]);
    let added = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| format!("http/{}", r["id"].as_str().unwrap()) == route)
        .unwrap_or_else(|| panic!("{route} not listed: {routes}"));
    assert_eq!(added["domain"], "example.com");
    assert_eq!(added["path"], "/api/");
    assert_eq!(added["service"], "web-app-web");

    let table = s.ok(&["route", "-a", &app]);
    assert!(
        table.lines().any(|l| l.split_whitespace().take(3).eq([
            route.as_str(),
            "web-app-web",
            "example.com/api/"
        ])),
        "{table}"
    );

    // Same domain and path, spelled differently: still a duplicate.
    for dup in ["example.com/api", "EXAMPLE.com/api/"] {
        assert_eq!(
            s.fails(&["route", "-a", &app, "add", "http", dup]),
            "error: conflict: Duplicate route\n"
        );
    }

    assert_eq!(
        s.ok(&[
            "route", "-a", &app, "update", &route, "--sticky", "-s", "other"
        ]),
        format!("Route {route} updated.\n")
    );
    let routes = s.json(&["route", "-a", &app, "--json"]);
    let updated = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/api/")
        .unwrap();
    assert_eq!(
        (updated["sticky"].as_bool(), updated["service"].as_str()),
        (Some(true), Some("other"))
    );

    assert_eq!(
        s.ok(&["route", "-a", &app, "remove", &route]),
        format!("Route {route} removed.\n")
    );
    assert!(!s.ok(&["route", "-a", &app]).contains(&route));
    let err = s.fails(&["route", "-a", &app, "remove", "http/not-an-id"]);
    assert!(err.contains("expected http/<id> or tcp/<id>"), "{err}");
}

#[test]
fn http_routes_take_a_certificate_from_files() {
    let s = TestServer::start();
    let app = s.create_app("tls-app");
    let cert = s.dir.path().join("cert.pem");
    let key = s.dir.path().join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let route = route_id(
        &s.ok(&[
            "route",
            "-a",
            &app,
            "add",
            "http",
            "-c",
            cert,
            "-k",
            key,
            "secure.example.com",
        ]),
        "http",
    );
    let routes = s.json(&["route", "-a", &app, "--json"]);
    let added = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "secure.example.com")
        .unwrap_or_else(|| panic!("{routes}"));
    assert!(
        added["certificate"]["cert"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE")),
        "{added}"
    );
    let err = s.fails(&[
        "route",
        "-a",
        &app,
        "add",
        "http",
        "-c",
        "/nonexistent.pem",
        "-k",
        key,
        "x.example.com",
    ]);
    assert_eq!(
        err,
        "error: cannot read /nonexistent.pem: No such file or directory (os error 2)\n"
    );
    s.ok(&[
        "route",
        "-a",
        &app,
        "update",
        &route,
        "--remove-certificate",
    ]);
    let routes = s.json(&["route", "-a", &app, "--json"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("certificate").is_none_or(|c| c.is_null())),
        "{routes}"
    );
}

#[test]
fn tcp_routes_get_a_port() {
    let s = TestServer::start();
    let app = s.create_app("tcp-app");
    let out = s.ok(&["route", "-a", &app, "add", "tcp"]);
    let route = route_id(&out, "tcp");
    let port: u16 = out
        .trim()
        .strip_prefix(&format!("{route} listening on port "))
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    assert!(TCP_PORT_RANGE.contains(&port), "{port}");

    let out = s.ok(&["route", "-a", &app, "add", "tcp", "-p", "3456", "--leader"]);
    let fixed = route_id(&out, "tcp");
    assert_eq!(out, format!("{fixed} listening on port 3456\n"));
    assert_eq!(
        s.fails(&["route", "-a", &app, "add", "tcp", "-p", "3456"]),
        "error: conflict: Duplicate route\n"
    );
    let routes = s.json(&["route", "-a", &app, "--json"]);
    let tcp: Vec<_> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "tcp")
        .collect();
    assert_eq!(tcp.len(), 2, "{routes}");
    assert!(tcp.iter().any(|r| r["port"] == 3456 && r["leader"] == true));

    let err = s.fails(&["route", "-a", &app, "update", &fixed, "--sticky"]);
    assert!(err.contains("HTTP routes only"), "{err}");
    assert_eq!(
        s.ok(&["route", "-a", &app, "remove", &fixed]),
        format!("Route {fixed} removed.\n")
    );
}
