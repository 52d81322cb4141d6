//! TLS termination: HTTPS on a `[[server.tls]]` listener, `X-Forwarded-Proto: https`, and
//! certificate rotation on reload without a restart.

mod common;

use common::h2::tls_fixture;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

fn load_cert(name: &str) -> CertificateDer<'static> {
    let pem = std::fs::read(tls_fixture(name)).unwrap();
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    cert
}

/// One HTTPS GET trusting exactly `trust`; returns (presented certificate, raw response).
fn https_get(
    addr: std::net::SocketAddr,
    trust: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(load_cert(trust)).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no certificate")?;
    Ok((cert, String::from_utf8_lossy(&out).into_owned()))
}

fn config(backend: &Backend, tls_port: u16, cert: &str, key: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[server.tls]]
listen = "127.0.0.1:{tls_port}"
certs = [{{ cert = "{}", key = "{}" }}]
[[route]]
pool = "web"
[pool.web]
policy = "round_robin"
[[pool.web.backend]]
id = "b"
addr = "{}"
"#,
        tls_fixture(cert),
        tls_fixture(key),
        backend.addr()
    )
}

#[test]
fn https_is_terminated_and_certificates_rotate_on_reload() {
    let b = Backend::start("b");
    let port = free_port();
    let t = Tether::start(&config(&b, port, "cert.pem", "key.pem"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut last = String::new();
    let up = eventually(Duration::from_secs(10), || {
        match https_get(addr, "cert.pem") {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(up, "TLS listener not answering: {last}");
    let (cert, resp) = https_get(addr, "cert.pem").unwrap();
    assert_eq!(cert, load_cert("cert.pem"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-backend: b"), "{resp}");
    assert!(resp.contains(r#""x-forwarded-proto":"https""#), "{resp}");

    let gen = t.metric("tether_config_generation", &[]).unwrap();
    t.write_config(&config(&b, port, "cert2.pem", "key2.pem"));
    t.sighup();
    wait_for("reload", Duration::from_secs(10), || {
        t.metric("tether_config_generation", &[]).unwrap() > gen
    });
    let (cert, resp) =
        https_get(addr, "cert2.pem").expect("new handshakes get the new certificate");
    assert_eq!(cert, load_cert("cert2.pem"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        https_get(addr, "cert.pem").is_err(),
        "the old certificate is no longer served"
    );
}
