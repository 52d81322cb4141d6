//! The outcome stage (DESIGN.md §11): the decisions about how a request ends that every engine
//! and protocol makes, stated once. Each engine calls these and keeps only the order of its IO.
//!
//! - [`front`]: the stages before the forward, in their order — route (404), the declared
//!   request body against `max_request_body` (413), authenticate (401), limit (429), pick (503,
//!   or a wait in the circuit breaker's queue) — and tether's own answer when one of them ends
//!   the request;
//! - [`queue_refusal`]: what a request refused by the breaker's queue is answered;
//! - [`body_exceeds`]: a request body that grows past `max_request_body` while it streams;
//! - [`after_connect_failure`]: a failed connection → the next backend, 502 or 503;
//! - [`may_resend`]: when a request may be sent again on a fresh connection;
//! - [`refused_at_connect`]: a TLS backend's refusal after the handshake counts as a connect
//!   failure;
//! - [`upstream_status`] and [`error_status`]: error → status, [`local`]: status → body;
//! - [`blame`] and [`timed_out`]: what is held against the backend (passive health, outlier
//!   detection);
//! - [`final_status`]: the status the request is accounted with.
//!
//! Owns: those rules. Must not touch: sockets, framing, or the protocol the client spoke.

use crate::http::Head;
use pingora::{Error, ErrorSource, ErrorType};

use crate::path::exchange::{Exchange, Stage};
use crate::path::head::ClientIp;
use crate::path::pick::{self, Picked, Refusal, Retry};
use crate::path::read::{self, Reject};
use crate::path::{account, authenticate, limit, respond, route};
use crate::snapshot::Store;
use crate::state::backend::Exchanged;
use crate::state::upstream_tls;

/// The body of a `413`.
pub const BODY_TOO_LARGE: &str = "request body too large\n";

/// Where the stages before the forward left a request.
pub enum Front {
    /// A backend is picked and the request holds its breaker slot (or the pool has none):
    /// forward it.
    Forward,
    /// A backend is picked but its breaker has no free slot: [`pick::admit`], then forward.
    Queued,
    /// tether answers the request itself with `local`. `close`: the connection cannot carry
    /// another request (a refused body is still unread).
    Answer {
        local: Box<respond::Local>,
        close: bool,
    },
}

/// Runs the stages before the forward in their order — route, body limit, authenticate, limit,
/// pick — on a request whose head was read (`route::start` made `ex`).
pub async fn front(
    store: &Store,
    ex: &mut Exchange,
    req: &dyn Head,
    client: ClientIp,
) -> pingora::Result<Front> {
    let Some(ri) = route::route(ex, req) else {
        return Ok(answer(local(ex, 404, None)?));
    };
    let pool = &ex.snap.pools[ex.snap.routes[ri].pool];
    if let (Some(max), Some(len)) = (pool.conf.max_request_body, read::content_length(req)) {
        if len > max {
            // Refused before any backend is contacted; the unread body ends the connection.
            store.metrics().rejected[Reject::BodyTooLarge.index()].inc();
            ex.stage = Stage::Local {
                route: ri,
                status: 413,
            };
            return Ok(Front::Answer {
                local: Box::new(local(ex, 413, None)?),
                close: true,
            });
        }
    }
    if let Err(refused) = authenticate::authenticate(ex, ri, req) {
        return Ok(answer(refused.answer(ex)?));
    }
    if !ex.snap.routes[ri].limits.is_empty() {
        // Boxed: a limit's check (a Redis round trip for a shared store) is a large future, and
        // only requests on routes with limits should carry it in their state.
        if let Err(r) = Box::pin(limit::limit(ex, ri, req, client)).await {
            return Ok(answer(limit::refuse(ex, ri, &r)?));
        }
    }
    match pick::pick(ex, ri, req, client) {
        Picked::Backend => Ok(Front::Forward),
        Picked::Queued => Ok(Front::Queued),
        Picked::NoBackend { retry_after } => Ok(answer(local(ex, 503, Some(retry_after))?)),
    }
}

fn answer(local: respond::Local) -> Front {
    Front::Answer {
        local: Box::new(local),
        close: false,
    }
}

/// What a request the breaker's queue refused gets: `None` when the client went away (nobody
/// to answer), else `503` with its `Retry-After`.
pub fn queue_refusal(r: Refusal) -> Option<(u16, u64)> {
    match r {
        Refusal::Gone => None,
        _ => Some((503, r.retry_after())),
    }
}

/// Whether a request body that has streamed `sent` bytes so far is over the route's pool's
/// `max_request_body` (a chunked or HTTP/2 body without a declared length). Counted once, as a
/// `body_too_large` refusal: the request ends with `413` (or, once the response started, cut
/// off).
pub fn body_exceeds(store: &Store, ex: &Exchange, sent: u64) -> bool {
    let max = ex.route().and_then(|(_, _, p)| p.conf.max_request_body);
    if max.is_some_and(|m| sent > m) {
        store.metrics().rejected[Reject::BodyTooLarge.index()].inc();
        return true;
    }
    false
}

/// What follows a connection to the picked backend that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The request moved to another backend (its breaker slot may still have to be waited for:
    /// [`pick::admit`]).
    Next,
    /// Nothing more to try: answer `status` (502 when the pool's `retries` are used up or the
    /// last backend failed its TLS handshake — a configuration problem, not a missing backend —
    /// else 503 with `Retry-After`).
    Answer {
        status: u16,
        retry_after: Option<u64>,
    },
}

