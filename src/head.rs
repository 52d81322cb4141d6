//! What tether reads out of a request head: host, cookies, hash keys, client address. Shared by
//! every stage and both engines; borrows from the head and allocates nothing.
//!
//! Owns: the byte-level rules for finding a cookie or a key. Must not touch: decisions (which
//! key a pool uses is the pool's; what to do with it is the stage's).

use std::net::IpAddr;

use http::header;
use pingora::http::RequestHeader;

use crate::config::{Fallback, KeySpec};
use crate::jwt::Claims;
use crate::snapshot::Pool;

/// Header names tether reads or writes on every request, resolved once (a `&str` name is
/// parsed and hashed anew at every use).
pub mod names {
    use http::HeaderName;
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
}

/// The Host header, or the URI authority (HTTP/2), as sent.
pub fn host_header(req: &RequestHeader) -> &[u8] {
    match req.headers.get(header::HOST) {
        Some(h) => h.as_bytes(),
        None => req
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .unwrap_or(b""),
    }
}

/// The host without port, for routing.
pub fn host(req: &RequestHeader) -> &[u8] {
    strip_port(host_header(req))
}

pub fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        // [v6]:port
        return match h.iter().position(|&c| c == b']') {
            Some(end) => &h[..=end],
            None => h,
        };
    }
    match h.iter().rposition(|&c| c == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

/// Value of cookie `name` in the request's Cookie header(s), without allocating.
pub fn find_cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    for h in req.headers.get_all(header::COOKIE) {
        for pair in h.as_bytes().split(|&c| c == b';') {
            let pair = trim(pair);
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(v) = rest.strip_prefix(b"=") {
                    return Some(trim_quotes(v));
                }
            }
        }
    }
    None
}

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn trim_quotes(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// A hash key borrowed from the request, or an address's bytes.
pub enum Key<'a> {
    Bytes(&'a [u8]),
    Inline([u8; 16], usize),
}

impl Key<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Inline(b, n) => &b[..*n],
        }
    }
}

/// The client's IP address (the peer of the downstream connection).
pub type ClientIp = Option<IpAddr>;

/// The key `spec` names in the request (`None` when absent or empty); `claims` are the validated
/// token's, for `jwt:CLAIM` keys.
pub fn extract_key<'a>(
    spec: &KeySpec,
    req: &'a RequestHeader,
    client: ClientIp,
    claims: Option<&'a Claims>,
) -> Option<Key<'a>> {
    let bytes = match spec {
        KeySpec::Jwt(name) => claims.and_then(|c| c.get(name)).map(str::as_bytes),
        KeySpec::Cookie(name) => find_cookie(req, name),
        KeySpec::Header(name) => req.headers.get(name.as_str()).map(|v| v.as_bytes()),
        KeySpec::Query(name) => req.uri.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v.as_bytes())
            })
        }),
        KeySpec::Path => Some(req.uri.path().as_bytes()),
        KeySpec::SourceIp => {
            let mut buf = [0u8; 16];
            let n = match client? {
                IpAddr::V4(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    4
                }
                IpAddr::V6(v6) => {
                    buf.copy_from_slice(&v6.octets());
                    16
                }
            };
            return Some(Key::Inline(buf, n));
        }
    };
    bytes.filter(|b| !b.is_empty()).map(Key::Bytes)
}

/// The hash key of a hash pool's request (the configured key, else the fallback key).
/// `claims`: the request's validated token's, for `jwt:CLAIM` keys.
pub fn hash_key<'a>(
    pool: &Pool,
    req: &'a RequestHeader,
    client: ClientIp,
    claims: Option<&'a Claims>,
) -> Option<Key<'a>> {
    let h = pool.conf.hash.as_ref()?;
    extract_key(&h.key, req, client, claims).or_else(|| match &h.fallback {
        Fallback::RoundRobin => None,
        Fallback::Key(k) => extract_key(k, req, client, claims),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; tether_shop=abc ; b=2")
            .unwrap();
        req.append_header("cookie", "c=\"q\"").unwrap();
        assert_eq!(find_cookie(&req, "tether_shop"), Some(&b"abc"[..]));
        assert_eq!(find_cookie(&req, "c"), Some(&b"q"[..]));
        assert_eq!(find_cookie(&req, "tether"), None);
        assert_eq!(find_cookie(&req, "b"), Some(&b"2"[..]));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }
}
