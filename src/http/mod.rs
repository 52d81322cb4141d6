//! Header text helpers (pure): the header names tether reads or writes on every request, the
//! host of a request, and the byte-level rules for finding a cookie. Below every layer that
//! reads a request head (JWT tokens in cookies, the stages); borrows and allocates nothing.

use http::header;
use pingora::http::RequestHeader;

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
