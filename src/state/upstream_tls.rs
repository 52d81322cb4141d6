//! TLS to backends (DESIGN.md §17): a pool's validated `[pool.NAME.tls]` becomes the options of
//! each backend's `HttpPeer`, which both engines and the health checks connect with (through
//! Pingora's rustls connector), plus a TLS identity that keeps connections made with different
//! TLS settings apart in every connection pool (Pingora's, by `group_key`; the fast path's idle
//! lists, by [`crate::state::upstream::Key`]).
//!
//! Owns: the mapping of [`UpstreamTls`] onto `HttpPeer` and the identity. Must not touch: files
//! (validation read and checked every certificate and key), sockets, the request path.
//!
//! Why the backend's IP becomes the SNI when `sni` is not set: Pingora 0.9.1's rustls connector
//! (`connectors/tls/rustls/mod.rs`) parses the peer's SNI into a `ServerName` for every TLS
//! connection, so an empty one fails the connection ("Failed to parse domain"), and where it gets
//! that far it also skips certificate verification for an empty SNI. DESIGN's "no `sni`" means:
//! send no SNI, and the certificate must be valid for the backend's IP address. rustls does
//! exactly that for a `ServerName::IpAddress`: it never sends an IP address as SNI (rustls
//! `client/hs.rs` sends the extension only for DNS names), and webpki matches it against the
//! certificate's IP subjectAltNames. With `verify = false` Pingora installs its own verifier that
//! accepts any certificate (handshake signatures are still checked).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use pingora::connectors::TransportConnector;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::UpstreamTls;

/// A pool's TLS settings in the shapes `HttpPeer` takes, built once per snapshot and shared by
/// the pool's peers.
pub struct PoolTls {
    sni: Option<String>,
    verify: bool,
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
    identity: u64,
}

