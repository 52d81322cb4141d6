//! Entry points for the fuzz targets in `fuzz/` (coverage-guided, cargo-fuzz) and for the
//! regression test that replays their corpora (`tests/fuzz_corpus.rs`): every parser of
//! untrusted input, each behind one function over raw bytes that must never panic and whose
//! results must keep the invariants checked here. Where an input can take more than one path
//! (a cookie decodes or not, which route matches, a head accepted or refused), the function
//! returns the path taken, so the corpus replay can check that each seed still exercises the
//! path it was written for (the fuzz targets discard it).
//!
//! Owns: nothing of the proxy; only calls into `config`, `balance::cookie`, `snapshot`, `read`
//! and the HTTP/1.1 codec (`h1`).

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

/// The hop-by-hop field names the codec's writer always drops (lower case).
const HOP_BY_HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
];

/// What the writer must send for fields `fields` (name, value) of a head: all but the
/// hop-by-hop ones and those a `Connection` option names (never `Host`, `Content-Length`,
/// `Transfer-Encoding`), `Upgrade` kept and `Connection: upgrade` added for an upgrade that
/// has an `Upgrade` field.
/// Written here from the rules, not from the writer's code.
fn expected_fields(fields: &[(Vec<u8>, Vec<u8>)], upgrade: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let options: Vec<Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&c| c == b',').map(|o| o.to_vec()))
        .map(|o| crate::http::trim(&o).to_ascii_lowercase())
        .collect();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            let upgrade_kept = upgrade && lower == b"upgrade";
            let framing = matches!(
                &lower[..],
                b"host" | b"content-length" | b"transfer-encoding"
            );
            (upgrade_kept || !HOP_BY_HOP.contains(&&lower[..]))
                && (upgrade_kept || framing || !options.contains(&lower))
        })
        .cloned()
        .collect();
    if upgrade && out.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"upgrade")) {
        out.push((b"Connection".to_vec(), b"upgrade".to_vec()));
    }
    out
}

/// The codec's request head parser (`h1::request`): any bytes are accepted, refused or wait
/// for more, without panicking. It waits only while there is no CRLF CRLF, refuses every head
/// the read stage's `check_head` refuses and accepts only heads it accepts (never more lenient;
/// stricter on the request line and field values, which the read stage leaves to the parser
/// after it). An accepted head has the Host rule and the framing it promised, and
/// the head writer's output for it parses back to the same request, framing and fields (less
/// the hop-by-hop ones). Returns `None` when no complete head was seen (and nothing refused),
/// else whether it was accepted.
pub fn h1_request(data: &[u8]) -> Option<bool> {
    use crate::h1::{write_request, Edits, Framing, Known, RequestHead};
    let limits = Limits::default();
    // The read stage's verdict on the head up to the first CRLF CRLF, if there is one.
    let read_stage = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| crate::path::read::check_head(&data[..end + 4], &limits).is_ok());
    let mut head = RequestHead::new();
    let len = match head.parse(data, &limits) {
        Ok(None) => {
            assert_eq!(read_stage, None, "a complete head is judged");
            return None;
        }
        Err(_) => return Some(false),
        Ok(Some(len)) => len,
    };
    assert_eq!(
        read_stage,
        Some(true),
        "the codec refuses what the read stage refuses"
    );
    let bytes = &data[..len];
    assert!(
        bytes.ends_with(b"\r\n\r\n"),
        "a head ends at its empty line"
    );
    let v = head.view(data);
    let hosts = v.known_all(Known::Host).count();
    if v.is_http10() {
        assert!(hosts <= 1);
    } else {
        assert_eq!(hosts, 1);
    }
    if v.is_upgrade() || v.expects_continue() {
        assert!(!v.is_http10());
    }
    if v.known(Known::Connection).is_none() {
        assert_eq!(v.keep_alive(), !v.is_http10());
    }
    let te = v.known_all(Known::TransferEncoding).count();
    let cl = v.known_all(Known::ContentLength).count();
    match v.framing() {
        Framing::Chunked => assert!(te == 1 && cl == 0 && !v.is_http10()),
        Framing::Length(_) => assert!(te == 0 && cl > 0),
        Framing::None => assert!(te == 0 && cl == 0),
        Framing::UntilClose => panic!("a request body never ends at the close"),
    }
    let fields: Vec<(Vec<u8>, Vec<u8>)> =
        v.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    // The same header through the general lookup and the index.
    for (name, value) in &fields {
        let first = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice());
        assert_eq!(v.header(name), first);
        assert!(first.is_some(), "{value:?}");
    }

    let host: &[(&[u8], &[u8])] = if hosts == 0 {
        &[(b"Host", b"fuzz")]
    } else {
        &[]
    };
    let edits = Edits {
        add: host,
        ..Edits::default()
    };
    let mut out = vec![0u8; len + 64];
    let n = write_request(&head, data, &edits, &mut out).expect("the head is written");
    let written = &out[..n];
    let mut want = expected_fields(&fields, v.is_upgrade());
    want.extend(host.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
    if want.len() > crate::h1::MAX_FIELDS {
        return Some(true); // more fields than a head may have: not parsed back
    }
    // The written head may be a few bytes and fields larger than the one that came in.
    let unbounded = Limits {
        max_header_size: usize::MAX,
        max_headers: crate::h1::MAX_FIELDS,
        ..limits
    };
    let mut again = RequestHead::new();
    assert_eq!(
        again.parse(written, &unbounded),
        Ok(Some(n)),
        "the written head parses back, as one head: {:?}",
        String::from_utf8_lossy(written)
    );
    let w = again.view(written);
    assert_eq!(w.method(), v.method());
    assert_eq!(w.target(), v.target());
    assert!(!w.is_http10());
    assert_eq!(w.framing(), v.framing());
    let got: Vec<(Vec<u8>, Vec<u8>)> = w.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    assert_eq!(got, want);
    Some(true)
}

