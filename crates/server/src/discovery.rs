//! The discovery role: an in-process registry (`LocalRegistry`) with its HTTP/SSE API on
//! `--discovery-listen` (behind the API key: routers and hosts in other processes follow it
//! there), its DNS (`SERVICE.discover.`) and the bridge that registers the local host's jobs.
//!
//! Needs: the API key. Gives: the registry (the router's backends when it runs in the same
//! process), [`Discovery::follow_host`] for the host role, and a traffic gate for the
//! scheduler when no router runs here.

pub mod bridge;
pub mod gate;

use crate::Config;
use crate::args::{CONTROL_HEADER_TIMEOUT, DISCOVERY_MAX_CONNECTIONS, DnsListen};
use anyhow::Result;
use bridge::Bridge;
use slipway_discovery::{LocalRegistry, Registry};
use slipway_host::HostApi;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub struct Discovery {
    pub registry: Arc<dyn Registry>,
    /// `--dns-listen` and `--dns-upstream`, for [`Discovery::start_dns`].
    dns: (DnsListen, Option<SocketAddr>),
    /// The jobs this process registered (shared with the traffic gates, which deregister a
    /// job to drain it).
    pub(crate) bridge: Arc<Bridge>,
}

/// Starts the registry and its HTTP API. A taken `--discovery-listen` port does not stop the
/// server: the API is skipped with a warning naming the flag.
pub async fn start(config: &Config, api_key: &str) -> Result<Discovery> {
    let args = &config.args.routing;
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(slipway_discovery::DEFAULT_TTL));
    match tokio::net::TcpListener::bind(args.discovery_listen).await {
        Ok(l) => {
            tracing::info!("discovery API on http://{}", l.local_addr()?);
            let access = slipway_discovery::http::Access {
                key: api_key.to_string(),
                token: config.cluster_token.clone(),
                allow: args.discovery_allow.clone(),
            };
            let app = slipway_discovery::http::router(registry.clone(), access);
            let limits = crate::listen::Limits {
                header_timeout: args.header_timeout.unwrap_or(CONTROL_HEADER_TIMEOUT),
                max_connections: DISCOVERY_MAX_CONNECTIONS,
            };
            tokio::spawn(crate::listen::serve(
                l,
                app,
                limits,
                "discovery's API",
                std::future::pending(),
            ));
        }
        Err(e) => tracing::warn!(
            "discovery API: cannot listen on {}: {e}; use --discovery-listen to pick another address",
            args.discovery_listen
        ),
    }
    Ok(Discovery {
        registry,
        dns: (args.dns_listen, args.dns_upstream),
        bridge: Arc::new(Bridge::default()),
    })
}

impl Discovery {
    /// Registers a host's jobs here (see [`bridge::follow_host`]).
    pub fn follow_host(&self, host: Arc<dyn HostApi>) {
        bridge::follow_host(host, self.registry.clone(), self.bridge.clone());
    }

    /// The scheduler's gate when no router runs in this process (see [`gate`]).
    pub fn traffic_gate(&self) -> Arc<dyn slipway_scheduler::TrafficGate> {
        Arc::new(gate::DiscoveryGate {
            bridge: self.bridge.clone(),
        })
    }

    /// Starts discovery's DNS as `--dns-listen` says. `bridge`: the local host agent's job
    /// network, `None` without one. Returns the nameserver that agent's containers should use
    /// — the DNS, when it serves the bridge's address on port 53 (a resolv.conf cannot name
    /// another port) — or `None`: they keep the host's resolv.conf. Never fails the server: a
    /// DNS that cannot start is a warning.
    pub async fn start_dns(
        &self,
        bridge: Option<&slipway_host::runc::network::NetworkConfig>,
    ) -> Option<std::net::Ipv4Addr> {
        use slipway_discovery::dns;
        let addr = match (self.dns.0, bridge) {
            (DnsListen::Off, _) | (DnsListen::Auto, None) => {
                tracing::info!("discovery DNS: off; containers use the host's /etc/resolv.conf");
                return None;
            }
            (DnsListen::Auto, Some(net)) => SocketAddr::new(net.gateway().into(), 53),
            (DnsListen::At(a), _) => a,
        };
        if let Some(net) = bridge {
            // The DNS binds the bridge's address, which exists once the bridge is set up; the
            // agent sets it up again when it starts (idempotent).
            let net = net.clone();
            let setup =
                tokio::task::spawn_blocking(move || slipway_host::runc::network::setup_host(&net));
            if let Ok(Err(e)) | Err(e) = setup.await.map_err(anyhow::Error::from) {
                tracing::warn!(
                    "discovery DNS: off, the jobs' bridge cannot be set up ({e:#}); containers use the host's /etc/resolv.conf"
                );
                return None;
            }
        }
        let mut upstream = self.dns.1.or_else(dns::host_resolver);
        if upstream == Some(addr) {
            tracing::warn!(
                "discovery DNS: the upstream resolver is this DNS itself ({addr}); other names are refused. Use --dns-upstream"
            );
            upstream = None;
        } else if upstream.is_none() {
            tracing::warn!(
                "discovery DNS: /etc/resolv.conf names no nameserver and --dns-upstream is not set; names outside {} are refused",
                dns::DOMAIN
            );
        }
        let bound = match dns::serve(dns::DnsHandler::new(self.registry.clone(), upstream), addr)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(
                    "discovery DNS: cannot listen on {addr}: {e}; containers use the host's /etc/resolv.conf (use --dns-listen to pick another address, or `none`)"
                );
                return None;
            }
        };
        let to = upstream.map_or("nowhere (refused)".to_string(), |u| u.to_string());
        tracing::info!("discovery DNS on {bound}, forwarding other names to {to}");
        let gateway = bridge?.gateway();
        let serves_bridge = bound.port() == 53
            && (bound.ip() == IpAddr::V4(gateway) || bound.ip().is_unspecified());
        if !serves_bridge {
            tracing::info!(
                "discovery DNS: not on {gateway}:53, so containers use the host's /etc/resolv.conf"
            );
        }
        serves_bridge.then_some(gateway)
    }
}
