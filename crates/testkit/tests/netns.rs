//! The netns LAN harness on the real machine (root): hosts reach each other and the LAN's
//! gateway, a pulled cable cuts a host off, etcd on the gateway and PostgreSQL's Unix socket
//! are reached from inside a host, and nothing is left afterwards — also when the test panics.
//! `n` range of these tests: 4090-4099 (that of `cluster::netns` in the cli crate's tests).

use slipway_testkit::netns::{
    NetnsLan, TcpForwarder, leftovers, unix_socket_url, url_addr, url_with_addr,
};
use std::time::Duration;

/// A TCP connection from inside host `i`, within 2 s.
fn connects_from(lan: &NetnsLan, i: usize, addr: &str) -> bool {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    lan.in_netns(i, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
}

/// Connects to the database at `url` from inside host `i` and pings it, within 3 s.
fn db_ping_from(lan: &NetnsLan, i: usize, url: &str) -> Result<(), String> {
    let url = url.to_string();
    lan.in_netns(i, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let connect = sqlx::AnyConnection::connect(&url);
            let mut c = tokio::time::timeout(Duration::from_secs(3), connect)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            c.ping().await.map_err(|e| e.to_string())
        })
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
    assert!(lan.ping_from(1, ips[0]) && lan.ping_from(0, ips[1]));

    // etcd on the gateway, reached from inside a host.
    let Some(etcd) = slipway_testkit::etcd::etcd_cluster_on(1, lan.gateway) else {
        return;
    };
    let etcd_addr = etcd.client_url(0).trim_start_matches("http://").to_string();
    assert!(
        connects_from(&lan, 2, &etcd_addr),
        "etcd at {etcd_addr} from host 2"
    );
    // And a member in host 1, on host 1's address, reached from host 2 (and from the root netns,
    // where start_in checked its health).
    let in_host = slipway_testkit::etcd::EtcdCluster::start_in(&[ips[1]], {
        let cmd = lan.etcd_in_hosts();
        Box::new(move |_, bin| cmd(1, bin))
    })
    .unwrap();
    let member = in_host
        .client_url(0)
        .trim_start_matches("http://")
        .to_string();
    assert_eq!(member, format!("{}:2379", ips[1]));
    assert!(
        connects_from(&lan, 2, &member),
        "etcd at {member} from host 2"
    );
    assert!(
        !connects_from(&lan, 0, &format!("{}:2379", ips[2])),
        "nothing on host 2"
    );

    // PostgreSQL: its loopback address is not reached from a host; its Unix socket is, and so
    // is a forwarder on the gateway (which a pulled cable cuts off).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let tcp = url_addr(&db.url).unwrap();
    assert!(
        !connects_from(&lan, 0, &tcp.to_string()),
        "{tcp} reached from a host's netns"
    );
    let socket_url = rt.block_on(unix_socket_url(&db.url)).unwrap();
    assert!(socket_url.contains("host=/"), "{socket_url}");
    db_ping_from(&lan, 1, &socket_url).unwrap();
    let fwd = TcpForwarder::start(lan.gateway, tcp).unwrap();
    let fwd_url = url_with_addr(&db.url, fwd.addr()).unwrap();
    assert!(fwd_url.contains(&lan.gateway.to_string()), "{fwd_url}");
    db_ping_from(&lan, 2, &fwd_url).unwrap();
    lan.cut_link(2);
    assert!(db_ping_from(&lan, 2, &fwd_url).is_err());
    lan.restore_link(2);
    db_ping_from(&lan, 2, &fwd_url).unwrap();
    drop(fwd);

    // A process in a host is killed at teardown, with everything else.
    let pid = lan.spawn(lan.command(0, "sleep").arg("600")).unwrap();
    assert!(lan.is_running(pid));
    let left = lan.finish();
    assert!(left.is_empty(), "left after the LAN: {left:#?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop((etcd, in_host));
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

#[test]
fn a_lan_whose_process_is_gone_is_removed_by_the_next_lan_whatever_its_number() {
    if slipway_testkit::skip_unless_root(
        "a_lan_whose_process_is_gone_is_removed_by_the_next_lan_whatever_its_number",
    ) {
        return;
    }
    // LAN 4092, made by a test process that was killed (no teardown): forgotten here, and its
    // owner file names a process that has exited.
    let orphan = NetnsLan::new(4092, 2).unwrap();
    orphan.spawn(orphan.command(1, "sleep").arg("600")).unwrap();
    let owner = orphan.dir().join("owner");
    std::mem::forget(orphan);
    assert!(!leftovers(4092).is_empty());
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    // From here on any LAN made on the machine (another test's too) may remove it.
    std::fs::write(&owner, gone.id().to_string()).unwrap();
    let lan = NetnsLan::new(4093, 1).unwrap();
    assert_eq!(leftovers(4092), Vec::<String>::new());
    assert!(lan.finish().is_empty());
}
