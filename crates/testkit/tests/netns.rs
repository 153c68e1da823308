//! The netns LAN harness on the real machine (root): hosts reach each other and the LAN's
//! gateway, a pulled cable cuts a host off, etcd on the gateway and PostgreSQL's Unix socket
//! are reached from inside a host, and nothing is left afterwards — also when the test panics.
//! `n` range of these tests: 4090-4099 (that of `cluster::netns` in the cli crate's tests).

use slipway_testkit::netns::{NetnsLan, leftovers, unix_socket_url};
use std::time::Duration;

/// A TCP connection from inside host `i`, within 2 s.
fn connects_from(lan: &NetnsLan, i: usize, addr: &str) -> bool {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    lan.in_netns(i, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
}

#[test]
fn hosts_of_a_lan_reach_each_other_etcd_and_postgres_and_nothing_is_left() {
    if slipway_testkit::skip_unless_root(
        "hosts_of_a_lan_reach_each_other_etcd_and_postgres_and_nothing_is_left",
    ) {
        return;
    }
    let n = 4090;
    let lan = NetnsLan::new(n, 3).unwrap();
    let ips: Vec<_> = lan.hosts.iter().map(|h| h.ip).collect();
    assert_eq!(ips[0].octets()[..3], lan.gateway.octets()[..3]);
    assert!(lan.ping_from(0, ips[1]) && lan.ping_from(2, ips[0]));
    // Each host has its own network: its own LAN address only, its own loopback.
    let addrs = String::from_utf8(
        lan.command(1, "ip")
            .args(["-4", "-o", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        addrs.contains(&ips[1].to_string()) && !addrs.contains(&ips[0].to_string()),
        "{addrs}"
    );

    // A pulled cable: host 1 reaches nothing, the others still reach each other; plugged back in.
    lan.cut_link(1);
    assert!(!lan.ping_from(1, lan.gateway));
    assert!(!lan.ping_from(0, ips[1]));
    assert!(lan.ping_from(0, ips[2]));
    lan.restore_link(1);
    let t0 = std::time::Instant::now();
    while !lan.ping_from(1, ips[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the link did not come back"
        );
    }

    // etcd on the gateway, reached from inside a host.
    let Some(etcd) = slipway_testkit::etcd::etcd_cluster_on(1, lan.gateway) else {
        return;
    };
    let etcd_addr = etcd.client_url(0).trim_start_matches("http://").to_string();
    assert!(
        connects_from(&lan, 2, &etcd_addr),
        "etcd at {etcd_addr} from host 2"
    );

    // PostgreSQL: its loopback address is not reached from a host, its Unix socket is.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let socket_url = rt.block_on(unix_socket_url(&db.url)).unwrap();
    assert!(socket_url.contains("host=/"), "{socket_url}");
    let tcp = db
        .url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !connects_from(&lan, 0, &tcp),
        "127.0.0.1 reached from a host's netns"
    );
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::AnyConnection::connect(&socket_url).await.unwrap();
        c.ping().await.unwrap();
    });

    // A process in a host is killed at teardown, with everything else.
    let pid = lan.spawn(lan.command(0, "sleep").arg("600")).unwrap();
    assert!(lan.is_running(pid));
    let left = lan.finish();
    assert!(left.is_empty(), "left after the LAN: {left:#?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(etcd);
}

#[test]
fn a_lan_is_torn_down_when_its_test_panics_and_a_stale_one_is_replaced() {
    if slipway_testkit::skip_unless_root(
        "a_lan_is_torn_down_when_its_test_panics_and_a_stale_one_is_replaced",
    ) {
        return;
    }
    let n = 4091;
    // A LAN whose owner "crashed" (forgotten, never dropped): the next one with its number
    // starts anyway, on a clean slate.
    let stale = NetnsLan::new(n, 2).unwrap();
    stale.spawn(stale.command(1, "sleep").arg("600")).unwrap();
    std::mem::forget(stale);
    assert!(!leftovers(n).is_empty());
    let result = std::thread::spawn(move || {
        let lan = NetnsLan::new(n, 2).unwrap();
        lan.spawn(lan.command(0, "sleep").arg("600")).unwrap();
        std::fs::write(lan.hosts[1].dir.join("file"), "x").unwrap();
        panic!("the test fails");
    })
    .join();
    assert!(result.is_err());
    let left = leftovers(n);
    assert!(left.is_empty(), "left after a panic: {left:#?}");
}
