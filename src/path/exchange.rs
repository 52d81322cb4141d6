//! The state of one request as it walks the stages (DESIGN.md §11), shared by both engines.
//!
//! Owns: what a request holds between stages — its snapshot, id, route, pick and in-flight slot
//! — and the guarantee that a request that ends in any way (answered, failed, panicked,
//! cancelled) gives back what it holds: the in-flight slot and the active-request count are
//! released by `Drop`, never by a call a panic could skip. Must not touch: decisions (stages
//! make them) or IO.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::path::trace::Trace;
use crate::snapshot::select::Decision;
use crate::snapshot::{Pool, Route, Snapshot};

/// Requests in progress, process-wide — and, on the fast engine, accepted connections whose
/// first request has not been answered yet: lets a graceful shutdown end as soon as nothing is
/// in progress instead of always waiting the whole grace period, without cutting off a client
/// that connected just before the listener closed.
pub static ACTIVE_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// One count in [`ACTIVE_REQUESTS`] for as long as it lives.
pub struct Active;

impl Active {
    pub fn begin() -> Active {
        ACTIVE_REQUESTS.fetch_add(1, Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE_REQUESTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a request stands; each stage moves it forward, never back.
pub enum Stage {
    /// The head is read; no route is chosen yet.
    Read,
    /// No route matches its host and path (answered 404).
    Unrouted,
    /// Routed, and answered by tether itself without a backend (e.g. 503: none available).
    Local { route: usize, status: u16 },
    /// Routed, with a backend picked (and possibly re-picked after connection failures).
    Upstream(Upstream),
}

/// A request that has a backend.
pub struct Upstream {
    pub route: usize,
    pub pick: Decision,
    /// Backends that refused the connection, in order.
    pub tried: Vec<u32>,
    pub retries: u32,
    /// The request carries the pool's affinity cookie (found once, by the pick stage): the
    /// forward stage strips it.
    pub has_affinity_cookie: bool,
    /// When the request was first sent to a backend, and how long until its response head.
    pub sent_at: Option<Instant>,
    pub upstream_time: Option<Duration>,
    /// The backend whose in-flight gauge this request holds.
    held: Option<u32>,
    /// The backend whose circuit-breaker slot this request holds (pools with
    /// `[circuit_breaker]`): taken by the pick stage, given back by [`Exchange::release`] —
    /// also on drop.
    pub slot: Option<u32>,
    /// The hash of the request's hash key, taken once by the pick stage (`recent_sessions`
    /// counts it at the account stage without reading the head again).
    pub key_hash: Option<u64>,
}

/// The most bytes of a client's `X-Request-Id` tether accepts.
pub const MAX_REQUEST_ID: usize = 200;

/// A request id, held inline: tether's own or the client's (1–[`MAX_REQUEST_ID`] visible ASCII
/// characters, checked by the route stage).
#[derive(Clone)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID],
}

impl RequestId {
    /// The id `b`, if it is 1–[`MAX_REQUEST_ID`] visible ASCII characters.
    pub fn new(b: &[u8]) -> Option<RequestId> {
        if b.is_empty() || b.len() > MAX_REQUEST_ID || !b.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        let mut id = RequestId {
            len: b.len() as u8,
            bytes: [0; MAX_REQUEST_ID],
        };
        id.bytes[..b.len()].copy_from_slice(b);
        Some(id)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Visible ASCII only (checked in `new`).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request, from its head being read to its account.
pub struct Exchange {
    pub start: Instant,
    pub snap: Arc<Snapshot>,
    /// `X-Request-Id`: the client's when valid, else generated. Inline (no allocation), read
    /// by the upstream request, the response and the log.
    pub id: RequestId,
    /// W3C trace context sent upstream and logged (DESIGN.md §18).
    pub trace: Trace,
    pub stage: Stage,
    /// The claims of the request's validated token (the authenticate stage, on a route with a
    /// `jwt`): read by `jwt:CLAIM` keys and `forward_claims`.
    pub claims: Option<Arc<crate::state::jwt::Claims>>,
    /// Request body bytes relayed so far (checked against `max_request_body` as they stream).
    pub body_bytes: u64,
    _active: Active,
}

impl Exchange {
    pub fn new(snap: Arc<Snapshot>, id: RequestId, trace: Trace) -> Exchange {
        Exchange {
            start: Instant::now(),
            snap,
            trace,
            id,
            stage: Stage::Read,
            claims: None,
            body_bytes: 0,
            _active: Active::begin(),
        }
    }

    /// Claim `name` of the request's validated token: strings as sent, numbers and booleans
    /// as their JSON text. Only claims tether was configured to read are kept (see
    /// `config::Jwt::claims`); `None` also when the route has no `jwt`.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.as_deref()?.get(name)
    }

    /// The route, once one is chosen.
    pub fn route(&self) -> Option<(usize, &Route, &Pool)> {
        let ri = match &self.stage {
            Stage::Read | Stage::Unrouted => return None,
            Stage::Local { route, .. } => *route,
            Stage::Upstream(u) => u.route,
        };
        let r = &self.snap.routes[ri];
        Some((ri, r, &self.snap.pools[r.pool]))
    }

    /// The pool and upstream state of a request that has a backend.
    pub fn upstream(&mut self) -> Option<(&Pool, &mut Upstream)> {
        match &mut self.stage {
            Stage::Upstream(u) => {
                let pool = &self.snap.pools[self.snap.routes[u.route].pool];
                Some((pool, u))
            }
            _ => None,
        }
    }

    /// Marks the picked backend in flight (moving the slot if the pick changed).
    pub fn hold(&mut self) {
        if let Some((pool, u)) = self.upstream() {
            let bi = u.pick.backend;
            if u.held != Some(bi) {
                if let Some(old) = u.held.take() {
                    pool.backends[old as usize].state.metrics.in_flight.dec();
                }
                pool.backends[bi as usize].state.metrics.in_flight.inc();
                u.held = Some(bi);
            }
        }
    }

    /// Gives back the in-flight slot and the circuit-breaker slot (also done on drop).
    pub fn release(&mut self) {
        if let Some((pool, u)) = self.upstream() {
            if let Some(old) = u.held.take() {
                pool.backends[old as usize].state.metrics.in_flight.dec();
            }
            if let (Some(i), Some(b)) = (u.slot.take(), &pool.breaker) {
                b.release(i);
            }
        }
    }

    /// The status tether answered itself, if it did.
    pub fn local_status(&self) -> Option<u16> {
        match self.stage {
            Stage::Unrouted => Some(404),
            Stage::Local { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// The status logged and counted for a request whose client went away before it was answered
/// (nginx's 499, "client closed request"): a 4xx, the client's doing — a browser that navigated
/// away or a gRPC client that cancelled must not page anyone as a server error.
pub const CLIENT_CLOSED: u16 = 499;

impl Upstream {
    pub fn new(route: usize, pick: Decision) -> Upstream {
        Upstream {
            route,
            pick,
            tried: Vec::new(),
            retries: 0,
            has_affinity_cookie: false,
            sent_at: None,
            upstream_time: None,
            held: None,
            slot: None,
            key_hash: None,
        }
    }

    /// Notes that the response head arrived (first time only).
    pub fn response_head(&mut self) {
        if let (Some(t), None) = (self.sent_at, self.upstream_time) {
            self.upstream_time = Some(t.elapsed());
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::select::Outcome;
    use crate::state::backend::Registry;
    use crate::state::metrics::Metrics;

    fn snapshot() -> Arc<Snapshot> {
        snapshot_with("")
    }

    fn snapshot_with(extra: &str) -> Arc<Snapshot> {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[[route]]\npool = \"p\"\n\
                    [pool.p]\npolicy = \"round_robin\"\n{extra}\n[[pool.p.backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n");
        let config = crate::config::parse(&text, None).expect("valid test config");
        let registry = Registry::new(Arc::new(Metrics::new()));
        Arc::new(Snapshot::build(Arc::new(config), &registry, 1, None))
    }

    /// Tests that create exchanges run one at a time: they check the process-wide
    /// [`ACTIVE_REQUESTS`].
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_panicking_stage_leaves_no_gauge_off_by_one() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let snap = snapshot();
        let gauge = &snap.pools[0].backends[0].state.metrics.in_flight;
        let active = ACTIVE_REQUESTS.load(Ordering::Relaxed);
        let s = snap.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut ex = Exchange::new(
                s,
                RequestId::new(b"id").unwrap(),
                Trace::of(&pingora::http::RequestHeader::build("GET", b"/", None).unwrap()),
            );
            ex.stage = Stage::Upstream(Upstream::new(
                0,
                Decision {
                    backend: 0,
                    outcome: Outcome::None,
                    issue: None,
                    session: None,
                    overflow: None,
                },
            ));
            ex.hold();
            assert_eq!(ex.snap.pools[0].backends[0].state.in_flight(), 1);
            panic!("a stage failed");
        }));
        assert!(r.is_err());
        assert_eq!(gauge.get(), 0, "the in-flight slot was given back");
        assert_eq!(ACTIVE_REQUESTS.load(Ordering::Relaxed), active);
    }

    #[test]
    fn a_panicking_stage_hands_its_breaker_slot_to_the_next_waiter() {
        use crate::state::queue::{Enqueued, Verdict, Want};
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let snap = snapshot_with("[pool.p.circuit_breaker]\nmax_in_flight = 1");
        let b = snap.pools[0].breaker.as_ref().expect("a breaker");
        let s = snap.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut ex = Exchange::new(
                s,
                RequestId::new(b"id").unwrap(),
                Trace::of(&pingora::http::RequestHeader::build("GET", b"/", None).unwrap()),
            );
            let mut u = Upstream::new(
                0,
                Decision {
                    backend: 0,
                    outcome: Outcome::None,
                    issue: None,
                    session: None,
                    overflow: None,
                },
            );
            assert!(ex.snap.pools[0].breaker.as_ref().unwrap().try_take(0));
            u.slot = Some(0);
            ex.stage = Stage::Upstream(u);
            panic!("a stage failed");
        }));
        assert!(r.is_err());
        assert_eq!(b.in_use(0), 0, "the breaker slot was given back");
        assert!(b.try_take(0));
        let mut waiter = match b.enqueue(
            &crate::snapshot::PoolSeat::of(snap.clone(), 0).unwrap(),
            Want::Pinned(0),
            None,
        ) {
            Enqueued::Wait(t) => t,
            _ => panic!("the backend is full"),
        };
        let s = snap.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut ex = Exchange::new(
                s,
                RequestId::new(b"id").unwrap(),
                Trace::of(&pingora::http::RequestHeader::build("GET", b"/", None).unwrap()),
            );
            let mut u = Upstream::new(
                0,
                Decision {
                    backend: 0,
                    outcome: Outcome::None,
                    issue: None,
                    session: None,
                    overflow: None,
                },
            );
            u.slot = Some(0); // the slot taken above
            ex.stage = Stage::Upstream(u);
            panic!("a stage failed");
        }));
        assert!(r.is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let verdict = rt.block_on(async {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            waiter.wait(deadline).await
        });
        assert_eq!(verdict, Verdict::Granted(0));
        assert_eq!(b.in_use(0), 1, "handed over, not freed");
    }
}
