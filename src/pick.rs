//! The pick stage (DESIGN.md §4, §11): which backend a routed request goes to, and where it goes
//! next when that backend refuses the connection.
//!
//! Owns: reading the pool's inputs out of the head (affinity cookie, hash key), calling the pure
//! selection of [`crate::select`], and counting the session moves it reports. Must not touch:
//! sockets, or the pool's live view beyond one load per decision.

use std::time::{SystemTime, UNIX_EPOCH};

use pingora::http::RequestHeader;

use crate::balance::cookie::NONCE_LEN;
use crate::exchange::{Exchange, Stage, Upstream};
use crate::head::{find_cookie, hash_key, ClientIp};
use crate::select::{Input, Moved};
use crate::snapshot::Pool;

/// What the pick stage decided for a routed request.
pub enum Picked {
    /// A backend was picked: the exchange is now [`Stage::Upstream`].
    Backend,
    /// No backend is eligible: answer 503 with this `Retry-After` (seconds).
    NoBackend { retry_after: u64 },
}

/// Picks the backend of the request routed to `route`.
pub fn pick(ex: &mut Exchange, route: usize, req: &RequestHeader, client: ClientIp) -> Picked {
    let pool = &ex.snap.pools[ex.snap.routes[route].pool];
    let view = pool.view.load();
    let key = hash_key(pool, req, client, ex.claims.as_deref());
    let cookie = match &pool.codec {
        Some(_) => find_cookie(req, &pool.conf.cookie.name),
        None => None,
    };
    let input = Input {
        cookie,
        key: key.as_ref().map(|k| k.as_bytes()),
        now: unix_now(),
    };
    match pool.select(&view, &input, &mut fresh_nonce) {
        Some(d) => {
            if let Some(m) = d.moved() {
                count(pool, &m);
            }
            drop(view);
            let mut u = Upstream::new(route, d);
            u.has_affinity_cookie = input.cookie.is_some();
            ex.stage = Stage::Upstream(u);
            Picked::Backend
        }
        None => {
            let retry_after = retry_after(pool);
            drop(view);
            ex.stage = Stage::Local { route, status: 503 };
            Picked::NoBackend { retry_after }
        }
    }
}

/// What to do after a connection failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The request moved to another backend: try it.
    Next,
    /// The pool's `retries` are used up: answer 502.
    Exhausted,
    /// Every eligible backend was tried: answer 503 with this `Retry-After`.
    NoBackend { retry_after: u64 },
}

/// After the picked backend refused the connection: while the pool's `retries` allow, moves the
/// request to the next backend.
pub fn fail_over(ex: &mut Exchange, req: &RequestHeader, client: ClientIp) -> Retry {
    let claims = ex.claims.clone();
    let Some((pool, u)) = ex.upstream() else {
        return Retry::Exhausted;
    };
    let failed = u.pick.backend;
    u.tried.push(failed);
    if u.retries >= pool.conf.retries {
        return Retry::Exhausted;
    }
    let view = pool.view.load();
    let key = hash_key(pool, req, client, claims.as_deref());
    match pool.fail_over(
        &view,
        key.as_ref().map(|k| k.as_bytes()),
        &mut u.pick,
        &u.tried,
        unix_now(),
    ) {
        Some(moved) => {
            u.retries += 1;
            pool.metrics.retries.inc();
            if let Some(m) = moved {
                count(pool, &m);
            }
            Retry::Next
        }
        None => Retry::NoBackend {
            retry_after: retry_after(pool),
        },
    }
}

/// `Retry-After` of a 503 for `pool`: its health-check interval (when the next check may bring a
/// backend back), at least a second.
pub fn retry_after(pool: &Pool) -> u64 {
    pool.conf
        .health
        .as_ref()
        .map(|h| h.interval.as_secs().max(1))
        .unwrap_or(1)
}

fn count(pool: &Pool, m: &Moved) {
    let from = match &m.from {
        Ok(i) => Ok(*i),
        Err(id) => Err(&**id),
    };
    pool.metrics.migrations.count(from, m.to, m.reason.index());
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    // The system CSPRNG does not fail on Linux once initialised; a zero nonce would still be a
    // valid (if shared) session key, never a crash.
    let _ = ring::rand::SystemRandom::new().fill(&mut n);
    n
}
