//! Entry points for the fuzz targets in `fuzz/` (coverage-guided, cargo-fuzz) and for the
//! regression test that replays their corpora (`tests/fuzz_corpus.rs`): every parser of
//! untrusted input, each behind one function over raw bytes that must never panic and whose
//! results must keep the invariants checked here. Where an input can take more than one path
//! (a cookie decodes or not, which route matches, a head accepted or refused), the function
//! returns the path taken, so the corpus replay can check that each seed still exercises the
//! path it was written for (the fuzz targets discard it).
//!
//! Owns: nothing of the proxy; only calls into `config`, `balance::cookie`, `snapshot` and `read`.

use std::sync::{Arc, OnceLock};

use crate::balance::cookie::CookieCodec;
use crate::config::Limits;
use crate::snapshot::Snapshot;
use crate::state::backend::Registry;
use crate::state::metrics::Metrics;

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
/// no bare CR or LF, and exactly one Host field unless it is HTTP/1.0 (then at most one).
/// Returns `None` when `data` holds no complete head (no CRLF CRLF), else whether the head (up
/// to the first CRLF CRLF) was accepted.
pub fn head(data: &[u8]) -> Option<bool> {
    let limits = Limits::default();
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &data[..end + 4];
    let accepted = crate::path::read::check_head(head, &limits).is_ok();
    if accepted {
        assert!(!head.contains(&0), "no NUL");
        for (i, &c) in head.iter().enumerate() {
            if c == b'\r' {
                assert_eq!(head.get(i + 1), Some(&b'\n'), "no bare CR");
            }
            if c == b'\n' {
                assert!(i > 0 && head[i - 1] == b'\r', "no bare LF");
            }
        }
        // Lines end in CRLF (checked above); the first is the request line, the others fields.
        let mut lines = head[..end]
            .split(|&c| c == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let http10 = lines.next().is_some_and(|l| l.ends_with(b" HTTP/1.0"));
        let hosts = lines
            .filter(|l| {
                l.split(|&c| c == b':')
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case(b"host"))
            })
            .count();
        if http10 {
            assert!(hosts <= 1, "an HTTP/1.0 head has at most one Host");
        } else {
            assert_eq!(hosts, 1, "a head other than HTTP/1.0 has exactly one Host");
        }
    }
    Some(accepted)
}
