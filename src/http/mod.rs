//! Header text helpers (pure): the head view every stage reads a request through ([`Head`]),
//! the header names tether reads or writes on every request, the host of a request, and the
//! byte-level rules for finding a cookie. Below every layer that reads a request head (JWT
//! tokens in cookies, the stages); borrows and allocates nothing.

use pingora::http::RequestHeader;

/// What a stage reads of a request head, whichever codec parsed it: tether's HTTP/1.1 codec
/// (`h1::RequestView`, spans into the connection's buffer) or the `h2` crate's
/// `http::request::Parts` (an HTTP/2 stream). No stage depends on `http::HeaderMap`; nothing here allocates.
pub trait Head: Fields {
    /// The method, as sent.
    fn method(&self) -> &[u8];
    /// The request target's path and query (`/p?q`; `*` for `OPTIONS *`); an absolute-form
    /// target's scheme and authority are left out.
    fn path_and_query(&self) -> &[u8];
    /// The authority of the target (HTTP/2 `:authority`, an absolute-form target's), if any.
    fn authority(&self) -> Option<&[u8]>;
}

/// The header fields of a head (request or response), by name.
pub trait Fields: Sync {
    /// The `n`-th value (from 0, in order) of the fields named `name` (ASCII
    /// case-insensitive; `name` is given in lower case).
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]>;
}

impl<'h> dyn Fields + 'h {
    /// The first value of the fields named `name` (lower case).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.value(name, 0)
    }

    /// Every value of the fields named `name` (lower case), in order.
    pub fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        (0..).map_while(move |n| self.value(name, n))
    }
}

impl<'h> dyn Head + 'h {
    /// The first value of the fields named `name` (lower case).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.value(name, 0)
    }

    /// Whether a field named `name` (lower case) is present.
    pub fn has(&self, name: &[u8]) -> bool {
        self.value(name, 0).is_some()
    }

    /// Every value of the fields named `name` (lower case), in order.
    pub fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        (0..).map_while(move |n| self.value(name, n))
    }

    /// The path, without the query.
    pub fn path(&self) -> &[u8] {
        let pq = self.path_and_query();
        match pq.iter().position(|&c| c == b'?') {
            Some(i) => &pq[..i],
            None => pq,
        }
    }

    /// The query, without its `?` (`None` when the target has none).
    pub fn query(&self) -> Option<&[u8]> {
        let pq = self.path_and_query();
        pq.iter().position(|&c| c == b'?').map(|i| &pq[i + 1..])
    }
}

/// pingora's request head (benches and unit tests build heads with it): the view of the
/// `http::request::Parts` it wraps.
impl Fields for RequestHeader {
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        let parts: &http::request::Parts = self;
        parts.value(name, n)
    }
}

impl Fields for pingora::http::ResponseHeader {
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        map_value(&self.headers, name, n)
    }
}

/// An HTTP/2 backend's response fields (names already lower case).
impl Fields for http::HeaderMap {
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        map_value(self, name, n)
    }
}

fn map_value<'a>(map: &'a http::HeaderMap, name: &[u8], n: usize) -> Option<&'a [u8]> {
    let name = std::str::from_utf8(name).ok()?;
    map.get_all(name).iter().nth(n).map(|v| v.as_bytes())
}

impl Fields for http::request::Parts {
    /// By a walk over the fields (an HTTP/2 request has few, their names already lower case):
    /// cheaper than parsing and hashing `name` for a map lookup.
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        self.headers
            .iter()
            .filter(|(k, _)| k.as_str().as_bytes() == name)
            .nth(n)
            .map(|(_, v)| v.as_bytes())
    }
}

/// An HTTP/2 stream's request head (the `h2` crate's): the same view as an HTTP/1.1 head.
impl Head for http::request::Parts {
    fn method(&self) -> &[u8] {
        self.method.as_str().as_bytes()
    }

    fn path_and_query(&self) -> &[u8] {
        match self.uri.path_and_query() {
            Some(pq) => pq.as_str().as_bytes(),
            None => b"/",
        }
    }

    fn authority(&self) -> Option<&[u8]> {
        self.uri.authority().map(|a| a.as_str().as_bytes())
    }
}

impl Head for RequestHeader {
    fn method(&self) -> &[u8] {
        let parts: &http::request::Parts = self;
        parts.method()
    }

    fn path_and_query(&self) -> &[u8] {
        let parts: &http::request::Parts = self;
        parts.path_and_query()
    }

    fn authority(&self) -> Option<&[u8]> {
        let parts: &http::request::Parts = self;
        parts.authority()
    }
}

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
pub fn host_header(req: &dyn Head) -> &[u8] {
    match req.header(b"host") {
        Some(h) => h,
        None => req.authority().unwrap_or(b""),
    }
}

/// The host without port, for routing.
pub fn host(req: &dyn Head) -> &[u8] {
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
pub fn find_cookie<'a>(req: &'a dyn Head, name: &str) -> Option<&'a [u8]> {
    for h in req.values(b"cookie") {
        for pair in h.split(|&c| c == b';') {
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
