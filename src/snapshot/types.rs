//! The snapshot's types: one immutable configuration generation ([`Snapshot`]) with its routes,
//! pools and backends, and each pool's live [`View`] — the rings and round-robin sequence derived
//! from backend state, rebuilt (off the request path) by whoever changes a backend's state. A
//! request loads the snapshot once and uses it to the end; it reads one `View` per decision and
//! never takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;

use crate::balance::cookie::{BackendDigest, CookieCodec};
use crate::balance::ring::Ring;
use crate::balance::wrr::Wrr;
use crate::config::{self, Config, HostMatch, Policy};
use crate::state::backend::{Admin, BackendState, Shown};
use crate::state::metrics::{PoolMetrics, RequestCounters};
use crate::state::ratelimit::{Limiter, RateLimits};

/// One immutable configuration generation.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Sorted by match priority: the first route that matches host and path wins.
    pub routes: Vec<Route>,
    /// Same order as `config.pools`.
    pub pools: Vec<Pool>,
    /// `tether_requests_total` for requests that matched no route.
    pub unrouted: RequestCounters,
    /// The rate limiters (DESIGN.md §14); unchanged ones carried over from the previous
    /// snapshot with their buckets.
    pub rate_limits: RateLimits,
    /// `[jwt.NAME]` verifiers, in `config.jwts` order.
    pub jwts: Vec<crate::state::jwt::Verifier>,
    /// Every header a `forward_claims` writes: client-sent copies are removed on every route.
    pub claim_headers: Vec<http::HeaderName>,
}

pub struct Route {
    /// The `route` metric label.
    pub name: Arc<str>,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub pool: usize,
    /// Index into `Snapshot::jwts`: a valid token is required.
    pub jwt: Option<usize>,
    /// `tether_requests_total` handles, per backend index of the pool.
    pub requests: Vec<RequestCounters>,
    /// For answers given before a backend was picked (e.g. 503).
    pub requests_no_backend: RequestCounters,
    /// The route's `rate_limits`, in its order (the limit stage checks them).
    pub limits: Box<[Arc<Limiter>]>,
}

pub struct Backend {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub digest: BackendDigest,
    pub state: Arc<BackendState>,
    /// Pre-built peer, cloned per request (peers are built from a `SocketAddr`: never resolved).
    pub peer: HttpPeer,
    /// The fast path's idle-connection key: address and the pool's TLS identity.
    pub conn_key: crate::state::upstream::Key,
}

/// A backend that left the pool (reload or DNS discovery).
#[derive(Clone)]
pub struct Retired {
    pub id: Arc<str>,
    /// Its address, when it was up (healthy, not ejected) as it left.
    pub alive_at: Option<std::net::SocketAddr>,
}

pub struct Pool {
    pub name: Arc<str>,
    pub conf: config::Pool,
    pub backends: Vec<Backend>,
    /// Cookie backend digest → backend index.
    pub by_digest: HashMap<BackendDigest, u32>,
    /// Digests of backends that were in this pool earlier (since start) but are not now: their
    /// id, and their address if they were up when they left (a session hand-off may ask them).
    pub retired: HashMap<BackendDigest, Retired>,
    /// Present when the pool uses the affinity cookie.
    pub codec: Option<CookieCodec>,
    /// `; Path=/; Max-Age=..; HttpOnly; SameSite=Lax` — appended to `name=value`.
    pub cookie_attrs: String,
    pub view: ArcSwap<View>,
    pub rr_counter: AtomicUsize,
    pub metrics: PoolMetrics,
    /// `[pool.NAME.circuit_breaker]`: per-backend caps and the pool's queue (live across
    /// reloads, see [`crate::state::queue`]).
    pub breaker: Option<crate::state::queue::Breaker>,
}

/// Live selection structures of a pool, derived from backend states.
pub struct View {
    /// Up and not in maint (draining included): may keep existing sessions.
    pub serving: Box<[bool]>,
    /// Serving and not draining: may take new sessions.
    pub assignable: Box<[bool]>,
    /// Rings (only for pools that hash: `cookie` and `hash`).
    pub serving_ring: Ring,
    pub assignable_ring: Ring,
    /// Smooth WRR over the assignable backends (over the serving ones when every serving
    /// backend drains, so a fully drained pool still answers).
    pub wrr: Wrr,
    /// True when no backend was serving and the pool fails open (everything counts as serving).
    pub failed_open: bool,
    /// Built with slow-start weights (some backend was ramping up): rebuilt until it is not.
    pub ramping: bool,
    /// `least_request` pools: the backends round-robin would pick from, with their (effective)
    /// weights; empty for other policies.
    pub candidates: Box<[(u32, u32)]>,
    /// Each backend's state as this view was built from it: what `/status` and the backend
    /// gauges show, so that they never show a state the routing has not followed yet.
    pub shown: Box<[Shown]>,
}

/// What a view is built from: the backends' states and the masks derived from them.
pub(super) struct Masks {
    pub(super) serving: Box<[bool]>,
    pub(super) assignable: Box<[bool]>,
    pub(super) failed_open: bool,
    pub(super) shown: Box<[Shown]>,
}

