//! The forward stage's header work (DESIGN.md §11, §13): what the request looks like on its way
//! to the backend. Codec-neutral: the stage says which fields go and which come ([`Edits`]),
//! read through the head view; tether's HTTP/1.1 codec writes them into the upstream head,
//! from the client's own bytes (HTTP/1.1) or from an HTTP/2 stream's fields.
//!
//! Owns: `X-Forwarded-*`, `X-Request-Id` and `traceparent` upstream, stripping the affinity
//! cookie, the client's copies of forwarded claims and of the hand-off header, and writing it. Must not touch: selection, sockets,
//! hop-by-hop fields (the codec's, or pingora's). Allocation-free on the common path: added
//! values are written into a per-thread scratch buffer, the lists are inline.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::ops::Range;

use smallvec::SmallVec;

use crate::http::Head;
use crate::path::authenticate;
use crate::path::edits::Edits;
use crate::path::exchange::{Exchange, Stage};
use crate::path::handoff;
use crate::path::head::{host_header, trim};

/// How the request reached tether.
pub struct Downstream {
    pub client: Option<IpAddr>,
    pub tls: bool,
}

thread_local! {
    /// Added values that are built, not borrowed (`X-Forwarded-For`, `traceparent`, the
    /// stripped `Cookie`): reused by every request on the thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// An added value: borrowed as it is, or built into the scratch buffer.
enum Val<'a> {
    Borrowed(&'a [u8]),
    Built(Range<usize>),
}

/// Builds the request's upstream edits and hands them to `apply` (which writes or edits the
/// head). The client's `X-Forwarded-For` values are kept with the client's address appended;
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (the `Host` as sent), `X-Request-Id` and
/// `traceparent` are tether's (a `tracestate` goes only with a continued trace); the affinity
/// cookie is taken out of `Cookie`; claim headers are the validated token's or none.
pub fn request_edits<R>(
    ex: &Exchange,
    req: &dyn Head,
    down: &Downstream,
    apply: impl FnOnce(&Edits<'_>) -> R,
) -> R {
    SCRATCH.with(|scratch| {
        let mut text = scratch.borrow_mut();
        text.clear();
        let mut drop: SmallVec<[&[u8]; 12]> = SmallVec::new();
        let mut add: SmallVec<[(&[u8], Val<'_>); 12]> = SmallVec::new();
        drop.extend_from_slice(&[
            b"x-forwarded-for",
            b"x-forwarded-proto",
            b"x-forwarded-host",
            b"x-request-id",
            b"traceparent",
        ]);
        if let Some(ip) = down.client {
            let start = text.len();
            for prev in req.values(b"x-forwarded-for") {
                let prev = trim(prev);
                if !prev.is_empty() {
                    text.extend_from_slice(prev);
                    text.extend_from_slice(b", ");
                }
            }
            let _ = write!(text, "{ip}");
            add.push((b"X-Forwarded-For", Val::Built(start..text.len())));
        }
        let proto: &[u8] = if down.tls { b"https" } else { b"http" };
        add.push((b"X-Forwarded-Proto", Val::Borrowed(proto)));
        let host = host_header(req);
        if !host.is_empty() {
            add.push((b"X-Forwarded-Host", Val::Borrowed(host)));
        }
        // A request without `Host` (HTTP/1.0 may omit it) gets the target's authority, else the
        // backend's address: every request a backend receives is an HTTP/1.1 one.
        if req.header(b"host").is_none() {
            match req.authority() {
                Some(a) => add.push((b"Host", Val::Borrowed(a))),
                None => {
                    if let (Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route()) {
                        let start = text.len();
                        let addr = pool.backends[u.pick.backend as usize].addr;
                        let _ = write!(text, "{addr}");
                        add.push((b"Host", Val::Built(start..text.len())));
                    }
                }
            }
        }
        add.push((b"X-Request-Id", Val::Borrowed(ex.id.as_bytes())));
        let start = text.len();
        text.extend_from_slice(&ex.trace.header_bytes());
        add.push((b"traceparent", Val::Built(start..text.len())));
        if !ex.trace.continued {
            drop.push(b"tracestate");
        }
        // The affinity cookie is the proxy's business: backends never see it (HAProxy's
        // "indirect"), so it cannot leak into application logs or be echoed back. Whether the
        // request has it was found once, by the pick stage.
        if let (Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route()) {
            if u.has_affinity_cookie {
                drop.push(b"cookie");
                let start = text.len();
                strip_cookie(req, &pool.conf.cookie.name, &mut text);
                if text.len() > start {
                    add.push((b"Cookie", Val::Built(start..text.len())));
                }
            }
        }
        // The hand-off header is tether's alone: every client-sent copy goes (the default name
        // whatever the pool says), and the request that moves a session gets tether's.
        drop.push(handoff::DEFAULT_LOWER);
        if let (Stage::Upstream(u), Some((_, _, pool))) = (&ex.stage, ex.route()) {
            if let Some(header) = &pool.conf.handoff_header {
                if header.lower.as_bytes() != handoff::DEFAULT_LOWER {
                    drop.push(header.lower.as_bytes());
                }
                if let Some(from) = handoff::of(pool, &u.pick.outcome) {
                    let start = text.len();
                    handoff::write_value(&from, &mut text);
                    add.push((header.name.as_bytes(), Val::Built(start..text.len())));
                }
            }
        }
        // Claim headers: every client-sent copy goes (on every route: a backend must be able to
        // trust them), then the route's validated claims are written.
        drop.extend(authenticate::claim_header_names(ex));
        add.extend(authenticate::claim_fields(ex).map(|(n, v)| (n, Val::Borrowed(v))));
        let text = &text[..];
        let add: SmallVec<[(&[u8], &[u8]); 12]> = add
            .iter()
            .map(|(n, v)| {
                let v: &[u8] = match v {
                    Val::Borrowed(b) => b,
                    Val::Built(r) => &text[r.clone()],
                };
                (*n, v)
            })
            .collect();
        apply(&Edits {
            drop: &drop,
            add: &add,
        })
    })
}

/// Appends to `out` the request's cookies but `name`, joined by `; ` (nothing when none is
/// left).
pub fn strip_cookie(req: &dyn Head, name: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for h in req.values(b"cookie") {
        for pair in h.split(|&c| c == b';').map(trim) {
            let ours = pair
                .strip_prefix(name.as_bytes())
                .is_some_and(|r| r.first() == Some(&b'='));
            if pair.is_empty() || ours {
                continue;
            }
            if out.len() > start {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    #[test]
    fn the_affinity_cookie_is_stripped_and_others_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; tether_shop=abc; tether_shop2=x")
            .unwrap();
        req.append_header("cookie", "tether_shop=zzz").unwrap();
        let mut out = Vec::new();
        strip_cookie(&req, "tether_shop", &mut out);
        assert_eq!(out, b"a=1; tether_shop2=x");
        let mut only = RequestHeader::build("GET", b"/", None).unwrap();
        only.append_header("cookie", "tether_shop=abc").unwrap();
        out.clear();
        strip_cookie(&only, "tether_shop", &mut out);
        assert!(out.is_empty());
    }
}
