//! DNS for discovery (Flynn's `discoverd` DNS, under `discover.`), so a container finds a
//! service through its resolv.conf with no client library:
//!
//! - `SERVICE.discover.` A: the up instances' IPv4 addresses (SRV: as below);
//! - `leader.SERVICE.discover.` A: the leader's address;
//! - `_SERVICE._tcp.discover.` SRV (RFC 2782): port and target `ID._i.SERVICE.discover.`,
//!   with the targets' A records as additionals; `ID._i.SERVICE.discover.` A: that instance;
//! - any other name is forwarded to the host's resolver (the first `nameserver` of
//!   `/etc/resolv.conf`), so containers can point at this server alone. This server runs on
//!   the host, so it reaches a loopback resolver (`127.0.0.53`) that containers cannot. A query
//!   that came over TCP is forwarded over TCP (a truncated UDP answer makes clients retry over
//!   TCP, which must then get the whole answer). An upstream that does not answer within
//!   [`FORWARD_TIMEOUT`] gets the client a SERVFAIL, never silence.
//!
//! Answers carry a 1-second TTL: instances change, and a stale answer is a failed connection.

use crate::{Instance, Registry};
use hickory_server::Server;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DOMAIN: &str = "discover.";
const TTL: u32 = 1;

/// How long a forwarded query may take before the client gets SERVFAIL: well under a stub
/// resolver's own timeout (glibc: 5 s per try), so a dead upstream fails fast instead of
/// stalling every lookup. Over UDP the query is sent again halfway, so one lost datagram is
/// not a failure.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// At most one "upstream failed" warning this often (a dead upstream fails every query).
const WARN_EVERY: Duration = Duration::from_secs(30);

pub struct DnsHandler {
    registry: Arc<dyn Registry>,
    /// Where names outside `discover.` go; `None`: answered with REFUSED.
    upstream: Option<SocketAddr>,
    last_warning: Mutex<Option<Instant>>,
}

impl DnsHandler {
    pub fn new(registry: Arc<dyn Registry>, upstream: Option<SocketAddr>) -> DnsHandler {
        DnsHandler {
            registry,
            upstream,
            last_warning: Mutex::new(None),
        }
    }

    fn warn_upstream(&self, upstream: SocketAddr, err: &std::io::Error) {
        let mut last = self.last_warning.lock().expect("last_warning");
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "discovery DNS: the upstream resolver {upstream} failed ({err}); names outside \
                 {DOMAIN} get SERVFAIL. Pick another with --dns-upstream"
            );
        }
    }
}

/// The first `nameserver` of `/etc/resolv.conf` (port 53).
pub fn host_resolver() -> Option<SocketAddr> {
    first_nameserver(&std::fs::read_to_string("/etc/resolv.conf").ok()?)
}

/// The first `nameserver` line of a resolv.conf text (port 53); `None` if it has none.
pub fn first_nameserver(conf: &str) -> Option<SocketAddr> {
    conf.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("nameserver")?;
        // An IPv6 link-local address may carry a zone (`fe80::1%eth0`): not usable here.
        let ip: IpAddr = rest.trim().parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Serves DNS over UDP and TCP on `addr` (port 0: a free port, the same for both when possible).
/// Returns the UDP address.
pub async fn serve(handler: DnsHandler, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    // Port 0: the UDP port the kernel picks may be taken on TCP (by another process): another
    // free UDP port is tried then, a few times, before TCP is given up.
    let mut attempts = if addr.port() == 0 { 20 } else { 1 };
    let (udp, local, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        attempts -= 1;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => break (udp, local, Some(tcp)),
            Err(e) if attempts > 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                tracing::warn!(
                    "discovery DNS: cannot listen on TCP {local}: {e}; answers too big for UDP will fail"
                );
                break (udp, local, None);
            }
        }
    };
    let mut server = Server::new(handler);
    server.register_socket(udp);
    if let Some(tcp) = tcp {
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

    /// Sends the client's query as it is to the upstream resolver, over the client's protocol.
    async fn forward(&self, raw: &[u8], tcp: bool) -> Option<Message> {
        let upstream = self.upstream?;
        let reply = if tcp {
            tokio::time::timeout(FORWARD_TIMEOUT, forward_tcp(raw, upstream))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        } else {
            forward_udp(raw, upstream).await
        };
        let parsed = reply.and_then(|r| {
            Message::from_vec(&r).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad answer: {e}"))
            })
        });
        match parsed {
            Ok(m) => Some(m),
            Err(e) => {
                self.warn_upstream(upstream, &e);
                None
            }
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {FORWARD_TIMEOUT:?}"),
    )
}

/// One query over UDP, sent twice at most (the second time halfway through
/// [`FORWARD_TIMEOUT`]). The socket is connected, so an ICMP "port unreachable" fails the query
/// at once, and only the upstream's datagrams with the query's id count as the answer.
async fn forward_udp(raw: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    if raw.len() < 2 {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let bind: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..2 {
        sock.send(raw).await?;
        let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT / 2;
        while let Ok(got) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            let n = got?;
            if n >= 2 && buf[..2] == raw[..2] {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
    Err(timed_out())
}

/// One query over TCP (RFC 1035 4.2.2: each message behind its 2-byte length).
async fn forward_tcp(raw: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(raw.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut s = tokio::net::TcpStream::connect(upstream).await?;
    let mut msg = Vec::with_capacity(raw.len() + 2);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(raw);
    s.write_all(&msg).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
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
                let tcp = request.protocol() == Protocol::Tcp;
                match self.forward(request.as_slice(), tcp).await {
                    Some(m) => {
                        md.response_code = m.metadata.response_code;
                        md.truncation = m.metadata.truncation;
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
        // A client that advertised a larger UDP payload (EDNS) gets answers up to that size;
        // without EDNS, answers over 512 bytes are truncated (TC) and the client retries on TCP.
        let edns = request.edns.as_ref().map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(e.max_payload().clamp(512, 4096));
            r
        });
        let resp = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
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
