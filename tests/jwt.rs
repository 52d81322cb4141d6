//! JWT validation (DESIGN.md §15) on the real binary: every refusal a client can meet (status,
//! `WWW-Authenticate`, nothing forwarded, `tether_jwt_total`), every algorithm with the key
//! sources that carry it, `jwks_url` rotation and staleness against an in-test JWKS server,
//! `forward_claims` (spoofed copies removed), and `jwt:sub` hashing agreed by two instances.
//!
//! Keys: HMAC secrets, ECDSA and Ed25519 keys are generated here with ring; the RSA key and the
//! certificates are test fixtures (tests/fixtures/jwt: ring cannot generate RSA keys).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Tokens and keys.

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A signing key of the test.
enum Signer {
    Hmac(ring::hmac::Key),
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

impl Signer {
    fn hmac(alg: &str, secret: &[u8]) -> Signer {
        let a = match alg {
            "HS256" => ring::hmac::HMAC_SHA256,
            "HS384" => ring::hmac::HMAC_SHA384,
            _ => ring::hmac::HMAC_SHA512,
        };
        Signer::Hmac(ring::hmac::Key::new(a, secret))
    }

    fn rsa() -> Signer {
        let pem = std::fs::read(fixture("rsa.key")).unwrap();
        let der = pem_der(&pem, "PRIVATE KEY");
        Signer::Rsa(sig::RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    fn ec(alg: &str) -> Signer {
        let rng = SystemRandom::new();
        let a = ec_alg(alg);
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
        Signer::Ec(sig::EcdsaKeyPair::from_pkcs8(a, pkcs8.as_ref(), &rng).unwrap())
    }

    fn ec_from_fixture() -> Signer {
        let pem = std::fs::read(fixture("ec.key")).unwrap();
        let der = pem_der(&pem, "PRIVATE KEY");
        let a = ec_alg("ES256");
        Signer::Ec(sig::EcdsaKeyPair::from_pkcs8(a, &der, &SystemRandom::new()).unwrap())
    }

    fn ed() -> Signer {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn sign(&self, alg: &str, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Hmac(k) => ring::hmac::sign(k, msg).as_ref().to_vec(),
            Signer::Rsa(k) => {
                let enc: &'static dyn sig::RsaEncoding = match alg {
                    "RS256" => &sig::RSA_PKCS1_SHA256,
                    "RS384" => &sig::RSA_PKCS1_SHA384,
                    "RS512" => &sig::RSA_PKCS1_SHA512,
                    "PS256" => &sig::RSA_PSS_SHA256,
                    "PS384" => &sig::RSA_PSS_SHA384,
                    _ => &sig::RSA_PSS_SHA512,
                };
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(enc, &rng, msg, &mut out).unwrap();
                out
            }
            Signer::Ec(k) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rsa(k) => {
                let c: sig::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let point = k.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let crv = if half == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": kid, "crv": crv,
                       "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..])})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
            Signer::Hmac(_) => panic!("no public JWK for a secret"),
        }
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    fn public_pem(&self) -> String {
        let (prefix, key): (Vec<u8>, &[u8]) = match self {
            Signer::Ec(k) if k.public_key().as_ref().len() == 65 => (
                hex("3059301306072a8648ce3d020106082a8648ce3d030107034200"),
                k.public_key().as_ref(),
            ),
            Signer::Ec(k) => (
                hex("3076301006072a8648ce3d020106052b81040022036200"),
                k.public_key().as_ref(),
            ),
            Signer::Ed(k) => (hex("302a300506032b6570032100"), k.public_key().as_ref()),
            _ => panic!("use the RSA fixture"),
        };
        let mut der = prefix;
        der.extend_from_slice(key);
        pem("PUBLIC KEY", &der)
    }
}

fn ec_alg(alg: &str) -> &'static sig::EcdsaSigningAlgorithm {
    if alg == "ES256" {
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING
    } else {
        &sig::ECDSA_P384_SHA384_FIXED_SIGNING
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn pem_der(pem: &[u8], label: &str) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: String = text
        .split(&begin)
        .nth(1)
        .unwrap()
        .split(&end)
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    STANDARD.decode(body).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// A compact JWS: header {alg, typ, kid?} and `claims`, signed by `key`.
fn token(key: &Signer, alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let s = key.sign(alg, msg.as_bytes());
    format!("{msg}.{}", b64(&s))
}

/// Claims valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 3600})
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn write(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

#[track_caller]
fn assert_refused(r: &Resp, challenge: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some(challenge), "{r:?}");
    assert!(r.backend().is_none(), "refused requests reach no backend");
}

const INVALID: &str = "Bearer error=\"invalid_token\"";

// ---------------------------------------------------------------------------------------------
// An in-test JWKS server.

struct JwksServer {
    addr: SocketAddr,
    reply: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(body: &Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new((200, body.to_string())));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, f, s) = (reply.clone(), fetches.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                            match c.read(&mut chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        f.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = r.lock().unwrap().clone();
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = c.write_all(resp.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        JwksServer {
            addr,
            reply,
            fetches,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, body: &Value) {
        *self.reply.lock().unwrap() = (status, body.to_string());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

// ---------------------------------------------------------------------------------------------

const HEAD: &str = r#"
[server]
listen = ["{LISTEN}"]
admin = "{ADMIN}"
grace_period = "1s"
"#;

#[test]
fn every_refusal_is_a_401_that_reaches_no_backend_and_is_counted() {
    let b = Backend::start("b1");
    let dir = tempfile::tempdir().unwrap();
    let secret = b"a-shared-secret-of-32-bytes-long";
    let mut with_newline = secret.to_vec();
    with_newline.push(b'\n');
    let secret_file = write(dir.path(), "secret", &with_newline);
    let cfg = format!(
        r#"{HEAD}
[jwt.users]
secret_file = "{secret_file}"
algorithms = ["HS256"]
issuer = "https://id.example.com"
audience = ["shop", "admin"]

[jwt.cookies]
from = "cookie:session"
secret_file = "{secret_file}"
algorithms = ["HS256"]

[[route]]
path_prefix = "/api"
pool = "p"
jwt = "users"
[[route]]
path_prefix = "/c"
pool = "p"
jwt = "cookies"
[[route]]
path_prefix = "/"
pool = "p"
[pool.p]
policy = "round_robin"
{}"#,
        backend_tables("p", &[&b])
    );
    let t = Tether::start(&cfg);
    let url = t.url("/api/x");
    let key = Signer::hmac("HS256", secret);
    let good = || json!({"sub": "alice", "iss": "https://id.example.com", "aud": "shop", "exp": now() + 600});
    let send = |auth: &str| get(&url, &[("Authorization", auth)]);

    // A valid token passes (the secret lost its one trailing newline).
    let ok = send(&bearer(&token(&key, "HS256", None, &good())));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.backend(), Some("b1"));
    let mut aud_list = good();
    aud_list["aud"] = json!(["other", "admin"]);
    assert_eq!(
        send(&bearer(&token(&key, "HS256", None, &aud_list))).status,
        200
    );
    // `exp` in the past but within the default 60 s leeway.
    let mut recent = good();
    recent["exp"] = json!(now() - 20);
    assert_eq!(
        send(&bearer(&token(&key, "HS256", None, &recent))).status,
        200
    );
    // A route without jwt needs no token.
    assert_eq!(get(&t.url("/open"), &[]).status, 200);
    let hits_before = b.hits();

    // Missing: no Authorization, or another scheme.
    assert_refused(&get(&url, &[]), "Bearer");
    assert_refused(&send("Basic YWxpY2U6cHc="), "Bearer");
    // Invalid: empty Bearer value, malformed, bad signature, wrong algorithm, none.
    assert_refused(&send("Bearer"), INVALID);
    assert_refused(&send("Bearer "), INVALID);
    assert_refused(&send("Bearer not-a-token"), INVALID);
    assert_refused(&send("Bearer a.b.c"), INVALID);
    let other = Signer::hmac("HS256", b"another-secret-another-secret-xx");
    assert_refused(
        &send(&bearer(&token(&other, "HS256", None, &good()))),
        INVALID,
    );
    let hs384 = Signer::hmac("HS384", secret);
    assert_refused(
        &send(&bearer(&token(&hs384, "HS384", None, &good()))),
        INVALID,
    );
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good().to_string().as_bytes())
    );
    assert_refused(&send(&bearer(&unsigned)), INVALID);
    // Tampered claims under a valid signature.
    let t_ok = token(&key, "HS256", None, &good());
    let parts: Vec<&str> = t_ok.split('.').collect();
    let mut forged = good();
    forged["sub"] = json!("mallory");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&send(&bearer(&tampered)), INVALID);
    // Claims: not yet valid, wrong or missing issuer, audience not listed, exp as a string.
    let mut future = good();
    future["nbf"] = json!(now() + 600);
    assert_refused(
        &send(&bearer(&token(&key, "HS256", None, &future))),
        INVALID,
    );
    let mut wrong_iss = good();
    wrong_iss["iss"] = json!("https://evil.example.com");
    assert_refused(
        &send(&bearer(&token(&key, "HS256", None, &wrong_iss))),
        INVALID,
    );
    let mut no_iss = good();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_refused(
        &send(&bearer(&token(&key, "HS256", None, &no_iss))),
        INVALID,
    );
    let mut wrong_aud = good();
    wrong_aud["aud"] = json!(["billing"]);
    assert_refused(
        &send(&bearer(&token(&key, "HS256", None, &wrong_aud))),
        INVALID,
    );
    let mut string_exp = good();
    string_exp["exp"] = json!("never");
    assert_refused(
        &send(&bearer(&token(&key, "HS256", None, &string_exp))),
        INVALID,
    );
    // Expired: beyond the leeway.
    let mut expired = good();
    expired["exp"] = json!(now() - 120);
    let r = send(&bearer(&token(&key, "HS256", None, &expired)));
    assert_refused(&r, INVALID);
    assert!(r.header("x-request-id").is_some());

    // From a cookie: absent is missing, a good one passes.
    assert_refused(&get(&t.url("/c"), &[]), "Bearer");
    let c = token(&key, "HS256", None, &claims("carol"));
    let r = get(&t.url("/c"), &[("Cookie", &format!("a=1; session={c}"))]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_refused(
        &get(&t.url("/c"), &[("Cookie", "session=garbage")]),
        INVALID,
    );

    assert_eq!(
        b.hits(),
        hits_before + 1,
        "only the cookie request was forwarded"
    );
    let m = |jwt: &str, result: &str| {
        t.metric("tether_jwt_total", &[("jwt", jwt), ("result", result)])
            .unwrap_or(-1.0)
    };
    assert_eq!(m("users", "valid"), 3.0);
    assert_eq!(m("users", "missing"), 2.0);
    assert_eq!(m("users", "invalid"), 13.0);
    assert_eq!(m("users", "expired"), 1.0);
    assert_eq!(m("cookies", "valid"), 1.0);
    assert_eq!(m("cookies", "missing"), 1.0);
    assert_eq!(m("cookies", "invalid"), 1.0);
    assert_eq!(m("cookies", "expired"), 0.0);
    let text = t.metrics();
    assert!(text.contains("# HELP tether_jwt_total "), "HELP text");
    // Refusals are requests answered 4xx on their route.
    assert!(
        t.metric_sum(
            "tether_requests_total",
            &[("route", "/api"), ("code", "4xx")]
        ) >= 16.0
    );
}

#[test]
fn every_algorithm_passes_with_the_key_sources_that_carry_it() {
    let b = Backend::start("b1");
    let dir = tempfile::tempdir().unwrap();
    let rsa = Signer::rsa();
    let ec256 = Signer::ec("ES256");
    let ec384 = Signer::ec("ES384");
    let ed = Signer::ed();
    let ec_cert = Signer::ec_from_fixture();
    let hs = b"hs-secret-hs-secret-hs-secret-hs";
    let rsa_pub = fixture("rsa.pub.pem").display().to_string();
    let rsa_cert = fixture("rsa.cert.pem").display().to_string();
    let ec_cert_file = fixture("ec.cert.pem").display().to_string();
    let es256_pem = write(dir.path(), "es256.pem", ec256.public_pem().as_bytes());
    let ed_pem = write(dir.path(), "ed.pem", ed.public_pem().as_bytes());
    let secret = write(dir.path(), "hs", hs);
    let set = jwks(&[ec384.jwk("p384"), ed.jwk("ed"), rsa.jwk("rsa")]);
    let jwks_file = write(dir.path(), "jwks.json", set.to_string().as_bytes());
    let mut cfg = String::from(HEAD);
    let jwts: [(&str, String, &str); 7] = [
        (
            "rsa",
            format!("key_file = \"{rsa_pub}\""),
            r#"["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]"#,
        ),
        ("cert", format!("key_file = \"{rsa_cert}\""), r#"["RS256"]"#),
        (
            "eccert",
            format!("key_file = \"{ec_cert_file}\""),
            r#"["ES256"]"#,
        ),
        (
            "es256",
            format!("key_file = \"{es256_pem}\""),
            r#"["ES256"]"#,
        ),
        ("edpem", format!("key_file = \"{ed_pem}\""), r#"["EdDSA"]"#),
        (
            "set",
            format!("jwks_file = \"{jwks_file}\""),
            r#"["ES384", "EdDSA", "PS256"]"#,
        ),
        (
            "hs",
            format!("secret_file = \"{secret}\""),
            r#"["HS256", "HS384", "HS512"]"#,
        ),
    ];
    for (name, source, algs) in &jwts {
        cfg.push_str(&format!(
            "[jwt.{name}]\n{source}\nalgorithms = {algs}\n[[route]]\npath_prefix = \"/{name}\"\npool = \"p\"\njwt = \"{name}\"\n"
        ));
    }
    cfg.push_str("[pool.p]\npolicy = \"round_robin\"\n");
    cfg.push_str(&backend_tables("p", &[&b]));
    let t = Tether::start(&cfg);
    let check = |path: &str, key: &Signer, alg: &str, kid: Option<&str>, want: u16| {
        let r = get(
            &t.url(path),
            &[(
                "Authorization",
                &bearer(&token(key, alg, kid, &claims("u"))),
            )],
        );
        assert_eq!(r.status, want, "{path} {alg} kid {kid:?}: {r:?}");
    };
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        check("/rsa", &rsa, alg, None, 200);
    }
    check("/cert", &rsa, "RS256", None, 200);
    check("/cert", &rsa, "PS256", None, 401); // not listed
    check("/eccert", &ec_cert, "ES256", None, 200);
    check("/es256", &ec256, "ES256", None, 200);
    check("/es256", &ec384, "ES384", None, 401);
    check("/edpem", &ed, "EdDSA", None, 200);
    // A JWKS: by kid, and without kid against every key of the algorithm.
    check("/set", &ec384, "ES384", Some("p384"), 200);
    check("/set", &ec384, "ES384", None, 200);
    check("/set", &ed, "EdDSA", Some("ed"), 200);
    check("/set", &ed, "EdDSA", None, 200);
    check("/set", &rsa, "PS256", Some("rsa"), 200);
    check("/set", &rsa, "RS256", Some("rsa"), 401); // RS256 not listed
    check("/set", &ed, "EdDSA", Some("p384"), 401); // that kid is not an Ed25519 key
    check("/set", &ed, "EdDSA", Some("unknown"), 401);
    check("/set", &Signer::ed(), "EdDSA", None, 401); // no key of the set signed it
    for alg in ["HS256", "HS384", "HS512"] {
        check("/hs", &Signer::hmac(alg, hs), alg, None, 200);
    }
    // Keys of one family never verify another's tokens.
    check("/rsa", &ec256, "ES256", None, 401);
    check("/hs", &rsa, "RS256", None, 401);
}

#[test]
fn jwks_url_rotates_drops_removed_keys_and_survives_failures_and_reloads() {
    let b = Backend::start("b1");
    let k1 = Signer::ec("ES256");
    let k2 = Signer::ec("ES256");
    let k3 = Signer::ed();
    let server = JwksServer::start(&jwks(&[k1.jwk("k1")]));
    let slow = JwksServer::start(&jwks(&[k1.jwk("k1")]));
    let cfg = format!(
        r#"{HEAD}
[jwt.fast]
jwks_url = "{}"
jwks_refresh = "1s"
algorithms = ["ES256", "EdDSA"]
[jwt.slow]
jwks_url = "{}"
jwks_refresh = "1h"
algorithms = ["ES256", "EdDSA"]
[[route]]
path_prefix = "/fast"
pool = "p"
jwt = "fast"
[[route]]
path_prefix = "/slow"
pool = "p"
jwt = "slow"
[pool.p]
policy = "round_robin"
{}"#,
        server.url(),
        slow.url(),
        backend_tables("p", &[&b])
    );
    let t = Tether::start(&cfg);
    let status = |path: &str, key: &Signer, alg: &str, kid: &str| {
        get(
            &t.url(path),
            &[(
                "Authorization",
                &bearer(&token(key, alg, Some(kid), &claims("u"))),
            )],
        )
        .status
    };
    // Fetched at start: served at once.
    assert_eq!(status("/fast", &k1, "ES256", "k1"), 200);
    assert_eq!(status("/slow", &k1, "ES256", "k1"), 200);

    // Rotation with a refresh of 1h: an unknown kid is refused, and triggers a refetch.
    slow.serve(200, &jwks(&[k1.jwk("k1"), k2.jwk("k2")]));
    let fetched = slow.fetches();
    assert_eq!(status("/slow", &k2, "ES256", "k2"), 401);
    wait_for(
        "the new kid to be accepted",
        Duration::from_secs(10),
        || status("/slow", &k2, "ES256", "k2") == 200,
    );
    let after_rotation = slow.fetches();
    assert!(after_rotation > fetched);
    // At most once a minute: more unknown kids do not fetch again.
    slow.serve(200, &jwks(&[k1.jwk("k1"), k2.jwk("k2"), k3.jwk("k3")]));
    for _ in 0..5 {
        assert_eq!(status("/slow", &k3, "EdDSA", "k3"), 401);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        slow.fetches(),
        after_rotation,
        "no second kid refetch within a minute"
    );
    assert_eq!(status("/slow", &k3, "EdDSA", "k3"), 401);

    // A key removed from the JWKS is dropped at the next refresh.
    server.serve(200, &jwks(&[k2.jwk("k2")]));
    wait_for(
        "the removed key to be dropped",
        Duration::from_secs(10),
        || status("/fast", &k1, "ES256", "k1") == 401,
    );
    assert_eq!(status("/fast", &k2, "ES256", "k2"), 200);

    // A failing JWKS server: the last good set keeps serving.
    server.serve(500, &json!({"error": "down"}));
    let n = server.fetches();
    wait_for("two failed fetches", Duration::from_secs(15), || {
        server.fetches() >= n + 2
    });
    assert_eq!(status("/fast", &k2, "ES256", "k2"), 200);
    server.serve(200, &json!("not a jwks"));
    let n = server.fetches();
    wait_for("a fetch of a broken JWKS", Duration::from_secs(15), || {
        server.fetches() > n
    });
    assert_eq!(status("/fast", &k2, "ES256", "k2"), 200);

    // A reload with the same URL keeps the keys (the server still fails).
    server.serve(500, &json!({}));
    let generation = t.metric("tether_config_generation", &[]).unwrap();
    t.write_config(&format!("{cfg}\n# reloaded\n"));
    t.sighup();
    wait_for("the reload", Duration::from_secs(10), || {
        t.metric("tether_config_generation", &[]).unwrap() > generation
    });
    assert_eq!(status("/fast", &k2, "ES256", "k2"), 200);
    assert_eq!(status("/slow", &k2, "ES256", "k2"), 200);
}

#[test]
fn forwarded_claims_replace_what_the_client_sent() {
    let b = Backend::start("b1");
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "s", b"forward-secret-forward-secret-xx");
    let cfg = format!(
        r#"{HEAD}
[jwt.users]
secret_file = "{secret}"
algorithms = ["HS256"]
forward_claims = {{ sub = "X-User-Id", admin = "X-Admin", tier = "X-Tier", org = "X-Org" }}
[[route]]
path_prefix = "/api"
pool = "p"
jwt = "users"
[[route]]
path_prefix = "/"
pool = "p"
[pool.p]
policy = "round_robin"
{}"#,
        backend_tables("p", &[&b])
    );
    let t = Tether::start(&cfg);
    let key = Signer::hmac("HS256", b"forward-secret-forward-secret-xx");
    let mut c = claims("alice");
    c["admin"] = json!(true);
    c["tier"] = json!(3);
    let tok = bearer(&token(&key, "HS256", None, &c));
    let r = get(
        &t.url("/api/me"),
        &[
            ("Authorization", &tok),
            ("X-User-Id", "mallory"),
            ("X-Org", "evil-corp"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.seen_header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(r.seen_header("x-admin").as_deref(), Some("true"));
    assert_eq!(r.seen_header("x-tier").as_deref(), Some("3"));
    assert_eq!(r.seen_header("x-org"), None, "the token has no org claim");
    assert!(
        r.seen_header("authorization").is_some(),
        "the token itself is forwarded"
    );
    // Elsewhere too, a client cannot pose as an authenticated user.
    let r = get(&t.url("/open"), &[("X-User-Id", "mallory")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-user-id"), None);
}

fn hash_config(bs: &[Backend], secret: &str) -> String {
    format!(
        r#"{HEAD}
[jwt.users]
secret_file = "{secret}"
algorithms = ["HS256"]
[[route]]
pool = "sessions"
jwt = "users"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "jwt:sub"
{}"#,
        backend_tables("sessions", bs)
    )
}

#[test]
fn two_instances_send_a_user_to_the_same_backend_by_the_jwt_sub_claim() {
    let bs: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("n{i}"))).collect();
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "s", b"hash-secret-hash-secret-hash-sec");
    let cfg = hash_config(&bs, &secret);
    let a = Tether::start(&cfg);
    let b = Tether::start(&cfg);
    let key = Signer::hmac("HS256", b"hash-secret-hash-secret-hash-sec");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        // A fresh token each time: the claim decides, not the token bytes.
        let ask = |t: &Tether| {
            let mut c = claims(&user);
            c["jti"] = json!(format!("{i}-{}", t.listen()));
            let r = get(
                &t.url("/"),
                &[("Authorization", &bearer(&token(&key, "HS256", None, &c)))],
            );
            assert_eq!(r.status, 200, "{r:?}");
            assert!(r.set_cookie_line("tether_sessions").is_none(), "no cookie");
            r.backend().unwrap().to_owned()
        };
        let first = ask(&a);
        assert_eq!(ask(&b), first, "{user} on both instances");
        assert_eq!(ask(&a), first, "{user} again");
        seen.insert(first);
    }
    assert!(seen.len() >= 3, "users spread over the pool: {seen:?}");
}
