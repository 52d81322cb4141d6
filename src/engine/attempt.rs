//! How one attempt on a backend ends, whatever the protocol on either side (DESIGN.md §11):
//! the outcomes an attempt reports to its forward loop, the failover after a connection that
//! failed, and an upstream failure after the connection was made (a timeout counting against
//! the backend's passive health). Shared by the HTTP/1.1 relay (`relay`), the HTTP/2 stream's
//! (`stream`) and the HTTP/2 backends' (`h2up`, `h1h2`).
//!
//! Owns: nothing of its own but these three shapes. Must not touch: IO.

use pingora::{Error, ErrorType};

use crate::engine::down::{Failed, Next};
use crate::engine::wire;
use crate::path::account;
use crate::path::exchange::Exchange;
use crate::path::outcome::{self, AfterFailure};
use crate::path::pick;
use crate::snapshot::Store;

/// How one attempt on one backend connection ended.
pub enum Relayed {
    Done(Next),
    Failed(Failed),
    /// A reused connection failed before any response byte.
    StaleConnection(Box<Error>),
    /// A fresh TLS connection the backend refused after the handshake (TLS 1.3 client
    /// certificate), before any request body was read: a connect failure.
    Refused(Box<Error>),
}

/// After a failed connection `e`: the request moves to the next backend (waiting for its
/// circuit-breaker slot if full, watching the client with `watch`), or ends with the status the
/// outcome rules give (each failed connection was counted when it failed).
pub async fn fail_over(
    store: &Store,
    ex: &mut Exchange,
    req: &dyn crate::http::Head,
    client: crate::path::head::ClientIp,
    e: &Error,
    watch: &mut (impl pick::Client + Send),
) -> Result<(), Failed> {
    match outcome::after_connect_failure(store, ex, req, client, e) {
        AfterFailure::Next => {
            let w = pick::waiting(ex, req, client);
            if let Err(r) = pick::admit(ex, w, watch).await {
                let (status, retry_after) = outcome::queue_refusal(r).unzip();
                return Err(Failed::local(status.unwrap_or(0), retry_after, r.as_str()));
            }
            Ok(())
        }
        AfterFailure::Answer {
            status,
            retry_after,
        } => Err(Failed::local(status, retry_after, e.etype().as_str())),
    }
}

/// A failure of the backend's side after the connection was made: an upstream timeout counts
/// toward passive health.
pub fn upstream_failed(store: &Store, ex: &mut Exchange, e: Box<Error>) -> Relayed {
    if outcome::timed_out(&e) {
        if let Some((pool, u)) = ex.upstream() {
            account::passive(store, pool, u.pick.backend, false);
        }
    }
    Relayed::Failed(Failed::from(&e))
}

pub fn closed() -> Box<Error> {
    wire::upstream_error(ErrorType::ConnectionClosed, "the backend closed", None)
}
