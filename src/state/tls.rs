//! TLS termination certificates: an SNI resolver per TLS listener whose certificates sit in an
//! `ArcSwap`, so a reload rotates them with no restart (new handshakes get the new certificate;
//! open connections continue).
//!
//! Owns: turning validated `CertPair`s into rustls `CertifiedKey`s and picking one per handshake.
//! Must not touch: files (config validation already read and checked them) or the listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{CertPair, TlsListener};

/// One certificate and the names it serves (lower-case; `*.example.com` wildcards kept).
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks a certificate by SNI: exact name, then wildcard, then the first certificate listed
/// (also for clients that send no SNI).
#[derive(Default)]
pub struct SniResolver {
    entries: ArcSwap<Vec<Entry>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certs", &self.entries.load().len())
            .finish()
    }
}

impl SniResolver {
    pub fn new(certs: &[CertPair]) -> Result<SniResolver, String> {
        let r = SniResolver::default();
        r.replace(certs)?;
        Ok(r)
    }

    /// Swaps in a new certificate set (reload).
    pub fn replace(&self, certs: &[CertPair]) -> Result<(), String> {
        let provider = rustls::crypto::ring::default_provider();
        let mut entries = Vec::with_capacity(certs.len());
        for c in certs {
            let key = CertifiedKey::from_der(c.chain.clone(), c.key.clone_key(), &provider)
                .map_err(|e| format!("{}: {e}", c.cert_path.display()))?;
            let names = c.chain.first().map(|der| names_of(der)).unwrap_or_default();
            entries.push(Entry {
                names,
                key: Arc::new(key),
            });
        }
        self.entries.store(Arc::new(entries));
        Ok(())
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let entries = self.entries.load();
        if let Some(sni) = sni {
            let sni = sni.to_ascii_lowercase();
            if let Some(e) = entries.iter().find(|e| e.names.contains(&sni)) {
                return Some(e.key.clone());
            }
            if let Some((_, parent)) = sni.split_once('.') {
                let wildcard = format!("*.{parent}");
                if let Some(e) = entries.iter().find(|e| e.names.contains(&wildcard)) {
                    return Some(e.key.clone());
                }
            }
        }
        entries.first().map(|e| e.key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// DNS names of a certificate: subjectAltName DNS entries, else the subject CN.
fn names_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    names
}

/// The resolvers of all TLS listeners, by listen address.
#[derive(Default)]
pub struct Certs {
    by_listener: Vec<(SocketAddr, Arc<SniResolver>)>,
}

impl Certs {
    pub fn new(listeners: &[TlsListener]) -> Result<Certs, String> {
        let mut by_listener = Vec::new();
        for l in listeners {
            by_listener.push((l.listen, Arc::new(SniResolver::new(&l.certs)?)));
        }
        Ok(Certs { by_listener })
    }

    pub fn resolver(&self, addr: SocketAddr) -> Option<Arc<SniResolver>> {
        self.by_listener
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, r)| r.clone())
    }

    /// Rotates certificates after a reload (listener addresses are unchanged: reload refuses
    /// otherwise).
    pub fn reload(&self, listeners: &[TlsListener]) -> Result<(), String> {
        for l in listeners {
            if let Some(r) = self.resolver(l.listen) {
                r.replace(&l.certs)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_certificate_names_are_read() {
        let pem = std::fs::read("tests/fixtures/tls/cert.pem").unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(names_of(&der), vec!["localhost".to_string()]);
    }
}
