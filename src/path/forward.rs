//! The forward stage's header work (DESIGN.md §11, §13): what the request looks like on its way
//! to the backend, and which failures may be retried. Engine-neutral: both engines edit the same
//! `RequestHeader` with these functions.
//!
//! Owns: `X-Forwarded-*`, `X-Request-Id` and `traceparent` upstream, stripping the affinity cookie, hop-by-hop
//! headers, and the retry rule. Must not touch: selection or sockets.

use std::io::Write;
use std::net::IpAddr;

use http::{header, HeaderValue};
use pingora::http::RequestHeader;

use crate::path::exchange::Exchange;
use crate::path::head::{host_header, names, trim};

/// How the request reached tether.
pub struct Downstream {
    pub client: Option<IpAddr>,
    pub tls: bool,
}

/// Edits the request head for the backend. At most one buffer each for `X-Forwarded-For` and
/// the stripped Cookie header; `X-Forwarded-Host` and `X-Request-Id` share the bytes they copy.
/// `hop_by_hop` (the fast path, which writes the head itself) drops the client's connection
/// options: tether keeps its own upstream connections alive, and an upgrade keeps `Connection:
/// upgrade`.
pub fn request_headers(
    ex: &Exchange,
    req: &mut RequestHeader,
    down: &Downstream,
    hop_by_hop: bool,
) -> pingora::Result<()> {
    if hop_by_hop {
        let upgrade = req.headers.contains_key(header::UPGRADE);
        for h in [
            &names::PROXY_CONNECTION,
            &names::KEEP_ALIVE,
            &header::TE,
            &header::TRAILER,
        ] {
            if req.headers.contains_key(h) {
                req.remove_header(h);
            }
        }
        if req.headers.contains_key(header::CONNECTION) {
            req.remove_header(&header::CONNECTION);
        }
        if upgrade {
            req.insert_header(header::CONNECTION, HeaderValue::from_static("upgrade"))?;
        }
    }
    if let Some(ip) = down.client {
        let mut buf = [0u8; 48];
        let n = {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            48 - w.len()
        };
        let ip = &buf[..n];
        let xff = match req.headers.get(&names::X_FORWARDED_FOR) {
            Some(prev) if !prev.is_empty() => {
                let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                v
            }
            _ => ip.to_vec(),
        };
        let xff = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff))
            .map_err(|_| internal("bad x-forwarded-for"))?;
        req.insert_header(names::X_FORWARDED_FOR.clone(), xff)?;
    }
    let proto = if down.tls { "https" } else { "http" };
    req.insert_header(
        names::X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(proto),
    )?;
    let h = match req.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => {
            let h = host_header(req);
            (!h.is_empty())
                .then(|| HeaderValue::from_bytes(h).map_err(|_| internal("bad host")))
                .transpose()?
        }
    };
    if let Some(h) = h {
        req.insert_header(names::X_FORWARDED_HOST.clone(), h)?;
    }
    if req.headers.get(&names::X_REQUEST_ID) != Some(&ex.id) {
        req.insert_header(names::X_REQUEST_ID.clone(), ex.id.clone())?;
    }
    ex.trace.apply(req)?;
    // The affinity cookie is the proxy's business: backends never see it (HAProxy's
    // "indirect"), so it cannot leak into application logs or be echoed back.
    // Whether the request has it was found once, by the pick stage.
    if let (crate::path::exchange::Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route())
    {
        if u.has_affinity_cookie {
            strip_cookie(req, &pool.conf.cookie.name)?;
        }
    }
    crate::path::authenticate::forward_claims(ex, req)
}

fn internal(what: &'static str) -> Box<pingora::Error> {
    pingora::Error::explain(pingora::ErrorType::InternalError, what)
}

/// Removes cookie `name` from the Cookie header(s) of `req`; drops a header left empty. The
/// remaining cookies go into one buffer.
pub fn strip_cookie(req: &mut RequestHeader, name: &str) -> pingora::Result<()> {
    let mut kept: Vec<u8> = Vec::new();
    for h in req.headers.get_all(header::COOKIE) {
        for pair in h.as_bytes().split(|&c| c == b';').map(trim) {
            let ours = pair
                .strip_prefix(name.as_bytes())
                .is_some_and(|r| r.first() == Some(&b'='));
            if pair.is_empty() || ours {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    req.remove_header(&header::COOKIE);
    if !kept.is_empty() {
        let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept))
            .map_err(|_| internal("bad cookie header"))?;
        req.insert_header(header::COOKIE, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affinity_cookie_is_stripped_and_others_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; tether_shop=abc; tether_shop2=x")
            .unwrap();
        req.append_header("cookie", "tether_shop=zzz").unwrap();
        strip_cookie(&mut req, "tether_shop").unwrap();
        let all: Vec<&[u8]> = req
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(all, vec![&b"a=1; tether_shop2=x"[..]]);
        let mut only = RequestHeader::build("GET", b"/", None).unwrap();
        only.append_header("cookie", "tether_shop=abc").unwrap();
        strip_cookie(&mut only, "tether_shop").unwrap();
        assert!(only.headers.get("cookie").is_none());
    }
}
