//! The discovery DNS server over real UDP on loopback.

use hickory_server::proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use slipway_discovery::dns::{DnsHandler, serve};
use slipway_discovery::{LocalRegistry, NewInstance, Registry};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
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

pub(crate) fn ips(records: &[Record]) -> Vec<Ipv4Addr> {
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

/// The answer to a query `q`: 192.0.2.7 for any name.
fn stand_in_answer(q: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(q).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    r.add_query(q.queries[0].clone());
    r.add_answer(Record::from_rdata(
        q.queries[0].name().clone(),
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
    ));
    r.to_vec().unwrap()
}

#[tokio::test]
async fn a_silent_or_closed_upstream_gets_the_client_servfail_not_silence() {
    use slipway_discovery::dns::FORWARD_TIMEOUT;
    // An upstream that reads queries and never answers: counted, to see the one resend.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while silent.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let reg = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
    let dns = serve(
        DnsHandler::new(reg.clone(), Some(silent_addr)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let m = ask(dns, "example.org.", RecordType::A).await;
    let took = t0.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // docs/router.md: SERVFAIL 2 s (FORWARD_TIMEOUT) after the query — not before (the
    // upstream had its chance, its resend included), and not later than scheduling explains:
    // well before a stub resolver gives up on us (glibc: 5 s).
    assert!(
        took >= FORWARD_TIMEOUT && took < FORWARD_TIMEOUT + Duration::from_millis(300),
        "SERVFAIL after {took:?}, expected {FORWARD_TIMEOUT:?} (+ < 300 ms)"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "sent twice"
    );

    // A port nobody listens on: ICMP port unreachable fails the query at once.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let dns = serve(
        DnsHandler::new(reg, Some(closed_addr)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let m = ask(dns, "example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(t0.elapsed() < FORWARD_TIMEOUT, "{:?}", t0.elapsed());
    // Names under discover. do not depend on the upstream.
    let m = ask(dns, "nothing.discover.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_query_over_tcp_is_forwarded_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_msg(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.unwrap();
        buf
    }
    async fn write_msg(s: &mut tokio::net::TcpStream, m: &[u8]) {
        let mut out = (m.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(m);
        s.write_all(&out).await.unwrap();
    }
    // The stand-in upstream listens on TCP only: a UDP forward would get no answer.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let q = read_msg(&mut s).await;
            write_msg(&mut s, &stand_in_answer(&q)).await;
        }
    });
    let reg = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
    let dns = serve(
        DnsHandler::new(reg, Some(up_addr)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("example.org.").unwrap(),
        RecordType::A,
    ));
    let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
    write_msg(&mut s, &q.to_vec().unwrap()).await;
    let m = tokio::time::timeout(Duration::from_secs(5), read_msg(&mut s))
        .await
        .expect("an answer over TCP within 5 s");
    let m = Message::from_vec(&m).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&m.answers), [Ipv4Addr::new(192, 0, 2, 7)]);
}
