//! HTTPS: the certificate is chosen by SNI from the routes' certificates (exact domain, then
//! the nearest wildcard), falling back to a default one — configured, or generated
//! self-signed at start so HTTPS works before anyone configures anything. ALPN offers h2.

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct SniResolver {
    by_domain: RwLock<Arc<HashMap<String, Arc<CertifiedKey>>>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: Arc<CertifiedKey>) -> SniResolver {
        SniResolver {
            by_domain: RwLock::default(),
            default,
        }
    }

    /// Replaces the per-domain certificates (called on every route change). A route whose
    /// certificate does not parse is logged and served with the default certificate.
    pub fn set<'a>(&self, certs: impl Iterator<Item = (&'a str, &'a slipway_types::Certificate)>) {
        let mut map = HashMap::new();
        for (domain, c) in certs {
            match load(&c.cert, &c.key) {
                Ok(k) => {
                    map.insert(domain.to_string(), k);
                }
                Err(e) => {
                    tracing::warn!(%domain, "router: the route's certificate is unusable: {e}")
                }
            }
        }
        *self.by_domain.write().unwrap() = Arc::new(map);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let map = self.by_domain.read().unwrap().clone();
        if let Some(k) = map.get(&name) {
            return Some(k.clone());
        }
        let mut rest = name.as_str();
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(k) = map.get(&format!("*.{rest}")) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// A certificate chain and key from PEM.
pub fn load(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM: {e:?}"))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in the PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("bad private key PEM: {e:?}"))?;
    let key = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("unsupported private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// A self-signed certificate for `names`, as PEM (certificate, key).
pub fn self_signed(names: &[&str]) -> anyhow::Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

pub fn server_config(resolver: Arc<SniResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
