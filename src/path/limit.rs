//! The limit stage (DESIGN.md §11, §14): after route (and authenticate), before pick, a routed
//! request is checked against its route's `rate_limits`, in order; the first that refuses
//! answers (`429`, or `503` when its store failed with `on_store_error = "deny"`), and the
//! request never reaches a backend. Engine-neutral: both engines call [`limit`] and, on a
//! refusal, write [`refuse`]'s answer.
//!
//! Owns: reading a limit's key out of the request, the order of the checks, and the refusal's
//! headers. Must not touch: buckets and stores (`ratelimit`), sockets.

use crate::http::Head;
use http::{HeaderName, HeaderValue};

use crate::balance::gcra::retry_after_secs;
use crate::config::KeySpec;
use crate::path::exchange::{Exchange, Stage};
use crate::path::head::{self, ClientIp, Key};
use crate::path::respond;
use crate::state::ratelimit::Decision;

pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub const LIMITED: &str = "rate limit exceeded\n";
pub const UNDECIDED: &str = "rate limit could not be checked\n";

/// Why a request goes no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 429, or 503 (store failed, `on_store_error = "deny"`).
    pub status: u16,
    /// `Retry-After` (and `RateLimit-Reset` of a 429), whole seconds.
    pub retry_after: u64,
    /// The refusing limit's burst, for `RateLimit-Limit` (429 only).
    pub burst: Option<u32>,
}

/// Checks the request routed to `route` against the route's limits, in order: `Err` with the
/// first refusal. A limit whose key the request lacks does not limit it.
pub async fn limit(
    ex: &Exchange,
    route: usize,
    req: &dyn Head,
    client: ClientIp,
) -> Result<(), Refusal> {
    for l in ex.snap.routes[route].limits.iter() {
        let Some(k) = key(&l.conf.key, ex, req, client) else {
            l.no_key();
            continue;
        };
        let ip = matches!(k, Key::Inline(..));
        match l.check(k.as_bytes(), ip).await {
            Decision::Allowed => {}
            Decision::Limited { wait } => {
                return Err(Refusal {
                    status: 429,
                    retry_after: retry_after_secs(wait),
                    burst: Some(l.gcra.burst()),
                })
            }
            Decision::Denied => {
                return Err(Refusal {
                    status: 503,
                    retry_after: 1,
                    burst: None,
                })
            }
        }
    }
    Ok(())
}

/// The key of `spec` in this request, `None` when it has none (or an empty one). Over the
/// request *and* its exchange, so that a key the authenticate stage established (a validated
/// token's claim, `jwt:CLAIM`) is read from the exchange like the others are from the head.
pub fn key<'a>(
    spec: &KeySpec,
    ex: &'a Exchange,
    req: &'a dyn Head,
    client: ClientIp,
) -> Option<Key<'a>> {
    head::extract_key(spec, req, client, ex.claims.as_deref())
}

/// The answer to a refused request: `429` with `Retry-After`, `RateLimit-Limit` (the burst),
/// `RateLimit-Remaining: 0` and `RateLimit-Reset`, or `503` with `Retry-After: 1`. The exchange
/// becomes a local answer of route `route`.
pub fn refuse(ex: &mut Exchange, route: usize, r: &Refusal) -> pingora::Result<respond::Local> {
    ex.stage = Stage::Local {
        route,
        status: r.status,
    };
    let body = if r.status == 429 { LIMITED } else { UNDECIDED };
    let mut l = respond::local(ex, r.status, Some(r.retry_after), body)?;
    if let Some(burst) = r.burst {
        l.head.insert_header(RATELIMIT_LIMIT.clone(), burst)?;
        l.head
            .insert_header(RATELIMIT_REMAINING.clone(), HeaderValue::from_static("0"))?;
        l.head
            .insert_header(RATELIMIT_RESET.clone(), r.retry_after)?;
    }
    Ok(l)
}
