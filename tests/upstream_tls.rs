//! TLS to backends (DESIGN.md §17), end to end on the real binary: a CA, server certificates (an
//! IP SAN for 127.0.0.1, DNS names for `sni`) and a client certificate are made at run time with
//! rcgen; the backends are in-test rustls servers that name themselves in `x-backend` and report
//! whether the request came over TLS (`x-tls`) and which SNI the client sent (`x-sni`, `-` for
//! none).
//!
//! Owns: what an operator sees of `[pool.NAME.tls]`. Must not touch: the network beyond loopback.

mod common;

use common::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate and its key, PEM and DER.
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// A test CA and a directory for the PEM files tether reads.
struct Pki {
    ca: Issued,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca: Issued { cert, key },
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca.cert, &self.ca.key).unwrap();
        Issued { cert, key }
    }

    /// A server certificate for `names` (IP addresses become IP SANs).
    fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    fn client(&self) -> Issued {
        self.issue(
            &["tether-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        )
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// The CA certificate as a PEM file.
    fn ca_file(&self) -> String {
        self.write("ca.pem", &self.ca.cert.pem())
    }

    /// `cert = ..., key = ...` lines for a client certificate.
    fn client_files(&self, c: &Issued) -> String {
        format!(
            "cert = {:?}\nkey = {:?}\n",
            self.write("client.pem", &c.cert.pem()),
            self.write("client.key", &c.key.serialize_pem())
        )
    }
}

// ---------------------------------------------------------------------------------------------
// TLS backends
// ---------------------------------------------------------------------------------------------

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tls-backend")
            .enable_all()
            .build()
            .unwrap()
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config presenting `cert`; with `client_ca`, a client certificate issued by
/// it is required.
fn server_config(cert: &Issued, client_ca: Option<&Pki>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca.der()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(
        builder
            .with_single_cert(vec![cert.der()], cert.key_der())
            .unwrap(),
    )
}

#[derive(Default)]
struct Counts {
    /// Non-health requests answered.
    hits: AtomicUsize,
    /// TLS handshakes completed (health checks' included).
    handshakes: AtomicUsize,
}

/// An in-test HTTPS/1.1 backend on 127.0.0.1. With `plain_too`, the same port also serves plain
/// HTTP (a connection whose first byte is not a TLS handshake record). Every request but
/// `/healthz` answers 200 with `x-backend`, `x-tls` (`yes`/`no`) and `x-sni`; `/healthz`
/// answers 200. Dropping it stops it (listener and connections).
struct TlsBackend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    fn start(name: &str, config: Arc<ServerConfig>, plain_too: bool) -> TlsBackend {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        std.set_nonblocking(true).unwrap();
        let counts = Arc::new(Counts::default());
        let rt = runtime();
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(std).unwrap()
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (name, c) = (name.to_owned(), counts.clone());
        let task = rt.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let _ = tcp.set_nodelay(true);
                        conns.spawn(serve(tcp, acceptor.clone(), plain_too, name.clone(), c.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TlsBackend { addr, counts, task }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn hits(&self) -> usize {
        self.counts.hits.load(Ordering::SeqCst)
    }
    fn handshakes(&self) -> usize {
        self.counts.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    plain_too: bool,
    name: String,
    counts: Arc<Counts>,
) {
    let mut first = [0u8; 1];
    let is_tls = if plain_too {
        matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16)
    } else {
        true
    };
    if !is_tls {
        http(TokioIo::new(tcp), name, "no", "-".into(), counts).await;
        return;
    }
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    counts.handshakes.fetch_add(1, Ordering::SeqCst);
    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
    http(TokioIo::new(tls), name, "yes", sni, counts).await;
}

async fn http<IO>(io: TokioIo<IO>, name: String, tls: &'static str, sni: String, c: Arc<Counts>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (name, sni, c) = (name.clone(), sni.clone(), c.clone());
        async move {
            if req.uri().path() != HEALTH_PATH {
                c.hits.fetch_add(1, Ordering::SeqCst);
            }
            let resp = Response::builder()
                .header("x-backend", name.as_str())
                .header("x-tls", tls)
                .header("x-sni", sni.as_str())
                .body(Full::new(Bytes::from(name)))
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

fn server_section() -> &'static str {
    "[server]\nlisten = [\"{LISTEN}\"]\nadmin = \"{ADMIN}\"\nthreads = 1\ngrace_period = \"1s\"\n"
}

/// A route `prefix` → pool `name` with `tls` lines (None: plain) and backends `(id, addr)`.
fn pool(
    name: &str,
    prefix: &str,
    tls: Option<&str>,
    extra: &str,
    bs: &[(&str, SocketAddr)],
) -> String {
    let mut s = format!(
        "[[route]]\npath_prefix = {prefix:?}\npool = {name:?}\n[pool.{name}]\npolicy = \"round_robin\"\n{extra}\n"
    );
    if let Some(tls) = tls {
        s.push_str(&format!("[pool.{name}.tls]\n{tls}\n"));
    }
    for (id, addr) in bs {
        s.push_str(&format!(
            "[[pool.{name}.backend]]\nid = {id:?}\naddr = \"{addr}\"\n"
        ));
    }
    s
}

fn start(pools: &[String]) -> Tether {
    Tether::start(&format!("{}{}", server_section(), pools.concat()))
}

#[track_caller]
fn expect_ok(t: &Tether, path: &str, backend: &str) -> Resp {
    let r = get(&t.url(path), &[]);
    assert_eq!(r.status, 200, "GET {path}: {r:?}\nstderr:\n{}", t.stderr());
    assert_eq!(r.backend(), Some(backend), "GET {path}");
    r
}

#[track_caller]
fn expect_502(t: &Tether, path: &str) {
    let r = get(&t.url(path), &[]);
    assert_eq!(r.status, 502, "GET {path}: {r:?}");
}

fn wait_for_log(t: &Tether, needle: &str) {
    wait_for(&format!("log line with {needle:?}"), WAIT, || {
        t.stderr().contains(needle)
    });
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn verified_tls_with_ca_file_and_an_ip_san_sends_no_sni() {
    let pki = Pki::new("test CA");
    let b = TlsBackend::start("a", server_config(&pki.server(&["127.0.0.1"]), None), false);
    let tls = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[pool("web", "/", Some(&tls), "", &[("a", b.addr())])]);
    let r = expect_ok(&t, "/x", "a");
    assert_eq!(r.header("x-tls"), Some("yes"));
    assert_eq!(r.header("x-sni"), Some("-"), "no sni configured: none sent");
}

#[test]
fn sni_is_sent_and_the_certificate_must_match_it() {
    let pki = Pki::new("test CA");
    let b = TlsBackend::start(
        "a",
        server_config(&pki.server(&["api.internal"]), None),
        false,
    );
    let ca = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[
        pool(
            "named",
            "/named/",
            Some(&format!("{ca}\nsni = \"api.internal\"")),
            "",
            &[("a", b.addr())],
        ),
        // Same certificate, no sni: it must be valid for 127.0.0.1, and it is not.
        pool("by_ip", "/ip/", Some(&ca), "", &[("a", b.addr())]),
        pool(
            "other",
            "/other/",
            Some(&format!("{ca}\nsni = \"web.internal\"")),
            "",
            &[("a", b.addr())],
        ),
    ]);
    let r = expect_ok(&t, "/named/x", "a");
    assert_eq!(r.header("x-sni"), Some("api.internal"));
    expect_502(&t, "/ip/x");
    expect_502(&t, "/other/x");
    wait_for_log(&t, "certificate not valid for name \"127.0.0.1\"");
    wait_for_log(&t, "certificate not valid for name \"web.internal\"");
}

#[test]
fn verify_false_accepts_an_untrusted_certificate() {
    let untrusted = Pki::new("nobody trusts me");
    let b = TlsBackend::start(
        "a",
        server_config(&untrusted.server(&["elsewhere.example"]), None),
        false,
    );
    let t = start(&[pool(
        "web",
        "/",
        Some("verify = false"),
        "",
        &[("a", b.addr())],
    )]);
    let r = expect_ok(&t, "/x", "a");
    assert_eq!(r.header("x-tls"), Some("yes"));
    wait_for_log(&t, "verify = false");
}

#[test]
fn mutual_tls_with_and_without_a_client_certificate() {
    let pki = Pki::new("test CA");
    let b = TlsBackend::start(
        "a",
        server_config(&pki.server(&["127.0.0.1"]), Some(&pki)),
        false,
    );
    let ca = format!("ca_file = {:?}", pki.ca_file());
    let with = format!("{ca}\n{}", pki.client_files(&pki.client()));
    // A client certificate from another CA is refused too.
    let stranger = Pki::new("another CA");
    let wrong = format!("{ca}\n{}", stranger.client_files(&stranger.client()));
    let t = start(&[
        pool("with", "/with/", Some(&with), "", &[("a", b.addr())]),
        pool("without", "/without/", Some(&ca), "", &[("a", b.addr())]),
        pool("wrong", "/wrong/", Some(&wrong), "", &[("a", b.addr())]),
    ]);
    for _ in 0..3 {
        expect_ok(&t, "/with/x", "a");
        expect_502(&t, "/without/x");
        expect_502(&t, "/wrong/x");
    }
    assert_eq!(
        b.hits(),
        3,
        "only requests with the right client certificate reach the backend"
    );
    // With TLS 1.3 the refusal comes after tether's side of the handshake, but it is still a
    // connect failure: counted, and the log says why.
    wait_for_log(&t, "received fatal alert: CertificateRequired");
    assert!(
        t.metric(
            "tether_upstream_connect_failures_total",
            &[("pool", "without"), ("backend", "a")]
        ) >= Some(3.0)
    );
}

#[test]
fn a_refused_client_certificate_is_retried_on_another_backend() {
    let pki = Pki::new("test CA");
    let strict = TlsBackend::start(
        "strict",
        server_config(&pki.server(&["127.0.0.1"]), Some(&pki)),
        false,
    );
    let open = TlsBackend::start(
        "open",
        server_config(&pki.server(&["127.0.0.1"]), None),
        false,
    );
    let ca = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[pool(
        "web",
        "/",
        Some(&ca),
        "retries = 1",
        &[("strict", strict.addr()), ("open", open.addr())],
    )]);
    for _ in 0..4 {
        expect_ok(&t, "/x", "open");
    }
    assert_eq!(strict.hits(), 0);
    assert!(
        t.metric(
            "tether_upstream_connect_failures_total",
            &[("pool", "web"), ("backend", "strict")]
        ) >= Some(2.0)
    );
}

#[test]
fn wrong_ca_fails_over_is_counted_marks_down_and_says_why() {
    let trusted = Pki::new("trusted CA");
    let other = Pki::new("other CA");
    let good = TlsBackend::start(
        "good",
        server_config(&trusted.server(&["127.0.0.1"]), None),
        false,
    );
    let bad = TlsBackend::start(
        "bad",
        server_config(&other.server(&["127.0.0.1"]), None),
        false,
    );
    let ca = format!("ca_file = {:?}", trusted.ca_file());
    let health = "[pool.checked.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2";
    let t = start(&[
        pool("lone", "/lone/", Some(&ca), "", &[("bad", bad.addr())]),
        pool(
            "pair",
            "/pair/",
            Some(&ca),
            "retries = 1",
            &[("bad", bad.addr()), ("good", good.addr())],
        ),
        pool(
            "checked",
            "/",
            Some(&ca),
            health,
            &[("bad", bad.addr()), ("good", good.addr())],
        ),
    ]);
    // The checks alone (no traffic to this pool yet) mark the bad backend down, and say why.
    wait_for("bad marked down by its checks", WAIT, || {
        let s = t.status();
        let pools = s["pools"].as_array().cloned().unwrap_or_default();
        pools.iter().any(|p| {
            p["name"] == "checked"
                && p["backends"]
                    .as_array()
                    .is_some_and(|bs| bs.iter().any(|b| b["id"] == "bad" && b["health"] == "down"))
        })
    });
    let down = |id| t.metric("tether_backend_up", &[("pool", "checked"), ("backend", id)]);
    assert_eq!((down("bad"), down("good")), (Some(0.0), Some(1.0)));
    let log = t.stderr();
    assert!(
        log.lines().any(|l| l.contains("backend is down")
            && l.contains("invalid peer certificate: UnknownIssuer")
            && l.contains("backend=bad")),
        "stderr:\n{log}"
    );
    for _ in 0..4 {
        expect_ok(&t, "/x", "good");
    }
    // Only the bad backend: nothing left after the failed handshake.
    expect_502(&t, "/lone/x");
    wait_for_log(&t, "pool=lone backend=bad");
    let log = t.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("connecting to backend failed")
                && l.contains("invalid peer certificate: UnknownIssuer")
                && l.contains("pool=lone")),
        "stderr:\n{log}"
    );
    // With a good backend beside it, every request is served: a failed handshake is a connect
    // failure, retried on the other backend, and counted.
    for _ in 0..4 {
        expect_ok(&t, "/pair/x", "good");
    }
    assert_eq!(bad.hits(), 0);
    let failures = |pool| {
        t.metric(
            "tether_upstream_connect_failures_total",
            &[("pool", pool), ("backend", "bad")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(failures("lone"), 1.0);
    assert!(failures("pair") >= 2.0, "{}", failures("pair"));
    assert!(t.metric_sum("tether_retries_total", &[("pool", "pair")]) >= 2.0);
}

#[test]
fn an_expired_certificate_is_refused() {
    let pki = Pki::new("test CA");
    let cert = pki.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, true);
    let b = TlsBackend::start("a", server_config(&cert, None), false);
    let tls = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[pool("web", "/", Some(&tls), "", &[("a", b.addr())])]);
    expect_502(&t, "/x");
    wait_for_log(&t, "invalid peer certificate: certificate expired");
}

#[test]
fn connections_are_reused_over_tls() {
    let pki = Pki::new("test CA");
    let b = TlsBackend::start("a", server_config(&pki.server(&["127.0.0.1"]), None), false);
    let tls = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[pool("web", "/", Some(&tls), "", &[("a", b.addr())])]);
    let n = 8;
    for _ in 0..n {
        expect_ok(&t, "/x", "a");
    }
    assert_eq!(b.hits(), n);
    assert!(
        b.handshakes() < n / 2,
        "{} handshakes for {n} sequential requests: upstream TLS connections are not reused",
        b.handshakes()
    );
}

#[test]
fn plain_and_tls_pools_to_one_address_never_share_a_connection() {
    let pki = Pki::new("test CA");
    let cert = pki.server(&["127.0.0.1", "a.internal", "b.internal"]);
    let b = TlsBackend::start("dual", server_config(&cert, None), true);
    let ca = format!("ca_file = {:?}", pki.ca_file());
    let t = start(&[
        pool("plain", "/plain/", None, "", &[("dual", b.addr())]),
        pool("tls", "/tls/", Some(&ca), "", &[("dual", b.addr())]),
        pool(
            "sni_a",
            "/a/",
            Some(&format!("{ca}\nsni = \"a.internal\"")),
            "",
            &[("dual", b.addr())],
        ),
        pool(
            "sni_b",
            "/b/",
            Some(&format!("{ca}\nsni = \"b.internal\"")),
            "",
            &[("dual", b.addr())],
        ),
    ]);
    for _ in 0..4 {
        for (path, tls, sni) in [
            ("/plain/x", "no", "-"),
            ("/tls/x", "yes", "-"),
            ("/a/x", "yes", "a.internal"),
            ("/b/x", "yes", "b.internal"),
        ] {
            let r = expect_ok(&t, path, "dual");
            assert_eq!(r.header("x-tls"), Some(tls), "{path}");
            assert_eq!(r.header("x-sni"), Some(sni), "{path}");
        }
    }
    // Reuse still happens within each TLS identity: 3 of them, 12 TLS requests.
    assert!(b.handshakes() < 12, "{} handshakes", b.handshakes());
}

#[test]
fn certificates_reload_with_the_config() {
    let trusted = Pki::new("trusted CA");
    let other = Pki::new("other CA");
    let b = TlsBackend::start(
        "a",
        server_config(&trusted.server(&["127.0.0.1"]), None),
        false,
    );
    // The pool trusts the wrong CA at first.
    let ca_path = trusted.write("pool-ca.pem", &other.ca.cert.pem());
    let tls = format!("ca_file = {ca_path:?}");
    let t = start(&[pool("web", "/", Some(&tls), "", &[("a", b.addr())])]);
    expect_502(&t, "/x");
    // Same config file, new CA file content: a reload reads it again.
    std::fs::write(&ca_path, trusted.ca.cert.pem()).unwrap();
    t.sighup();
    wait_for("generation 2", WAIT, || t.status()["generation"] == 2);
    expect_ok(&t, "/x", "a");
    assert_eq!(b.hits(), 1);
}