impl View {
    /// The backends' current states (each read once) and the masks they make.
    pub(super) fn masks(pool: &config::Pool, backends: &[Backend]) -> Masks {
        let shown: Box<[Shown]> = backends.iter().map(|b| b.state.shown()).collect();
        let serving_of = |s: &Shown| s.healthy && !s.ejected && s.admin != Admin::Maint;
        // A drain with hand-off (DESIGN.md §25) serves nothing, so its sessions move — unless
        // no other backend serves: then there is nowhere to hand them to, and it keeps them.
        let others = shown.iter().any(|s| serving_of(s) && !s.handoff);
        let serving_of = |s: &Shown| serving_of(s) && !(s.handoff && others);
        let mut serving: Box<[bool]> = shown.iter().map(serving_of).collect();
        let mut assignable: Box<[bool]> = shown
            .iter()
            .map(|s| serving_of(s) && s.admin == Admin::Ready)
            .collect();
        // SRV priorities (DESIGN.md §22): only the lowest-numbered group with a serving member
        // takes traffic; the others stand by.
        let top = pool
            .backends
            .iter()
            .zip(serving.iter())
            .filter(|(_, s)| **s)
            .map(|(b, _)| b.priority)
            .min();
        if let Some(top) = top {
            for (i, b) in pool.backends.iter().enumerate() {
                if b.priority > top {
                    serving[i] = false;
                    assignable[i] = false;
                }
            }
        }
        let mut failed_open = false;
        if pool.fail_open && !serving.iter().any(|s| *s) {
            serving.iter_mut().for_each(|s| *s = true);
            assignable.iter_mut().for_each(|s| *s = true);
            failed_open = true;
        }
        Masks {
            serving,
            assignable,
            failed_open,
            shown,
        }
    }

    pub(super) fn build(pool: &config::Pool, backends: &[Backend]) -> View {
        View::from_masks(pool, backends, View::masks(pool, backends))
    }

    pub(super) fn from_masks(pool: &config::Pool, backends: &[Backend], masks: Masks) -> View {
        let Masks {
            serving,
            assignable,
            failed_open,
            shown,
        } = masks;
        let hashes = matches!(pool.policy, Policy::Cookie | Policy::Hash);
        let ring_of = |set: &[bool]| {
            if !hashes {
                return Ring::build(std::iter::empty());
            }
            Ring::build(
                backends
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| set[*i])
                    .map(|(i, b)| (i as u32, &*b.id, b.weight)),
            )
        };
        let wrr_set: &[bool] = if assignable.iter().any(|a| *a) {
            &assignable
        } else {
            &serving
        };
        // Slow start: weights in tenths while a backend ramps up (10 % of weight 1 is 1).
        let window = pool.slow_start;
        let ramping = window.is_some() && backends.iter().any(|b| b.state.in_slow_start(window));
        let weighted: Vec<(u32, u32)> = backends
            .iter()
            .enumerate()
            .filter(|(i, _)| wrr_set[*i])
            .map(|(i, b)| {
                let w = if ramping {
                    b.state.effective_weight_tenths(b.weight, window)
                } else {
                    b.weight
                };
                (i as u32, w)
            })
            .collect();
        let wrr = Wrr::build(weighted.iter().copied());
        let candidates = if pool.policy == Policy::LeastRequest {
            weighted.into_boxed_slice()
        } else {
            Box::default()
        };
        View {
            candidates,
            shown,
            serving_ring: ring_of(&serving),
            assignable_ring: ring_of(&assignable),
            wrr,
            serving,
            assignable,
            failed_open,
            ramping,
        }
    }

    pub fn any_serving(&self) -> bool {
        self.serving.iter().any(|s| *s)
    }

    /// Sets the backend gauges to what this view shows.
    pub(super) fn publish(&self, backends: &[Backend]) {
        for (b, s) in backends.iter().zip(self.shown.iter()) {
            b.state.metrics.publish(*s);
        }
    }
}

impl Pool {
    /// Rebuilds the live view from the backends' current states.
    pub fn refresh(&self) {
        let view = Arc::new(View::build(&self.conf, &self.backends));
        self.view.store(view.clone());
        // After the store: a gauge never shows a state requests are not yet routed by.
        view.publish(&self.backends);
        // Waiters pinned to a backend that stopped serving re-pick; one that came back takes
        // waiters in.
        if let Some(b) = &self.breaker {
            b.view_changed();
        }
    }

    pub fn backend_index(&self, id: &str) -> Option<usize> {
        self.backends.iter().position(|b| &*b.id == id)
    }
}

impl Snapshot {
    /// Index of the route for `host` (without port, any case) and `path`.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<usize> {
        self.routes.iter().position(|r| {
            path.starts_with(r.path_prefix.as_bytes())
                && match &r.host {
                    None => true,
                    Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h.as_bytes()),
                    Some(HostMatch::Suffix(s)) => {
                        host.len() > s.len()
                            && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                    }
                }
        })
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| &*p.name == name)
    }
}