impl PoolTls {
    pub fn new(pool: &str, t: &UpstreamTls) -> PoolTls {
        if !t.verify {
            tracing::warn!(
                pool,
                "pool.{pool}.tls.verify = false: backend certificates are not verified (any certificate is accepted)"
            );
        }
        let ca = t.ca.as_ref().map(|ca| {
            ca.certs
                .iter()
                .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let client = t.client.as_ref().map(|c| {
            Arc::new(CertKey::new(
                c.chain.iter().map(|der| der.to_vec()).collect(),
                c.key.secret_der().to_vec(),
            ))
        });
        PoolTls {
            sni: t.sni.clone(),
            verify: t.verify,
            ca,
            client,
            identity: identity(t),
        }
    }

    /// Nonzero; equal for two pools exactly when their TLS settings (SNI, verification, CA
    /// certificates, client certificate and key) are.
    pub fn identity(&self) -> u64 {
        self.identity
    }
}

/// The peer for a backend at `addr`: plain HTTP, or TLS with the pool's settings.
pub fn peer(addr: SocketAddr, tls: Option<&PoolTls>) -> HttpPeer {
    let Some(t) = tls else {
        return HttpPeer::new(addr, false, String::new());
    };
    // No `sni`: the IP literal, which rustls never sends and verifies against IP SANs.
    let sni = t.sni.clone().unwrap_or_else(|| addr.ip().to_string());
    let mut peer = HttpPeer::new(addr, true, sni);
    peer.options.verify_cert = t.verify;
    peer.options.verify_hostname = t.verify;
    peer.options.ca = t.ca.clone();
    peer.client_cert_key = t.client.clone();
    peer.group_key = t.identity;
    peer
}

/// The TLS identity of a pool's settings (see [`PoolTls::identity`]).
fn identity(t: &UpstreamTls) -> u64 {
    let mut h = DefaultHasher::new();
    t.sni.hash(&mut h);
    t.verify.hash(&mut h);
    if let Some(ca) = &t.ca {
        for der in &ca.certs {
            der.as_ref().hash(&mut h);
        }
    }
    if let Some(c) = &t.client {
        for der in &c.chain {
            der.as_ref().hash(&mut h);
        }
        c.key.secret_der().hash(&mut h);
    }
    h.finish() | 1
}

/// Whether a connection failed in the TLS handshake (or on the certificates it needed). Such a
/// failure is a connect failure like any other (retried, counted), except that when no backend is
/// left to try the answer is `502`, not `503` (DESIGN.md §17): the backend is there but cannot be
/// talked to as configured, which waiting will not fix.
pub fn is_handshake_failure(e: &pingora::Error) -> bool {
    matches!(
        e.etype(),
        pingora::ErrorType::TLSHandshakeFailure | pingora::ErrorType::InvalidCert
    ) || refused_after_handshake(e)
}

/// Whether a fresh connection's first read failed because the backend refused the handshake
/// after tether's side of it was done: in TLS 1.3 a server checks the client certificate after
/// the client's Finished, so its refusal (a fatal alert, e.g. `CertificateRequired`) arrives with
/// the first read. Nothing reached the backend's HTTP layer: a connect failure like any other.
pub fn refused_after_handshake(e: &pingora::Error) -> bool {
    let mut cause = e.cause.as_deref();
    while let Some(c) = cause {
        // pingora-proxy wraps the client session's error whole (a boxed `Error` as the cause).
        let inner = c
            .downcast_ref::<pingora::Error>()
            .or_else(|| c.downcast_ref::<Box<pingora::Error>>().map(|b| &**b));
        if let Some(inner) = inner {
            cause = inner.cause.as_deref();
            continue;
        }
        return c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|r| r.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
    }
    false
}

/// The connector health checks make TLS connections with (one per process: building one loads
/// the system roots).
pub fn connector() -> &'static TransportConnector {
    static CONNECTOR: OnceLock<TransportConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| TransportConnector::new(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CaBundle, CertPair};
    use pingora::upstreams::peer::Peer;
    use std::path::PathBuf;

    fn pem_certs(path: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let pem = std::fs::read(path).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn client() -> CertPair {
        let key = std::fs::read("tests/fixtures/tls/key.pem").unwrap();
        CertPair {
            cert_path: PathBuf::from("tests/fixtures/tls/cert.pem"),
            key_path: PathBuf::from("tests/fixtures/tls/key.pem"),
            chain: pem_certs("tests/fixtures/tls/cert.pem"),
            key: Arc::new(
                rustls_pemfile::private_key(&mut key.as_slice())
                    .unwrap()
                    .unwrap(),
            ),
        }
    }

    fn tls(sni: Option<&str>) -> UpstreamTls {
        UpstreamTls {
            sni: sni.map(str::to_owned),
            verify: true,
            ca: None,
            client: None,
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:8443".parse().unwrap()
    }

    #[test]
    fn a_fatal_alert_under_a_read_error_is_a_refused_handshake() {
        use pingora::{Error, ErrorType};
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let read = Error::because(ErrorType::ReadError, "while reading response headers", io);
        assert!(refused_after_handshake(&read));
        assert!(is_handshake_failure(&read));
        // As pingora-proxy hands it over: the session's error boxed whole as the cause.
        let wrapped = Error::because(ErrorType::ReadError, "proxy", read);
        assert!(refused_after_handshake(&wrapped));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = Error::because(ErrorType::ReadError, "while reading", reset);
        assert!(!refused_after_handshake(&reset));
        assert!(!is_handshake_failure(&reset));
        assert!(is_handshake_failure(&Error::new(
            ErrorType::TLSHandshakeFailure
        )));
    }

    #[test]
    fn plain_pool_makes_a_plain_peer() {
        let p = peer(addr(), None);
        assert!(!p.tls());
        assert_eq!(p.group_key, 0);
    }

    #[test]
    fn without_sni_the_ip_literal_is_verified_and_never_sent() {
        let t = PoolTls::new("shop", &tls(None));
        let p = peer(addr(), Some(&t));
        assert!(p.tls());
        assert_eq!(p.sni(), "127.0.0.1");
        // What Pingora's connector does with it: an IP-address server name, which rustls does
        // not put in the ClientHello.
        assert!(matches!(
            rustls::pki_types::ServerName::try_from(p.sni()).unwrap(),
            rustls::pki_types::ServerName::IpAddress(_)
        ));
        assert!(p.verify_cert() && p.verify_hostname());
        let v6 = peer("[::1]:8443".parse().unwrap(), Some(&t));
        assert_eq!(v6.sni(), "::1");
    }

    #[test]
    fn settings_reach_the_peer() {
        let mut u = tls(Some("api.internal"));
        u.verify = false;
        u.ca = Some(CaBundle {
            path: PathBuf::from("tests/fixtures/tls/cert.pem"),
            certs: pem_certs("tests/fixtures/tls/cert.pem"),
        });
        u.client = Some(client());
        let t = PoolTls::new("shop", &u);
        let p = peer(addr(), Some(&t));
        assert_eq!(p.sni(), "api.internal");
        assert!(!p.verify_cert() && !p.verify_hostname());
        assert_eq!(p.get_ca().map(|c| c.len()), Some(1));
        assert!(p.get_client_cert_key().is_some());
        assert_eq!(p.group_key, t.identity());
    }

    #[test]
    fn identity_separates_different_settings() {
        let a = PoolTls::new("a", &tls(None)).identity();
        let same = PoolTls::new("b", &tls(None)).identity();
        let sni = PoolTls::new("c", &tls(Some("x.internal"))).identity();
        let mut unverified = tls(None);
        unverified.verify = false;
        let unverified = PoolTls::new("d", &unverified).identity();
        let mut mtls = tls(None);
        mtls.client = Some(client());
        let mtls = PoolTls::new("e", &mtls).identity();
        assert_eq!(a, same);
        assert_ne!(a, 0);
        let all = [a, sni, unverified, mtls];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // Different settings, different Pingora pool keys too.
        let p1 = peer(addr(), Some(&PoolTls::new("a", &tls(None))));
        let p2 = peer(addr(), Some(&PoolTls::new("c", &tls(Some("x.internal")))));
        assert_ne!(p1.reuse_hash(), p2.reuse_hash());
        assert_ne!(p1.reuse_hash(), peer(addr(), None).reuse_hash());
    }
}
