//! Micro-benchmarks of the gateway stages' own work (DESIGN.md §14, §15; issue 8's budget of
//! 2 µs per request for a local rate limit and for an HS256 check): `Verifier::check` on a
//! request carrying a valid HS256 / RS256 Bearer token, and a local `Limiter::check`. The
//! end-to-end cost with the proxy around them is `benches/load.sh`'s gateway scenarios; these
//! isolate the stage from the noise of a whole request. Owns nothing but measurements.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use ring::signature::{self as sig};
use tether::snapshot::Store;
use tether::state::backend::Registry;
use tether::state::jwt::Outcome;
use tether::state::metrics::Metrics;

const SECRET: &str = "bench-secret-0123456789abcdef-0123";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The token load.sh sends: `{"alg":…,"typ":"JWT"}` and `{"sub":"bench-user","exp":…}`.
fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    token_of(alg, "bench-user", sign)
}

fn token_of(alg: &str, sub: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 31_536_000;
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","exp":{exp}}}"#));
    let msg = format!("{head}.{claims}");
    let s = sign(msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(s))
}

fn request(token: &str) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/jwt", None).unwrap();
    r.insert_header("host", "bench").unwrap();
    r.insert_header("x-user", "bench-user").unwrap();
    r.insert_header("authorization", format!("Bearer {token}"))
        .unwrap();
    r
}

fn store(dir: &std::path::Path) -> Store {
    let secret = dir.join("hs256.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = "off"
[rate_limit.bench_local]
key = "header:X-User"
rate = 1000000000
per = "1s"
store = "local"
[jwt.hs256]
secret_file = "{}"
algorithms = ["HS256"]
[jwt.rs256]
key_file = "{}"
algorithms = ["RS256"]
[[route]]
pool = "p"
[pool.p]
policy = "round_robin"
[[pool.p.backend]]
id = "a"
addr = "127.0.0.1:1"
"#,
        secret.display(),
        fixture("rsa.pub.pem").display()
    );
    Store::new(
        tether::config::parse(&text, None).unwrap(),
        Arc::new(Registry::new(Arc::new(Metrics::new()))),
    )
}

fn jwt(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let snap = store.load();
    let hs = snap.jwts.iter().find(|v| &*v.name == "hs256").unwrap();
    let rs = snap.jwts.iter().find(|v| &*v.name == "rs256").unwrap();

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hs_req = request(&token("HS256", |m| {
        ring::hmac::sign(&key, m).as_ref().to_vec()
    }));
    let rsa = sig::RsaKeyPair::from_pkcs8(&pem_der(
        &std::fs::read_to_string(fixture("rsa.key")).unwrap(),
    ))
    .unwrap();
    let rs_sign = |m: &[u8]| {
        let mut out = vec![0; rsa.public().modulus_len()];
        rsa.sign(
            &sig::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            m,
            &mut out,
        )
        .unwrap();
        out
    };
    let rs_req = request(&token("RS256", rs_sign));
    assert!(matches!(hs.check(&hs_req), Outcome::Valid(_)));
    assert!(matches!(rs.check(&rs_req), Outcome::Valid(_)));

    // The same token on every request (one client's session): after the first, a hit of the
    // verified-token cache, which re-checks only exp/nbf.
    c.bench_function("jwt/check/HS256, same token (cached)", |b| {
        b.iter(|| black_box(hs.check(black_box(&hs_req))).label())
    });
    c.bench_function("jwt/check/RS256 (2048), same token (cached)", |b| {
        b.iter(|| black_box(rs.check(black_box(&rs_req))).label())
    });
    // Twice as many distinct tokens as the cache has slots, in turn: every check verifies the
    // signature and parses the claims.
    let many: Vec<RequestHeader> = (0..2048)
        .map(|i| {
            request(&token_of("HS256", &format!("user-{i}"), |m| {
                ring::hmac::sign(&key, m).as_ref().to_vec()
            }))
        })
        .collect();
    let mut i = 0usize;
    c.bench_function("jwt/check/HS256, a new token each time (verified)", |b| {
        b.iter(|| {
            i = (i + 1) & 2047;
            black_box(hs.check(black_box(&many[i]))).label()
        })
    });
    // RSA signing takes ~1 ms here: 2048 tokens are two seconds of set-up.
    let many_rs: Vec<RequestHeader> = (0..2048)
        .map(|i| request(&token_of("RS256", &format!("user-{i}"), rs_sign)))
        .collect();
    let mut i = 0usize;
    c.bench_function(
        "jwt/check/RS256 (2048), a new token each time (verified)",
        |b| {
            b.iter(|| {
                i = (i + 1) & 2047;
                black_box(rs.check(black_box(&many_rs[i]))).label()
            })
        },
    );
}

fn rate_limit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let snap = store.load();
    let l = snap.rate_limits.get("bench_local").unwrap().clone();
    let mut cx = Context::from_waker(Waker::noop());
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i:05}")).collect();
    let mut i = 0usize;
    c.bench_function("rate_limit/check/local, 1024 keys", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            // A local limit never waits: its future is ready on the first poll.
            let mut f = std::pin::pin!(l.check(black_box(keys[i].as_bytes()), false));
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(d) => black_box(d),
                Poll::Pending => unreachable!("a local limit is decided at once"),
            }
        })
    });
}

criterion_group!(benches, jwt, rate_limit);
criterion_main!(benches);
