//! The route stage (DESIGN.md §11): a request whose head was read (`read`) gets its id and its
//! snapshot, then its route by host and path.
//!
//! Owns: request ids and the route match. Must not touch: backend selection.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::Head;

use crate::path::exchange::{Exchange, RequestId, Stage};
use crate::path::head::host;
use crate::path::trace::Trace;
use crate::snapshot::Store;

/// Starts the exchange of a request whose head was read: one snapshot load, and its id.
pub fn start(store: &Store, ids: &RequestIds, req: &dyn Head) -> Exchange {
    let id = match client_request_id(req).and_then(RequestId::new) {
        Some(v) => v,
        None => ids.next(),
    };
    Exchange::new(store.load(), id, Trace::of(req))
}

/// Chooses the route; returns its index, or `None` (the exchange is then
/// [`Stage::Unrouted`]).
pub fn route(ex: &mut Exchange, req: &dyn Head) -> Option<usize> {
    let r = ex.snap.route(host(req), req.path());
    if r.is_none() {
        ex.stage = Stage::Unrouted;
    }
    r
}

/// The client's `X-Request-Id` when tether accepts it: 1–200 visible ASCII characters. Anything
/// else is replaced by a generated id everywhere (upstream, response, log).
pub fn client_request_id(req: &dyn Head) -> Option<&[u8]> {
    req.header(b"x-request-id")
        .filter(|b| RequestId::new(b).is_some())
}

/// Request ids: a random per-process prefix and a counter — unique without coordination.
pub struct RequestIds {
    prefix: [u8; 12],
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let n = crate::state::clock::fresh_nonce();
        let mut prefix = [0u8; 12];
        for (i, b) in n[..6].iter().enumerate() {
            prefix[2 * i] = HEX[(b >> 4) as usize];
            prefix[2 * i + 1] = HEX[(b & 15) as usize];
        }
        RequestIds {
            prefix,
            counter: AtomicU64::new(1),
        }
    }

    /// The next id, `<prefix>-<counter in hex>`: inline, no allocation.
    pub fn next(&self) -> RequestId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 12 + 1 + 16];
        b[..12].copy_from_slice(&self.prefix);
        b[12] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            b[13 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 15) as usize];
        }
        RequestId::new(&b[..13 + digits]).expect("hex digits are a valid id")
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    #[test]
    fn ids_are_unique_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let s = a.as_str();
        assert_eq!(s.len(), 14);
        assert!(s.ends_with("-1"));
        assert!(b.as_str().ends_with("-2"));
        for _ in 0..300 {
            ids.next();
        }
        assert!(ids.next().as_str().ends_with("-12f"));
    }

    #[test]
    fn invalid_client_ids_are_not_accepted() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "ok-123").unwrap();
        assert!(client_request_id(&req).is_some());
        req.insert_header("x-request-id", "has space").unwrap();
        assert!(client_request_id(&req).is_none());
        req.insert_header("x-request-id", "x".repeat(201)).unwrap();
        assert!(client_request_id(&req).is_none());
    }
}
