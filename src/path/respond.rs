//! The respond stage (DESIGN.md §11): what tether adds to a response on its way to the client —
//! the affinity cookie, `Cache-Control: private` with it when asked, `X-Request-Id` — and the
//! responses tether writes itself (404, 502, 503, 504). Engine-neutral.
//!
//! Owns: response header edits and local answers. Must not touch: selection or sockets.

use http::{header, HeaderValue};
use pingora::http::ResponseHeader;

use crate::balance::cookie::Affinity;
use crate::path::exchange::{Exchange, Stage};
use crate::path::head::names;
use crate::snapshot::Pool;

/// Edits a backend's response head for the client.
pub fn response_headers(ex: &Exchange, resp: &mut ResponseHeader) -> pingora::Result<()> {
    if let (Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route()) {
        if let Some(a) = &u.pick.issue {
            resp.append_header(header::SET_COOKIE, set_cookie(pool, a))?;
            if pool.conf.cookie.cache_private {
                mark_private(resp)?;
            }
        }
    }
    if !resp.headers.contains_key(&names::X_REQUEST_ID) {
        resp.insert_header(names::X_REQUEST_ID.clone(), ex.id.clone())?;
    }
    Ok(())
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
    head.insert_header(names::X_REQUEST_ID.clone(), ex.id.clone())?;
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

/// Makes a response that sets the affinity cookie uncacheable by shared caches: adds `private`
/// to `Cache-Control` (replacing `public`) unless it already says `private` or `no-store`.
pub fn mark_private(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let current = resp
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let lower = current.to_ascii_lowercase();
    if lower
        .split(',')
        .map(str::trim)
        .any(|d| d == "private" || d == "no-store")
    {
        return Ok(());
    }
    // "public" would contradict "private": drop it, keep everything else (max-age still
    // applies to the browser's own cache).
    let mut value = String::from("private");
    for d in current.split(',').map(str::trim) {
        if !d.is_empty() && !d.eq_ignore_ascii_case("public") {
            value.push_str(", ");
            value.push_str(d);
        }
    }
    resp.insert_header(header::CACHE_CONTROL, value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_responses_become_private() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(r.headers.get("cache-control").unwrap(), "private");
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "public, max-age=60")
            .unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(
            r.headers.get("cache-control").unwrap(),
            "private, max-age=60"
        );
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "no-store").unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    }
}
