//! The pick stage (DESIGN.md §4, §11): which backend a routed request goes to, and where it goes
//! next when that backend refuses the connection.
//!
//! Owns: reading the pool's inputs out of the head (affinity cookie, hash key), calling the pure
//! selection of [`crate::snapshot::select`], counting the session moves it reports, and — in pools with a
//! circuit breaker — taking the backend's slot or waiting for one in the pool's queue
//! ([`crate::state::queue`]: which requests wait for what, and their re-pick). Must not touch:
//! sockets, or the pool's live view beyond one load per decision.
//!
//! Circuit breaker (DESIGN.md §13): a *pinned* request — its backend came from affinity: a
//! cookie hit or migration, or a hash key's owner — waits for its own backend; any other (round
//! robin, a new cookie session without a key, hash fallback to round robin) takes any eligible
//! backend with a free slot, else waits for the first that frees. A pinned waiter whose backend
//! stops serving (down, ejected, maint, removed by a reload) is re-picked at once, like any
//! session of that backend (the normal migration), and keeps its place in line. After a connect
//! failure the slot moves with the request: the failover target's slot if free, else the
//! request waits for it in the queue like a new one (pinned or not, as before), within
//! `max_queue` and `queue_timeout`.

use std::future::Future;

use crate::http::Head;

use crate::balance::cookie::Affinity;
use crate::path::exchange::{Exchange, Stage, Upstream, CLIENT_CLOSED};
use crate::path::head::{find_cookie, hash_key, ClientIp};
use crate::snapshot::select::{Decision, Input, Moved, Outcome, Reason};
use crate::snapshot::PoolSeat;
use crate::snapshot::{Pool, View};
use crate::state::clock::{fresh_nonce, unix_now};
use crate::state::queue::{Breaker, Enqueued, Refused, Verdict, Want};

/// What the pick stage decided for a routed request.
pub enum Picked {
    /// A backend was picked: the exchange is now [`Stage::Upstream`].
    Backend,
    /// No backend is eligible: answer 503 with this `Retry-After` (seconds).
    NoBackend { retry_after: u64 },
    /// A backend was picked but the circuit breaker has no free slot for it: the exchange is
    /// [`Stage::Upstream`] without a slot; [`admit`] waits for one.
    Queued,
}

/// Why [`admit`] gave up on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full: 503, `Retry-After: 1`.
    Full,
    /// It waited past `queue_timeout`: 503, `Retry-After: 1`.
    Timeout,
    /// Its backend stopped serving while it waited and no other is eligible: 503.
    NoBackend { retry_after: u64 },
    /// The client went away while it waited: nothing to answer.
    Gone,
}

impl Refusal {
    /// The `Retry-After` of its 503.
    pub fn retry_after(self) -> u64 {
        match self {
            Refusal::NoBackend { retry_after } => retry_after,
            _ => 1,
        }
    }

    /// For the access log's `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "queue_full",
            Refusal::Timeout => "queue_timeout",
            Refusal::NoBackend { .. } => "no_backend",
            Refusal::Gone => "client_closed",
        }
    }
}

/// The client side of a request that may wait in the queue, as each engine sees it.
pub trait Client {
    /// Resolves when the client is known to have gone away; pending for as long as that cannot
    /// be seen without reading the request body (the wait then ends at `queue_timeout`).
    fn gone(&mut self) -> impl Future<Output = ()> + Send + '_;
}

/// Picks the backend of the request routed to `route`.
pub fn pick(ex: &mut Exchange, route: usize, req: &dyn Head, client: ClientIp) -> Picked {
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
            if let Some(owner) = d.overflow {
                if let Some(c) = pool.metrics.hash_overflow.get(owner as usize) {
                    c.inc();
                }
            }
            let pinned = is_pinned(&d, key.is_some());
            let mut u = Upstream::new(route, d);
            u.has_affinity_cookie = input.cookie.is_some();
            u.key_hash = input.key.map(crate::balance::sessions::session_hash);
            let free = match &pool.breaker {
                None => true,
                Some(b) => take_free(pool, b, &view, &mut u, pinned),
            };
            drop(view);
            ex.stage = Stage::Upstream(u);
            if free {
                Picked::Backend
            } else {
                Picked::Queued
            }
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
pub fn fail_over(ex: &mut Exchange, req: &dyn Head, client: ClientIp) -> Retry {
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
            if let Some(b) = &pool.breaker {
                // The slot moves with the request: given back on the failed backend (normally
                // already, with its in-flight count), taken on the new one if free — else
                // `admit` waits for it.
                if let Some(old) = u.slot.take() {
                    b.release(old);
                }
                take_free(pool, b, &view, u, is_pinned(&u.pick, key.is_some()));
            }
            Retry::Next
        }
        None => Retry::NoBackend {
            retry_after: retry_after(pool),
        },
    }
}

