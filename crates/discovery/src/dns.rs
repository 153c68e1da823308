//! DNS for discovery (Flynn's `discoverd` DNS, under `discover.`), so a container finds a
//! service through its resolv.conf with no client library:
//!
//! - `SERVICE.discover.` A: the up instances' IPv4 addresses (SRV: as below);
//! - `leader.SERVICE.discover.` A: the leader's address;
//! - `_SERVICE._tcp.discover.` SRV (RFC 2782): port and target `ID._i.SERVICE.discover.`,
//!   with the targets' A records as additionals; `ID._i.SERVICE.discover.` A: that instance;
//! - any other name is forwarded to the host's resolver (the first `nameserver` of
//!   `/etc/resolv.conf`), so containers can point at this server alone.
//!
//! Answers carry a 1-second TTL: instances change, and a stale answer is a failed connection.

use crate::{Instance, Registry};
use hickory_server::Server;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub const DOMAIN: &str = "discover.";
const TTL: u32 = 1;

pub struct DnsHandler {
    registry: Arc<dyn Registry>,
    /// Where names outside `discover.` go; `None`: answered with REFUSED.
    upstream: Option<SocketAddr>,
}

impl DnsHandler {
    pub fn new(registry: Arc<dyn Registry>, upstream: Option<SocketAddr>) -> DnsHandler {
        DnsHandler { registry, upstream }
    }
}

/// The first `nameserver` of `/etc/resolv.conf` (port 53).
pub fn host_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|l| {
        let ip: IpAddr = l.strip_prefix("nameserver")?.trim().parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Serves DNS over UDP and TCP on `addr` (port 0: a free port, the same for both when possible).
/// Returns the UDP address.
pub async fn serve(handler: DnsHandler, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let local = udp.local_addr()?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    if let Ok(tcp) = tokio::net::TcpListener::bind(local).await {
        server.register_listener(tcp, Duration::from_secs(5), 65535);
    }
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    Ok(local)
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

fn a_record(n: &Name, inst: &Instance) -> Option<Record> {
    match inst.addr.parse::<SocketAddr>().ok()?.ip() {
        IpAddr::V4(ip) => Some(Record::from_rdata(n.clone(), TTL, RData::A(A(ip)))),
        IpAddr::V6(_) => None,
    }
}

impl DnsHandler {
    /// Answers a name under `discover.`: (answers, additionals), or None for NXDOMAIN.
    async fn lookup(&self, qname: &str, qtype: RecordType) -> Option<(Vec<Record>, Vec<Record>)> {
        let rest = qname.strip_suffix(DOMAIN)?.trim_end_matches('.');
        let qn = name(qname)?;
        let srv_target = |svc: &str, i: &Instance| name(&format!("{}._i.{svc}.{DOMAIN}", i.id));
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if let Some(svc) = rest.strip_prefix("leader.") {
            let leader = self.registry.leader(svc).await.ok()??;
            if qtype == RecordType::A {
                answers.extend(a_record(&qn, &leader));
            }
            return Some((answers, additionals));
        }
        if let Some((id, svc)) = rest.split_once("._i.") {
            let list = self.registry.instances(svc).await.ok()?;
            let inst = list.iter().find(|i| i.id == id)?;
            if qtype == RecordType::A {
                answers.extend(a_record(&qn, inst));
            }
            return Some((answers, additionals));
        }
        let svc = match rest.strip_prefix('_') {
            Some(r) => r.strip_suffix("._tcp")?,
            None => rest,
        };
        let list = self.registry.instances(svc).await.ok()?;
        if list.is_empty() {
            return None;
        }
        for i in &list {
            match qtype {
                RecordType::A => answers.extend(a_record(&qn, i)),
                RecordType::SRV => {
                    let (Some(target), Ok(addr)) =
                        (srv_target(svc, i), i.addr.parse::<SocketAddr>())
                    else {
                        continue;
                    };
                    answers.push(Record::from_rdata(
                        qn.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 0, addr.port(), target.clone())),
                    ));
                    additionals.extend(a_record(&target, i));
                }
                _ => {}
            }
        }
        Some((answers, additionals))
    }

    async fn forward(&self, raw: &[u8]) -> Option<Message> {
        let upstream = self.upstream?;
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
        sock.send_to(raw, upstream).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf[..n]).ok()
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut md = Metadata::response_from_request(&request.metadata);
        let (qname, qtype) = match request.request_info() {
            Ok(info) => (
                info.query.name().to_string().to_ascii_lowercase(),
                info.query.query_type(),
            ),
            Err(_) => (String::new(), RecordType::A),
        };
        let (answers, authorities, additionals) =
            if qname == DOMAIN || qname.ends_with(".discover.") {
                md.authoritative = true;
                match self.lookup(&qname, qtype).await {
                    Some((a, d)) => (a, Vec::new(), d),
                    None => {
                        md.response_code = ResponseCode::NXDomain;
                        (Vec::new(), Vec::new(), Vec::new())
                    }
                }
            } else {
                md.recursion_available = true;
                match self.forward(request.as_slice()).await {
                    Some(m) => {
                        md.response_code = m.metadata.response_code;
                        (m.answers, m.authorities, m.additionals)
                    }
                    None => {
                        md.response_code = if self.upstream.is_some() {
                            ResponseCode::ServFail
                        } else {
                            ResponseCode::Refused
                        };
                        (Vec::new(), Vec::new(), Vec::new())
                    }
                }
            };
        let resp = MessageResponseBuilder::new(&request.queries, None).build(
            md,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!("discovery DNS: cannot answer: {e}");
                let mut md = Metadata::response_from_request(&request.metadata);
                md.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: md,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
