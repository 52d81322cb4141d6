//! gRPC on the request path (DESIGN.md §21): which requests are gRPC, what their
//! `grpc-timeout` asks, and what tether's own answers to them look like — HTTP `200`,
//! `content-type: application/grpc`, and a gRPC status in the head (trailers-only) that a gRPC
//! client's retry policy understands, instead of an HTML-ish `503`. Engine-neutral.
//!
//! Owns: the mapping from tether's refusals (status and reason) to gRPC status codes, and the
//! `grpc-timeout` syntax. Must not touch: sockets, selection.

use std::time::Duration;

use http::HeaderValue;

use crate::http::Head;
use crate::path::exchange::Exchange;

/// gRPC status codes tether answers with.
pub const UNAVAILABLE: u32 = 14;
pub const RESOURCE_EXHAUSTED: u32 = 8;
pub const UNAUTHENTICATED: u32 = 16;
pub const INTERNAL: u32 = 13;

/// Whether the request is gRPC: its `content-type` is `application/grpc` or
/// `application/grpc+…` / `application/grpc;…` (gRPC-Web's `application/grpc-web` is not).
pub fn is_grpc(req: &dyn Head) -> bool {
    req.header(b"content-type").is_some_and(|ct| {
        let prefix = b"application/grpc";
        ct.len() >= prefix.len()
            && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(ct.get(prefix.len()), None | Some(b'+') | Some(b';'))
    })
}

/// The deadline a gRPC client gave its call (`grpc-timeout`: at most 8 digits and a unit,
/// `H M S m u n`); `None` when absent or malformed.
pub fn timeout(req: &dyn Head) -> Option<Duration> {
    parse_timeout(req.header(b"grpc-timeout")?)
}

fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value (at most 8 digits): in whole milliseconds, at least 1, when
/// they fit, else seconds, minutes or hours.
pub fn format_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    if ms <= MAX {
        return format!("{ms}m");
    }
    let s = d.as_secs();
    if u128::from(s) <= MAX {
        return format!("{s}S");
    }
    let m = s / 60;
    if u128::from(m) <= MAX {
        return format!("{m}M");
    }
    format!("{}H", (s / 3600).min(99_999_999))
}

/// The gRPC status and message for one of tether's own answers: `status` as it would have been
/// over plain HTTP and `reason`, the refusal's name (`queue_full`, `rate_limited`, …).
pub fn status_for(status: u16, reason: &str, retry_after: Option<u64>) -> (u32, String) {
    let retry = retry_after.map_or(String::new(), |s| format!("; retry after {s}s"));
    match (status, reason) {
        (429, _) => (RESOURCE_EXHAUSTED, format!("rate limited{retry}")),
        (503, "queue_full") => (
            RESOURCE_EXHAUSTED,
            format!("the pool's circuit breaker is full{retry}"),
        ),
        (503, "queue_timeout") => (
            UNAVAILABLE,
            format!("timed out waiting for the pool's circuit breaker{retry}"),
        ),
        (503, _) => (UNAVAILABLE, format!("no backend available{retry}")),
        (502, _) => (UNAVAILABLE, format!("the backend failed ({reason})")),
        (504, _) => (UNAVAILABLE, "the backend did not answer in time".to_owned()),
        (401, _) => (UNAUTHENTICATED, "a valid token is required".to_owned()),
        (404, _) => (INTERNAL, "no route for this host and path".to_owned()),
        (413, _) => (INTERNAL, "request body too large".to_owned()),
        (s, _) => (INTERNAL, format!("refused by the proxy (HTTP {s})")),
    }
}

/// The head of a trailers-only gRPC answer: `200`, `content-type: application/grpc`, the
/// status and message, the request id, and `retry-after` when one was given.
pub fn answer(
    ex: &Exchange,
    status: u16,
    reason: &str,
    retry_after: Option<u64>,
) -> http::Response<()> {
    let (code, message) = status_for(status, reason, retry_after);
    answer_with(ex, code, &message, retry_after)
}

/// The answer to a call whose own deadline (`grpc-timeout`) ran out while tether waited for the
/// backend: DEADLINE_EXCEEDED, what the client's library would say itself, not UNAVAILABLE
/// (which invites a retry that cannot succeed in time).
pub fn deadline_exceeded(ex: &Exchange) -> http::Response<()> {
    answer_with(ex, 4, "deadline exceeded waiting for the backend", None)
}

fn answer_with(
    ex: &Exchange,
    code: u32,
    message: &str,
    retry_after: Option<u64>,
) -> http::Response<()> {
    let mut resp = http::Response::new(());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(m) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", m);
    }
    if let Some(s) = retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Ok(id) = HeaderValue::from_bytes(ex.id.as_bytes()) {
        h.insert("x-request-id", id);
    }
    resp
}

/// Trailers that end a response whose backend failed after its head was relayed:
/// `grpc-status` 14, so the client sees UNAVAILABLE rather than a bare reset.
pub fn failed_trailers(what: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(UNAVAILABLE));
    if let Ok(m) = HeaderValue::from_str(&percent_encode(what)) {
        h.insert("grpc-message", m);
    }
    h
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_grpc_writes_them() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"-1S"), None);
    }

    #[test]
    fn remaining_deadlines_are_written_as_grpc_reads_them() {
        assert_eq!(format_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(format_timeout(Duration::from_micros(1500)), "2m");
        assert_eq!(format_timeout(Duration::ZERO), "1m");
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
        let back = parse_timeout(format_timeout(Duration::from_secs(3600 * 40_000)).as_bytes());
        assert!(back.is_some_and(|d| d >= Duration::from_secs(3600 * 39_999)));
    }

    #[test]
    fn refusals_map_to_the_statuses_clients_retry_on() {
        assert_eq!(status_for(503, "no_backend", Some(2)).0, UNAVAILABLE);
        assert_eq!(status_for(502, "ConnectRefused", None).0, UNAVAILABLE);
        assert_eq!(status_for(503, "queue_timeout", Some(1)).0, UNAVAILABLE);
        assert_eq!(status_for(503, "queue_full", Some(1)).0, RESOURCE_EXHAUSTED);
        let (code, msg) = status_for(429, "rate_limited", Some(3));
        assert_eq!(code, RESOURCE_EXHAUSTED);
        assert!(msg.contains("retry after 3s"), "{msg}");
        assert_eq!(status_for(401, "jwt", None).0, UNAUTHENTICATED);
        assert_eq!(status_for(400, "bad_request", None).0, INTERNAL);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("100% ok"), "100%25 ok");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