/// What a request that waits in a circuit-breaker queue needs of its head to be re-picked,
/// copied once (only requests that wait get here), so the head's buffer is free while it waits.
pub struct Waiting {
    key: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
}

/// Whether the request must wait for its backend slot (a pool with a circuit breaker, no slot
/// held yet): then the inputs [`admit`] needs, taken from its head.
pub fn waiting(ex: &Exchange, req: &dyn Head, client: ClientIp) -> Option<Waiting> {
    let Stage::Upstream(u) = &ex.stage else {
        return None;
    };
    let pool = &ex.snap.pools[ex.snap.routes[u.route].pool];
    if u.slot.is_some() || pool.breaker.is_none() {
        return None;
    }
    Some(Waiting {
        key: hash_key(pool, req, client, ex.claims.as_deref()).map(|k| k.as_bytes().to_vec()),
        cookie: match &pool.codec {
            Some(_) => find_cookie(req, &pool.conf.cookie.name).map(<[u8]>::to_vec),
            None => None,
        },
    })
}

/// Waits, in pools with a circuit breaker, until the request's backend slot is its own: at once
/// when it already holds one (or the pool has no breaker), else in the pool's queue. On a
/// refusal the exchange becomes a local answer (503) — nothing of it reached a backend — or,
/// when the client went away, an answer of nothing (status 0). `w`: from [`waiting`].
pub async fn admit(
    ex: &mut Exchange,
    w: Option<Waiting>,
    c: &mut (impl Client + Send),
) -> Result<(), Refusal> {
    let Some(Waiting { key, cookie }) = w else {
        return Ok(());
    };
    let (snap, pi) = match &ex.stage {
        Stage::Upstream(u) if u.slot.is_none() => {
            let pi = ex.snap.routes[u.route].pool;
            if ex.snap.pools[pi].breaker.is_none() {
                return Ok(());
            }
            (ex.snap.clone(), pi)
        }
        _ => return Ok(()),
    };
    let pool = &snap.pools[pi];
    let (Some(b), Some(seat)) = (&pool.breaker, PoolSeat::of(snap.clone(), pi)) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + b.opts.queue_timeout;
    let mut seq = None;
    let gone = c.gone();
    tokio::pin!(gone);
    loop {
        let Some(u) = upstream(ex) else {
            return Ok(());
        };
        let want = if is_pinned(&u.pick, key.is_some()) {
            Want::Pinned(u.pick.backend)
        } else {
            Want::Any {
                first: u.pick.backend,
                tried: u.tried.clone(),
            }
        };
        let mut ticket = match b.enqueue(&seat, want, seq) {
            Enqueued::Slot(i) => {
                settle(pool, u, i);
                return Ok(());
            }
            Enqueued::Full => return Err(refuse(ex, b, Refused::Full)),
            Enqueued::Wait(t) => t,
        };
        seq = Some(ticket.seq());
        let verdict = tokio::select! {
            v = ticket.wait(deadline) => v,
            _ = &mut gone => {
                // Leaving the queue is the ticket's drop; nothing is held.
                drop(ticket);
                ex.release();
                let route = upstream(ex).map_or(0, |u| u.route);
                ex.stage = Stage::Local {
                    route,
                    status: CLIENT_CLOSED,
                };
                return Err(Refusal::Gone);
            }
        };
        let Some(u) = upstream(ex) else {
            return Ok(());
        };
        match verdict {
            Verdict::Granted(i) => {
                settle(pool, u, i);
                return Ok(());
            }
            Verdict::TimedOut => return Err(refuse(ex, b, Refused::Timeout)),
            Verdict::Repick => {
                if let Err(retry_after) = repick(pool, u, cookie.as_deref(), key.as_deref()) {
                    ex.release();
                    ex.stage = Stage::Local {
                        route: upstream(ex).map_or(0, |u| u.route),
                        status: 503,
                    };
                    return Err(Refusal::NoBackend { retry_after });
                }
            }
        }
    }
}

fn upstream(ex: &mut Exchange) -> Option<&mut Upstream> {
    match &mut ex.stage {
        Stage::Upstream(u) => Some(u),
        _ => None,
    }
}

