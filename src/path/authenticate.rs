//! The authenticate stage (DESIGN.md §11, §15): on a route with a `jwt`, a request needs a valid
//! token; without one it is answered `401` with `WWW-Authenticate` and goes no further. A valid
//! token's claims go into the exchange for the later stages (`jwt:CLAIM` keys, the forward
//! stage's `forward_claims`). Engine-neutral: both engines call [`authenticate`] between route
//! and pick, and [`forward_claims`] through the forward stage's header edits.
//!
//! Owns: the refusal (status, header, body), `tether_jwt_total`, the claim headers upstream.
//! Must not touch: token cryptography or key sets (`jwt`), selection, sockets.

use crate::http::Head;
use http::{header, HeaderValue};

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
pub fn authenticate(ex: &mut Exchange, route: usize, req: &dyn Head) -> Result<(), Refused> {
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

/// The names of every claim header some route writes (lower case): the client's copies are
/// removed upstream on every route, so a backend can trust them.
pub fn claim_header_names(ex: &Exchange) -> impl Iterator<Item = &[u8]> {
    ex.snap.claim_headers.iter().map(|h| h.as_str().as_bytes())
}

/// The claim headers of this request's route from its validated token (`forward_claims`), as
/// (name, value). A claim value that cannot be a header value is not forwarded.
pub fn claim_fields(ex: &Exchange) -> impl Iterator<Item = (&[u8], &[u8])> {
    let forward = match (&ex.claims, ex.route()) {
        (Some(_), Some((_, route, _))) => route.jwt.map(|ji| &ex.snap.jwts[ji].forward[..]),
        _ => None,
    };
    forward.unwrap_or_default().iter().filter_map(|(i, name)| {
        let v = ex.claims.as_ref()?.value(*i)?;
        v.bytes()
            .all(crate::h1::head::is_field_vchar)
            .then_some((name.as_str().as_bytes(), v.as_bytes()))
    })
}
