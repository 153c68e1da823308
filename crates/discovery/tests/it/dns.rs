//! The discovery DNS server over real UDP on loopback.

use hickory_server::proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use slipway_discovery::dns::{DnsHandler, serve};
use slipway_discovery::{LocalRegistry, NewInstance, Registry};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a DNS answer within 5s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn ips(records: &[Record]) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

async fn register(r: &LocalRegistry, svc: &str, id: &str, addr: &str) {
    let new = NewInstance {
        addr: addr.into(),
        ..Default::default()
    };
    r.register(svc, id, &new).await.unwrap();
}

#[tokio::test]
async fn answers_services_leaders_and_srv_under_discover() {
    let reg = LocalRegistry::new(Duration::from_secs(10));
    register(&reg, "web", "a", "10.0.0.1:8080").await;
    register(&reg, "web", "b", "10.0.0.2:8081").await;
    let dns = serve(
        DnsHandler::new(Arc::new(reg.clone()), None),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();

    let m = ask(dns, "web.discover.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        ips(&m.answers),
        [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
    );

    let m = ask(dns, "leader.web.discover.", RecordType::A).await;
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(10, 0, 0, 1)]);

    let m = ask(dns, "_web._tcp.discover.", RecordType::SRV).await;
    let mut ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    ports.sort();
    assert_eq!(ports, [8080, 8081]);
    assert_eq!(
        ips(&m.additionals).len(),
        2,
        "targets' addresses come along"
    );

    let m = ask(dns, "a._i.web.discover.", RecordType::A).await;
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(10, 0, 0, 1)]);

    let m = ask(dns, "nothing.discover.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // Changes show at once (1 s TTL, no cache here).
    reg.deregister("web", "a").await.unwrap();
    let m = ask(dns, "web.discover.", RecordType::A).await;
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
    let m = ask(dns, "leader.web.discover.", RecordType::A).await;
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
}

#[tokio::test]
async fn other_names_are_forwarded_upstream() {
    // A stand-in for the host's resolver: answers every A query with 192.0.2.7.
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
            let name = q.queries[0].name().clone();
            r.add_query(q.queries[0].clone());
            r.add_answer(Record::from_rdata(
                name,
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            upstream.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    let reg = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
    let dns = serve(
        DnsHandler::new(reg.clone(), Some(up_addr)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let m = ask(dns, "example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(192, 0, 2, 7)]);

    let no_upstream = serve(DnsHandler::new(reg, None), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let m = ask(no_upstream, "example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}
