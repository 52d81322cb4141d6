//! The authenticate stage (DESIGN.md §11, §15): on a route with a `jwt`, a request needs a valid
//! token; without one it is answered `401` with `WWW-Authenticate` and goes no further. A valid
//! token's claims go into the exchange for the later stages (`jwt:CLAIM` keys, the forward
//! stage's `forward_claims`). Engine-neutral: both engines call [`authenticate`] between route
//! and pick, and [`forward_claims`] through the forward stage's header edits.
//!
//! Owns: the refusal (status, header, body), `tether_jwt_total`, the claim headers upstream.
//! Must not touch: token cryptography or key sets (`jwt`), selection, sockets.

use http::{header, HeaderValue};
use pingora::http::RequestHeader;

use crate::path::exchange::{Exchange, Stage};
use crate::path::respond;
use crate::state::jwt::Outcome;

/// A request refused by the authenticate stage.
pub struct Refused {
    /// The `WWW-Authenticate` value (RFC 6750 §3).
    challenge: &'static str,
}

/// The body of a 401.
pub const UNAUTHORIZED: &str = "a valid token is required\n";
const MISSING: &str = "Bearer";
const INVALID: &str = "Bearer error=\"invalid_token\"";

impl Refused {
    /// tether's 401 answer.
    pub fn answer(&self, ex: &Exchange) -> pingora::Result<respond::Local> {
        let mut l = respond::local(ex, 401, None, UNAUTHORIZED)?;
        l.head.insert_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(self.challenge),
        )?;
        Ok(l)
    }
}

/// Checks the token of a request routed to `route` when the route requires one. A refused
/// request becomes [`Stage::Local`] with status 401.
pub fn authenticate(ex: &mut Exchange, route: usize, req: &RequestHeader) -> Result<(), Refused> {
    let Some(ji) = ex.snap.routes[route].jwt else {
        return Ok(());
    };
    let v = &ex.snap.jwts[ji];
    let outcome = v.check(req);
    v.counters[match outcome {
        Outcome::Valid(_) => 0,
        Outcome::Missing => 1,
        Outcome::Invalid => 2,
        Outcome::Expired => 3,
    }]
    .inc();
    let challenge = match outcome {
        Outcome::Valid(claims) => {
            // Kept only when a later stage reads a claim.
            if !claims.is_empty() {
                ex.claims = Some(claims);
            }
            return Ok(());
        }
        Outcome::Missing => MISSING,
        Outcome::Invalid | Outcome::Expired => INVALID,
    };
    ex.stage = Stage::Local { route, status: 401 };
    Err(Refused { challenge })
}

/// Upstream request headers from `forward_claims`: every client-sent copy of a claim header is
/// removed (on every route: a backend must be able to trust them), then the route's validated
/// claims are written.
pub fn forward_claims(ex: &Exchange, req: &mut RequestHeader) -> pingora::Result<()> {
    for h in &ex.snap.claim_headers {
        if req.headers.contains_key(h) {
            req.remove_header(h);
        }
    }
    let (Some(claims), Some((_, route, _))) = (&ex.claims, ex.route()) else {
        return Ok(());
    };
    let Some(ji) = route.jwt else {
        return Ok(());
    };
    for (i, name) in &ex.snap.jwts[ji].forward {
        // A claim value that cannot be a header value (control characters) is not forwarded.
        if let Some(v) = claims.value(*i).and_then(|v| HeaderValue::from_str(v).ok()) {
            req.insert_header(name.clone(), v)?;
        }
    }
    Ok(())
}
