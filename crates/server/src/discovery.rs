//! The discovery role: the registry — in-process (`LocalRegistry`), or on etcd
//! (`EtcdRegistry`) with `--etcd` — with its HTTP/SSE API on `--discovery-listen` (behind the
//! API key: routers and hosts in other processes without `--etcd` follow it there), its DNS
//! (`SERVICE.discover.`) and the bridge that registers the local host's jobs.
//!
//! Needs: the API key. Gives: the registry (the router's backends when it runs in the same
//! process), [`Discovery::follow_host`] for the host role, and the bridge the traffic gate
//! falls back on when no router is known ([`gate::DiscoveryGate`], used by
//! `crate::router::gate`).

pub mod bridge;
pub mod gate;

use crate::Config;
use crate::args::{CONTROL_HEADER_TIMEOUT, DISCOVERY_MAX_CONNECTIONS, DnsListen};
use anyhow::Context;
use anyhow::Result;
use bridge::Bridge;
use slipway_discovery::{EtcdRegistry, LocalRegistry, Registry};
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

/// The etcd client `--etcd` asks for, once etcd answered (`None` without `--etcd`). Every
/// role that coordinates through etcd (discovery, and the elections of the singleton roles)
/// takes its client from here. A bad URL or an etcd that answers on none of them is an error
/// naming the URLs, before any role starts.
pub async fn connect_etcd(config: &Config) -> Result<Option<slipway_etcd::Client>> {
    let Some(urls) = config.args.etcd.as_deref() else {
        return Ok(None);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = slipway_etcd::Client::connect(urls)
        .await
        .with_context(|| format!("--etcd {urls}"))?;
    tracing::info!(endpoints = %urls, "etcd answers");
    Ok(Some(client))
}

/// The registry on etcd that every process given `--etcd` uses, discovery role or not.
pub fn etcd_registry(etcd: &slipway_etcd::Client) -> Arc<dyn Registry> {
    Arc::new(EtcdRegistry::new(
        etcd.clone(),
        slipway_discovery::DEFAULT_TTL,
    ))
}

/// Starts the registry (on `etcd` when given, else in-process) and its HTTP API. A taken
/// `--discovery-listen` port does not stop the server: the API is skipped with a warning
/// naming the flag.
pub async fn start(
    config: &Config,
    api_key: &str,
    etcd: Option<&slipway_etcd::Client>,
) -> Result<Discovery> {
    let args = &config.args.routing;
    let registry: Arc<dyn Registry> = match etcd {
        Some(etcd) => etcd_registry(etcd),
        None => Arc::new(LocalRegistry::new(slipway_discovery::DEFAULT_TTL)),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: crate::ServerArgs,
    }

    fn config(flags: &[&str], dir: &std::path::Path) -> Config {
        let mut argv = vec!["slipway", "--discovery-listen", "127.0.0.1:0"];
        argv.extend_from_slice(flags);
        let args = Cmd::try_parse_from(argv).unwrap().args;
        let dir = dir.to_path_buf();
        Config::new(args, move || Ok(dir), 1024, false).unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_etcd_fails_the_start_naming_its_urls() {
        let dir = tempfile::tempdir().unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = connect_etcd(&config(&["--etcd", &dead], dir.path()))
            .await
            .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("--etcd {dead}")) && text.contains("unreachable"),
            "{text}"
        );
        let e = connect_etcd(&config(&["--etcd", "etcd:2379"], dir.path()))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("http://HOST:PORT"), "{e:#}");
        assert!(
            connect_etcd(&config(&[], dir.path()))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn with_etcd_the_discovery_role_keeps_its_instances_in_etcd() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let config = config(&["--etcd", &etcd.client_urls()], dir.path());
        let client = connect_etcd(&config).await.unwrap().unwrap();
        let discovery = start(&config, "key", Some(&client)).await.unwrap();
        let new = slipway_discovery::NewInstance {
            addr: "10.0.0.1:80".into(),
            ..Default::default()
        };
        discovery.registry.register("web", "a", &new).await.unwrap();
        // Another process with --etcd and no discovery role sees it, with no HTTP hop.
        let other = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let seen = etcd_registry(&other).instances("web").await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].addr, "10.0.0.1:80");
        let raw = other.get("/slipway/discovery/web/a").await.unwrap();
        assert!(
            raw.is_some_and(|kv| kv.lease != 0),
            "an instance lives under a lease"
        );
    }

    /// A cluster moved from the embedded registry to etcd still gets a leader: hosts and the
    /// store only ever raise the epoch they hold, and the epochs (instance indexes) etcd hands
    /// out are above every one the in-process registry handed out before, the same in every
    /// process, and still rising.
    #[tokio::test]
    async fn epochs_on_etcd_continue_above_the_embedded_registrys() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let new = slipway_discovery::NewInstance {
            addr: "10.0.0.1:80".into(),
            ..Default::default()
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let local = slipway_discovery::LocalRegistry::new(std::time::Duration::from_secs(10));
        let embedded = local
            .register("slipway-scheduler", "a", &new)
            .await
            .unwrap();

        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let first = etcd_registry(&client);
        let b = first
            .register("slipway-scheduler", "b", &new)
            .await
            .unwrap();
        assert!(
            b.index > embedded.index,
            "etcd's epoch {} is not above the embedded registry's {}",
            b.index,
            embedded.index
        );
        // Another process agrees on the epoch (the base is read, not taken from its clock).
        let other = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let second = etcd_registry(&other);
        let leader = second.leader("slipway-scheduler").await.unwrap().unwrap();
        assert_eq!((leader.id.as_str(), leader.index), ("b", b.index));
        let c = second
            .register("slipway-scheduler", "c", &new)
            .await
            .unwrap();
        assert!(c.index > b.index, "{} then {}", b.index, c.index);
        // A watch reports the same indexes.
        let mut watch = second.watch(Some("slipway-scheduler")).await.unwrap();
        let mut seen = Vec::new();
        while let Some(e) = watch.recv().await {
            if e.kind == slipway_discovery::EventKind::Current {
                break;
            }
            if e.kind == slipway_discovery::EventKind::Up {
                seen.push(e.instance.unwrap().index);
            }
        }
        seen.sort();
        assert_eq!(seen, vec![b.index, c.index]);
        // A base that is not Slipway's is refused, naming the key and the fix.
        other
            .put(&slipway_etcd::PutRequest {
                key: slipway_discovery::etcd::EPOCH_BASE_KEY.into(),
                value: b"garbage".to_vec(),
                lease: 0,
                prev_kv: false,
            })
            .await
            .unwrap();
        let fresh = etcd_registry(&other);
        let e = fresh.instances("slipway-scheduler").await.unwrap_err();
        assert!(e.to_string().contains("/slipway/epoch-base"), "{e}");
    }
}
