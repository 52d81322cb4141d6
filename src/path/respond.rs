//! The respond stage (DESIGN.md §11): what tether adds to a response on its way to the client —
//! the affinity cookie, `Cache-Control: private` with it when asked, `X-Request-Id` — and the
//! responses tether writes itself (404, 502, 503, 504). Engine-neutral.
//!
//! Owns: response header edits and local answers. Must not touch: selection or sockets.

use http::{header, HeaderValue};
use pingora::http::ResponseHeader;
use smallvec::SmallVec;

use crate::balance::cookie::Affinity;
use crate::http::Fields;
use crate::path::edits::Edits;
use crate::path::exchange::{Exchange, Stage};
use crate::path::head::names;
use crate::snapshot::Pool;

/// Builds the response's edits for the client and hands them to `apply`: the affinity cookie
/// when this response issues one (with `Cache-Control: private` when the pool asks), and the
/// request id unless the backend set one. `Keep-Alive` never goes downstream.
pub fn response_edits<R>(
    ex: &Exchange,
    resp: &dyn Fields,
    apply: impl FnOnce(&Edits<'_>) -> R,
) -> R {
    let mut drop: SmallVec<[&[u8]; 4]> = SmallVec::new();
    drop.push(b"keep-alive");
    let mut cookie = String::new();
    let mut private: Option<String> = None;
    if let (Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route()) {
        if let Some(a) = &u.pick.issue {
            cookie = set_cookie(pool, a);
            if pool.conf.cookie.cache_private {
                private = mark_private(resp);
            }
        }
    }
    let mut add: SmallVec<[(&[u8], &[u8]); 4]> = SmallVec::new();
    if !cookie.is_empty() {
        add.push((b"Set-Cookie", cookie.as_bytes()));
    }
    if let Some(p) = &private {
        drop.push(b"cache-control");
        add.push((b"Cache-Control", p.as_bytes()));
    }
    if resp.header(b"x-request-id").is_none() {
        add.push((b"X-Request-Id", ex.id.as_bytes()));
    }
    apply(&Edits {
        drop: &drop,
        add: &add,
    })
}

/// A response tether writes itself: head and body.
pub struct Local {
    pub head: ResponseHeader,
    pub body: &'static str,
}

/// Builds a local answer with `Content-Type`, `Content-Length`, `X-Request-Id` and, when given,
/// `Retry-After`.
pub fn local(
    ex: &Exchange,
    status: u16,
    retry_after: Option<u64>,
    body: &'static str,
) -> pingora::Result<Local> {
    let mut head = ResponseHeader::build(status, Some(5))?;
    head.insert_header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    )?;
    head.insert_header(header::CONTENT_LENGTH, body.len())?;
    if let Some(s) = retry_after {
        head.insert_header(header::RETRY_AFTER, s)?;
    }
    head.insert_header(
        names::X_REQUEST_ID.clone(),
        HeaderValue::from_bytes(ex.id.as_bytes()).map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InternalError, "bad request id")
        })?,
    )?;
    Ok(Local { head, body })
}

/// The bodies of tether's own answers.
pub const NO_ROUTE: &str = "no route for this host and path\n";
pub const NO_BACKEND: &str = "no backend available\n";
pub const BAD_GATEWAY: &str = "the backend failed\n";
pub const GATEWAY_TIMEOUT: &str = "the backend did not answer in time\n";

/// `name=value; attrs` for the affinity `a` of `pool`.
pub fn set_cookie(pool: &Pool, a: &Affinity) -> String {
    let codec = pool.codec.as_ref().expect("cookie pools have a codec");
    let value = codec.encode(a);
    let name = &pool.conf.cookie.name;
    let mut s = String::with_capacity(name.len() + 1 + value.len() + pool.cookie_attrs.len());
    s.push_str(name);
    s.push('=');
    s.push_str(&value);
    s.push_str(&pool.cookie_attrs);
    s
}

/// The `Cache-Control` that makes a response setting the affinity cookie uncacheable by
/// shared caches: `private` added (replacing `public`), everything else kept (max-age still
/// applies to the browser's own cache). `None`: it already says `private` or `no-store`.
pub fn mark_private(resp: &dyn Fields) -> Option<String> {
    let mut current = String::new();
    for v in resp.values(b"cache-control") {
        if !current.is_empty() {
            current.push_str(", ");
        }
        current.push_str(&String::from_utf8_lossy(v));
    }
    if current
        .split(',')
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"))
    {
        return None;
    }
    let mut value = String::from("private");
    for d in current.split(',').map(str::trim) {
        if !d.is_empty() && !d.eq_ignore_ascii_case("public") {
            value.push_str(", ");
            value.push_str(d);
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_responses_become_private() {
        let r = ResponseHeader::build(200, None).unwrap();
        assert_eq!(mark_private(&r).as_deref(), Some("private"));
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "public, max-age=60")
            .unwrap();
        assert_eq!(mark_private(&r).as_deref(), Some("private, max-age=60"));
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "no-store").unwrap();
        assert_eq!(mark_private(&r), None);
    }
}