/// The codec's response head parser (`h1::response`): any bytes are accepted, refused or wait
/// for more, without panicking, with the same verdict whether the request was HEAD or not. An
/// accepted head frames its body by RFC 9112 §6.3, and the writer's output parses back to the
/// same status, reason, framing and fields (less the hop-by-hop ones). Returns `None` when no
/// complete head was seen (and nothing refused), else whether it was accepted.
pub fn h1_response(data: &[u8]) -> Option<bool> {
    use crate::h1::{write_response, Edits, Framing, Known, ResponseHead};
    let max = 64 * 1024;
    let mut head = ResponseHead::new();
    let mut for_head = ResponseHead::new();
    let verdict = head.parse(data, false, max);
    assert_eq!(
        for_head.parse(data, true, max).map(|r| r.is_some()),
        verdict.map(|r| r.is_some()),
        "HEAD changes the framing, not the verdict"
    );
    let len = match verdict {
        Ok(None) => return None,
        Err(_) => return Some(false),
        Ok(Some(len)) => len,
    };
    assert!(data[..len].ends_with(b"\r\n\r\n"));
    let status = head.status();
    assert!((100..=599).contains(&status));
    assert_eq!(for_head.framing(), Framing::None);
    let fields = head.fields();
    let te = fields.count(Known::TransferEncoding);
    let cl = fields.count(Known::ContentLength);
    assert!(te == 0 || cl == 0, "never both");
    if status < 200 || status == 204 || status == 304 {
        assert_eq!(head.framing(), Framing::None);
    } else {
        match head.framing() {
            Framing::Chunked => assert!(te > 0),
            Framing::Length(_) => assert!(cl > 0),
            Framing::UntilClose => {
                assert!(cl == 0);
                assert!(!head.keep_alive(data));
            }
            Framing::None => panic!("a final response without a body needs a reason"),
        }
    }
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = fields
        .as_slice()
        .iter()
        .map(|f| (f.name.get(data).to_vec(), f.value.get(data).to_vec()))
        .collect();

    let mut out = vec![0u8; len + 64];
    let n = write_response(&head, data, &Edits::default(), &mut out).expect("the head is written");
    let written = &out[..n];
    let want = expected_fields(&pairs, head.is_switching_protocols());
    if want.len() > crate::h1::MAX_FIELDS {
        return Some(true); // more fields than a head may have: not parsed back
    }
    let mut again = ResponseHead::new();
    assert_eq!(
        again.parse(written, false, usize::MAX),
        Ok(Some(n)),
        "the written head parses back, as one head: {:?}",
        String::from_utf8_lossy(written)
    );
    assert!(!again.is_http10());
    assert_eq!(again.status(), status);
    assert_eq!(again.reason(written), head.reason(data));
    assert_eq!(again.framing(), head.framing());
    let got: Vec<(Vec<u8>, Vec<u8>)> = again
        .fields()
        .as_slice()
        .iter()
        .map(|f| (f.name.get(written).to_vec(), f.value.get(written).to_vec()))
        .collect();
    assert_eq!(got, want);
    Some(true)
}

/// The codec's chunked validator (`h1::chunked`) against the plain reference decoder: fed the
/// input whole, a byte at a time and in pieces of a size the input picks, under the default and
/// under small bounds, it gives the reference's verdict, and for a complete body the same data
/// and end. Returns the reference's verdict: `Some(true)` a complete body, `Some(false)`
/// malformed, `None` incomplete.
pub fn h1_chunked(data: &[u8]) -> Option<bool> {
    use crate::h1::chunked::{reference_decode_with, RefError};
    use crate::h1::{Chunked, ChunkedLimits};
    let small = ChunkedLimits {
        max_line: 12,
        max_trailers: 40,
    };
    let step = 1 + data.first().map_or(0, |b| (b % 13) as usize);
    let mut verdict = None;
    for limits in [ChunkedLimits::default(), small] {
        let reference = reference_decode_with(data, limits);
        for piece in [data.len().max(1), 1, step] {
            let mut dec = Chunked::with_limits(limits);
            let mut decoded = Vec::new();
            let mut result = Err(RefError::Incomplete);
            for (k, chunk) in data.chunks(piece).enumerate() {
                match dec.feed(chunk, |r| decoded.extend_from_slice(&chunk[r])) {
                    Err(_) => {
                        result = Err(RefError::Malformed);
                        break;
                    }
                    Ok(p) if p.done => {
                        result = Ok((std::mem::take(&mut decoded), k * piece + p.consumed));
                        break;
                    }
                    Ok(p) => assert_eq!(p.consumed, chunk.len()),
                }
            }
            assert_eq!(result, reference, "pieces of {piece}");
        }
        if limits == ChunkedLimits::default() {
            verdict = match reference {
                Ok(_) => Some(true),
                Err(RefError::Malformed) => Some(false),
                Err(RefError::Incomplete) => None,
            };
        }
    }
    verdict
}