/// After the connection to the picked backend failed with `e` (nothing was sent): counts it
/// against the backend, and moves the request to the next backend while the pool allows.
pub fn after_connect_failure(
    store: &Store,
    ex: &mut Exchange,
    req: &dyn Head,
    client: ClientIp,
    e: &Error,
) -> AfterFailure {
    account::connect_failed(store, ex, e);
    match pick::fail_over(ex, req, client) {
        Retry::Next => AfterFailure::Next,
        Retry::Exhausted => AfterFailure::Answer {
            status: 502,
            retry_after: None,
        },
        Retry::NoBackend { .. } if upstream_tls::is_handshake_failure(e) => AfterFailure::Answer {
            status: 502,
            retry_after: None,
        },
        Retry::NoBackend { retry_after } => AfterFailure::Answer {
            status: 503,
            retry_after: Some(retry_after),
        },
    }
}

/// Whether a request may be sent again on a fresh connection after a reused one turned out
/// closed by the backend (nothing reached it, no response byte came back): only an idempotent
/// method (RFC 9110 §9.2.2: never POST or PATCH), and only without a body — a body already
/// streamed from the client is not kept to be sent twice.
pub fn may_resend(method: &[u8], has_body: bool) -> bool {
    idempotent(method) && !has_body
}

/// RFC 9110 §9.2.2's idempotent methods (methods are case-sensitive).
pub fn idempotent(m: &[u8]) -> bool {
    matches!(
        m,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

/// A fresh TLS connection the backend refused after the handshake (a TLS 1.3 client
/// certificate it rejects shows only at the first read), before any request body was sent: a
/// connect failure — counted against the backend and failed over — not a failed response.
pub fn refused_at_connect(e: &Error, reused: bool, body_sent: bool) -> bool {
    !reused && !body_sent && upstream_tls::refused_after_handshake(e)
}

/// The status a failure on the backend's side gives the client: `504` when it timed out, else
/// `502`.
pub fn upstream_status(e: &Error) -> u16 {
    if timed_out(e) {
        504
    } else {
        502
    }
}

/// The status an error ending a request gives the client, when nothing was sent to it yet: the
/// status it names, [`upstream_status`] for the backend's side, `0` (nobody to answer) when the
/// client went away, `400` for another client-side error, `500` otherwise.
pub fn error_status(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) => upstream_status(e),
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// tether's own answer with `status` (and `Retry-After`), its body chosen by the status.
pub fn local(
    ex: &Exchange,
    status: u16,
    retry_after: Option<u64>,
) -> pingora::Result<respond::Local> {
    let body = match status {
        404 => respond::NO_ROUTE,
        413 => BODY_TOO_LARGE,
        503 => respond::NO_BACKEND,
        504 => respond::GATEWAY_TIMEOUT,
        _ => respond::BAD_GATEWAY,
    };
    respond::local(ex, status, retry_after, body)
}

/// `Retry-After` of a `503` that ends a request routed to a pool: the pool's (its health-check
/// interval), else one second.
pub fn retry_after(ex: &Exchange) -> u64 {
    ex.route()
        .map(|(_, _, pool)| pick::retry_after(pool))
        .unwrap_or(1)
}

/// An upstream read or write that timed out: it also counts against the backend's passive
/// health.
pub fn timed_out(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// A connection that could not be made (counted when it happened, by
/// [`after_connect_failure`]).
pub fn connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
    )
}

/// What the end of a request holds against its backend (outlier detection): a response is
/// judged by its status; a failure of the backend's side after the connection was made counts
/// as a failure; connection failures (counted as they happened) and the client's or tether's
/// own failures count nothing.
pub fn blame(ex: &Exchange, status: u16, upstream_error: Option<&Error>) -> Option<Exchanged> {
    match upstream_error {
        Some(e) if connect_error(e) => None,
        Some(_) => Some(Exchanged::Failed),
        None => matches!(ex.stage, Stage::Upstream(_)).then(|| account::judged(status)),
    }
}

/// The status a request is accounted with: tether's own answer, else the response head written
/// to the client, else `0` (nothing was sent).
pub fn final_status(ex: &Exchange, written: Option<u16>) -> u16 {
    ex.local_status().or(written).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_only_idempotent_bodiless_requests() {
        assert!(may_resend(b"GET", false));
        assert!(may_resend(b"PUT", false));
        assert!(!may_resend(b"PUT", true), "a PUT's body is not kept");
        assert!(!may_resend(b"DELETE", true));
        assert!(!may_resend(b"POST", false));
        assert!(!may_resend(b"PATCH", false));
        assert!(!may_resend(b"get", false), "methods are case-sensitive");
    }

    #[test]
    fn errors_map_to_statuses() {
        let up = |t| Error::create(t, ErrorSource::Upstream, None, None);
        let down = |t| Error::create(t, ErrorSource::Downstream, None, None);
        assert_eq!(error_status(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::WriteTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::ConnectionClosed)), 502);
        assert_eq!(error_status(&down(ErrorType::ConnectionClosed)), 0);
        assert_eq!(error_status(&down(ErrorType::InvalidHTTPHeader)), 400);
        assert_eq!(error_status(&up(ErrorType::HTTPStatus(413))), 413);
        assert_eq!(upstream_status(&up(ErrorType::ReadError)), 502);
        assert!(connect_error(&up(ErrorType::ConnectRefused)));
        assert!(!connect_error(&up(ErrorType::ReadError)));
    }
}