/// A request is pinned when its backend came from affinity: a cookie hit or migration, or the
/// owner of a hash key (also for a new session that has one).
fn is_pinned(d: &Decision, keyed: bool) -> bool {
    keyed || matches!(d.outcome, Outcome::Hit | Outcome::Migrated { .. })
}

/// Takes a free slot without waiting (lock-free, and only while nobody waits): the picked
/// backend's, or for a request that is not pinned any other eligible, untried backend's.
fn take_free(pool: &Pool, b: &Breaker, view: &View, u: &mut Upstream, pinned: bool) -> bool {
    let first = u.pick.backend;
    if b.try_take(first) {
        u.slot = Some(first);
        return true;
    }
    if pinned {
        return false;
    }
    let n = pool.backends.len() as u32;
    for k in 1..n {
        let i = (first + k) % n;
        if !u.tried.contains(&i) && pool.usable_any(view, i) && b.try_take(i) {
            settle(pool, u, i);
            return true;
        }
    }
    false
}

/// The request holds the slot of backend `i` now (another than picked for an unpinned one:
/// a new session's cookie then names `i`).
fn settle(pool: &Pool, u: &mut Upstream, i: u32) {
    u.slot = Some(i);
    if u.pick.backend != i {
        u.pick.backend = i;
        if let Some(a) = &mut u.pick.issue {
            a.backend = pool.backends[i as usize].digest;
        }
    }
}

/// Refuses a waiting request: counted, and answered by tether (503) without a backend.
fn refuse(ex: &mut Exchange, b: &Breaker, why: Refused) -> Refusal {
    b.refused(why);
    ex.release();
    let route = upstream(ex).map_or(0, |u| u.route);
    ex.stage = Stage::Local { route, status: 503 };
    match why {
        Refused::Full => Refusal::Full,
        Refused::Timeout => Refusal::Timeout,
    }
}

/// Picks again for a pinned waiter whose backend stopped serving: the normal decision (a
/// session migrates to its deterministic new home), or after connect failures the next
/// untried backend. The view may be an old snapshot's that is no longer rebuilt (a reload
/// came in meanwhile): a backend it still shows but that no longer serves by its live state is
/// skipped the way failover skips one, on the same rings. `Err`: no backend is left.
fn repick(
    pool: &Pool,
    u: &mut Upstream,
    cookie: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Result<(), u64> {
    let view = pool.view.load();
    let now = unix_now();
    if u.tried.is_empty() {
        let input = Input { cookie, key, now };
        let mut d = pool
            .select(&view, &input, &mut fresh_nonce)
            .ok_or_else(|| retry_after(pool))?;
        if !pool.serving_live(d.backend) {
            let k = key.or(d.session.as_ref().map(|n| &n[..]));
            let to = pool
                .live_reselect(&view, k, &[])
                .ok_or_else(|| retry_after(pool))?;
            move_to(pool, &mut d, to, now);
        }
        if let Some(m) = d.moved() {
            count(pool, &m);
        }
        u.pick = d;
    } else {
        let k = key.or(u.pick.session.as_ref().map(|n| &n[..]));
        let to = pool
            .live_reselect(&view, k, &u.tried)
            .ok_or_else(|| retry_after(pool))?;
        move_to(pool, &mut u.pick, to, now);
    }
    Ok(())
}

/// Moves a decision to backend `to`: a session's cookie names it, and a hit becomes a
/// migration (its reason from the old backend's live state).
fn move_to(pool: &Pool, d: &mut Decision, to: u32, now: u64) {
    let from = d.backend;
    if from == to {
        return;
    }
    d.backend = to;
    if let Some(nonce) = d.session {
        d.issue = Some(Affinity {
            backend: pool.backends[to as usize].digest,
            nonce,
            issued: now,
        });
    }
    if d.outcome == Outcome::Hit {
        let b = &pool.backends[from as usize];
        let reason = if pool.breaker.as_ref().is_some_and(|br| !br.is_member(from)) {
            Reason::Removed
        } else if b.state.admin() == crate::state::backend::Admin::Maint {
            Reason::Maint
        } else if b.state.is_healthy() && b.state.is_ejected() {
            Reason::Ejected
        } else if b.state.is_healthy() && b.state.shown().handoff {
            Reason::Drain
        } else {
            Reason::Down
        };
        d.outcome = Outcome::Migrated {
            from: b.id.clone(),
            from_index: Some(from),
            reason,
        };
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
    crate::path::handoff::count(pool, from, m.to, m.reason);
}
