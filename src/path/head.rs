//! What tether reads out of a request head: host, cookies, hash keys, client address. Shared by
//! every stage and both engines; borrows from the head and allocates nothing.
//!
//! Owns: the byte-level rules for finding a cookie or a key. Must not touch: decisions (which
//! key a pool uses is the pool's; what to do with it is the stage's).

use std::net::IpAddr;

use crate::http::Head;

use crate::config::{Fallback, KeySpec};
pub use crate::http::{find_cookie, host, host_header, names, strip_port, trim};
use crate::snapshot::Pool;
use crate::state::jwt::Claims;

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
    req: &'a dyn Head,
    client: ClientIp,
    claims: Option<&'a Claims>,
) -> Option<Key<'a>> {
    let bytes = match spec {
        KeySpec::Jwt(name) => claims.and_then(|c| c.get(name)).map(str::as_bytes),
        KeySpec::Cookie(name) => find_cookie(req, name),
        KeySpec::Header(name) => req.header(name.as_bytes()),
        KeySpec::Query(name) => req.query().and_then(|q| {
            q.split(|&c| c == b'&').find_map(|kv| {
                let (k, v) = match kv.iter().position(|&c| c == b'=') {
                    Some(i) => (&kv[..i], &kv[i + 1..]),
                    None => (kv, &b""[..]),
                };
                (k == name.as_bytes()).then_some(v)
            })
        }),
        KeySpec::Path => Some(req.path()),
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
    req: &'a dyn Head,
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
    use pingora::http::RequestHeader;

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
