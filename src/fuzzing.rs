//! Entry points for the fuzz targets in `fuzz/` (coverage-guided, cargo-fuzz) and for the
//! regression test that replays their corpora (`tests/fuzz_corpus.rs`): every parser of
//! untrusted input, each behind one function over raw bytes that must never panic and whose
//! results must keep the invariants checked here. Where an input can take more than one path
//! (a cookie decodes or not, which route matches), the function returns the path taken, so the
//! corpus replay can check that each seed still exercises the path it was written for (the fuzz
//! targets discard it).
//!
//! Owns: nothing of the proxy; only calls into `config`, `balance::cookie`, `snapshot` and `read`.

use std::sync::{Arc, OnceLock};

use crate::backend::Registry;
use crate::balance::cookie::CookieCodec;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The configuration parser and validator: any text gives a config or a list of errors.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = crate::config::parse(text, None) {
            assert!(
                !errors.0.is_empty(),
                "a rejected config names at least one error"
            );
        }
    }
}

/// The affinity cookie decoder: any value decodes or is refused; what decodes re-encodes to
/// the same value. Returns whether `data` decoded, i.e. whether the round trip ran.
pub fn cookie(data: &[u8]) -> bool {
    static CODEC: OnceLock<CookieCodec> = OnceLock::new();
    let codec =
        CODEC.get_or_init(|| CookieCodec::new("fuzz", &[b"fuzz-secret-0123456789abcdef".to_vec()]));
    let now = 1_800_000_000;
    match codec.decode(data, now, Some(3600)) {
        Ok((a, secret)) => {
            assert_eq!(secret, 0, "the only secret verified");
            assert_eq!(codec.encode(&a).as_bytes(), data, "decode and encode agree");
            true
        }
        Err(_) => false,
    }
}

/// The route matcher over a fixed route table: the first byte is the host's length, the rest
/// host then path. Returns the index of the route matched (0 `shop.example.com` + `/api/`,
/// 1 `*.example.com`, 2 `/static/`, 3 the catch-all), `None` for no route or no input.
pub fn route(data: &[u8]) -> Option<usize> {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    let snap = SNAP.get_or_init(|| {
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n\
            [[route]]\nhost = \"shop.example.com\"\npath_prefix = \"/api/\"\npool = \"p\"\n\
            [[route]]\nhost = \"*.example.com\"\npool = \"p\"\n\
            [[route]]\npath_prefix = \"/static/\"\npool = \"p\"\n\
            [[route]]\npool = \"p\"\n\
            [pool.p]\npolicy = \"round_robin\"\n[[pool.p.backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
        let config = crate::config::parse(text, None).expect("valid fuzz config");
        let registry = Registry::new(Arc::new(Metrics::new()));
        Snapshot::build(Arc::new(config), &registry, 1, None)
    });
    let (&split, rest) = data.split_first()?;
    let (host, path) = rest.split_at((split as usize).min(rest.len()));
    let r = snap.route(host, path);
    // A catch-all route (path prefix "/") exists: every absolute path routes somewhere.
    if path.starts_with(b"/") {
        assert!(r.is_some());
    }
    r
}

/// The read stage's head rules: any bytes are accepted or refused; an accepted head has no NUL,
/// no bare CR or LF, and a Host unless it is HTTP/1.0.
pub fn head(data: &[u8]) {
    let limits = Limits::default();
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = &data[..end + 4];
    if crate::read::check_head(head, &limits).is_ok() {
        assert!(!head.contains(&0));
        for (i, &c) in head.iter().enumerate() {
            if c == b'\r' {
                assert_eq!(head.get(i + 1), Some(&b'\n'));
            }
            if c == b'\n' {
                assert!(i > 0 && head[i - 1] == b'\r');
            }
        }
    }
}
