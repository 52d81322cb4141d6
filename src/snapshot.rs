//! The configuration snapshot: routes, pools and their backends, built from a validated
//! [`Config`] plus the live [`Registry`], and the [`Store`] that publishes it.
//!
//! Owns: the one `ArcSwap<Snapshot>` and the only `store` into it (reload is all-or-nothing: a
//! complete snapshot is built, then swapped in one store), and each pool's live [`View`] — the
//! rings and round-robin sequence derived from backend state, rebuilt by whoever changes a
//! backend's state. Must not touch: sockets or request handling. A request loads the snapshot
//! once and uses it to the end; it reads one `View` per decision and never takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;

use crate::backend::{Admin, BackendState, Ejection, Registry, Shown};
use crate::balance::cookie::{backend_digest, BackendDigest, CookieCodec};
use crate::balance::ring::Ring;
use crate::balance::wrr::Wrr;
use crate::config::{self, Config, HostMatch, Policy};
use crate::metrics::{request_counters, Metrics, PoolMetrics, RequestCounters};
use crate::ratelimit::{Limiter, RateLimits};

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
    pub jwts: Vec<crate::jwt::Verifier>,
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
    pub conn_key: crate::upstream::Key,
}

pub struct Pool {
    pub name: Arc<str>,
    pub conf: config::Pool,
    pub backends: Vec<Backend>,
    /// Cookie backend digest → backend index.
    pub by_digest: HashMap<BackendDigest, u32>,
    /// Digests of backends that were in this pool earlier (since start) but are not now.
    pub retired: HashMap<BackendDigest, Arc<str>>,
    /// Present when the pool uses the affinity cookie.
    pub codec: Option<CookieCodec>,
    /// `; Path=/; Max-Age=..; HttpOnly; SameSite=Lax` — appended to `name=value`.
    pub cookie_attrs: String,
    pub view: ArcSwap<View>,
    pub rr_counter: AtomicUsize,
    pub metrics: PoolMetrics,
    /// `[pool.NAME.circuit_breaker]`: per-backend caps and the pool's queue (live across
    /// reloads, see [`crate::queue`]).
    pub breaker: Option<crate::queue::Breaker>,
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
struct Masks {
    serving: Box<[bool]>,
    assignable: Box<[bool]>,
    failed_open: bool,
    shown: Box<[Shown]>,
}

impl View {
    /// The backends' current states (each read once) and the masks they make.
    fn masks(pool: &config::Pool, backends: &[Backend]) -> Masks {
        let shown: Box<[Shown]> = backends.iter().map(|b| b.state.shown()).collect();
        let serving_of = |s: &Shown| s.healthy && !s.ejected && s.admin != Admin::Maint;
        let mut serving: Box<[bool]> = shown.iter().map(serving_of).collect();
        let mut assignable: Box<[bool]> = shown
            .iter()
            .map(|s| serving_of(s) && s.admin == Admin::Ready)
            .collect();
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

    fn build(pool: &config::Pool, backends: &[Backend]) -> View {
        View::from_masks(pool, backends, View::masks(pool, backends))
    }

    fn from_masks(pool: &config::Pool, backends: &[Backend], masks: Masks) -> View {
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
    fn publish(&self, backends: &[Backend]) {
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

    /// Builds a complete snapshot. Backend states come from (and are created in) `registry`.
    /// `prev`, the snapshot being replaced, lends its live views to pools whose members and
    /// states did not change, so a reload does not rebuild every ring.
    pub fn build(
        config: Arc<Config>,
        registry: &Registry,
        generation: u64,
        prev: Option<&Snapshot>,
    ) -> Snapshot {
        let metrics = registry.metrics();
        let pools: Vec<Pool> = config
            .pools
            .iter()
            .map(|pc| {
                build_pool(
                    pc,
                    &config,
                    registry,
                    metrics,
                    prev.and_then(|p| p.pool(&pc.name)),
                )
            })
            .collect();
        let rate_limits = RateLimits::build(&config, metrics, prev.map(|p| &p.rate_limits));
        let mut routes: Vec<(usize, Route)> = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, rc)| {
                let pool = &pools[rc.pool];
                let name: Arc<str> = rc.name.as_str().into();
                let requests = pool
                    .backends
                    .iter()
                    .map(|b| request_counters(metrics, &name, &pool.name, &b.id))
                    .collect();
                let route = Route {
                    requests_no_backend: request_counters(metrics, &name, &pool.name, ""),
                    requests,
                    name,
                    host: rc.host.clone(),
                    path_prefix: rc.path_prefix.clone(),
                    pool: rc.pool,
                    limits: rc
                        .rate_limits
                        .iter()
                        .map(|&i| rate_limits.limiters[i].clone())
                        .collect(),
                    jwt: rc.jwt,
                };
                (i, route)
            })
            .collect();
        // Priority: exact host, then wildcard host (longer suffix first), then any host; within
        // that, longest path prefix; then the order in the file.
        routes.sort_by_key(|(i, r)| {
            let host_rank = match &r.host {
                Some(HostMatch::Exact(_)) => (0, 0),
                Some(HostMatch::Suffix(s)) => (1, usize::MAX - s.len()),
                None => (2, 0),
            };
            (host_rank, usize::MAX - r.path_prefix.len(), *i)
        });
        let jwts = crate::authenticate::verifiers(&config, metrics, prev.map(|p| &p.jwts[..]));
        let claim_headers = crate::authenticate::claim_headers(&jwts);
        Snapshot {
            generation,
            jwts,
            claim_headers,
            unrouted: request_counters(metrics, "", "", ""),
            routes: routes.into_iter().map(|(_, r)| r).collect(),
            pools,
            rate_limits,
            config,
        }
    }

    /// Every (route, pool, backend) label set this snapshot counts requests under.
    fn request_label_sets(&self) -> Vec<[String; 3]> {
        let mut v = Vec::new();
        for r in &self.routes {
            let p = &self.pools[r.pool];
            v.push([r.name.to_string(), p.name.to_string(), String::new()]);
            for b in &p.backends {
                v.push([r.name.to_string(), p.name.to_string(), b.id.to_string()]);
            }
        }
        v
    }
}

fn build_pool(
    pc: &config::Pool,
    config: &Config,
    registry: &Registry,
    m: &Metrics,
    prev: Option<&Pool>,
) -> Pool {
    let tls = pc
        .tls
        .as_ref()
        .map(|t| crate::upstream_tls::PoolTls::new(&pc.name, t));
    let backends: Vec<Backend> = pc
        .backends
        .iter()
        .map(|bc| {
            let mut peer = crate::upstream_tls::peer(bc.addr, tls.as_ref());
            peer.options.connection_timeout = Some(pc.connect_timeout);
            peer.options.total_connection_timeout = Some(pc.connect_timeout);
            peer.options.read_timeout = Some(pc.read_timeout);
            peer.options.write_timeout = Some(pc.read_timeout);
            Backend {
                id: bc.id.as_str().into(),
                addr: bc.addr,
                weight: bc.weight,
                digest: backend_digest(&pc.name, &bc.id),
                state: registry.get_or_create(&pc.name, &bc.id, bc.addr),
                peer,
                conn_key: crate::upstream::Key {
                    addr: bc.addr,
                    tls: tls.as_ref().map_or(0, |t| t.identity()),
                },
            }
        })
        .collect();
    let by_digest = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.digest, i as u32))
        .collect();
    let retired = registry
        .known_ids(&pc.name)
        .into_iter()
        .filter(|id| !pc.backends.iter().any(|b| b.id == **id))
        .map(|id| (backend_digest(&pc.name, &id), id))
        .collect();
    let codec = pc
        .uses_cookie()
        .then(|| CookieCodec::new(&pc.name, &config.affinity.secrets));
    let view = match prev {
        Some(old) if same_members(old, pc, &backends) => {
            let old_view = old.view.load_full();
            let fresh = View::masks(pc, &backends);
            if fresh.serving == old_view.serving
                && fresh.assignable == old_view.assignable
                && fresh.shown == old_view.shown
            {
                old_view
            } else {
                Arc::new(View::from_masks(pc, &backends, fresh))
            }
        }
        _ => Arc::new(View::build(pc, &backends)),
    };
    // A new snapshot's views are shown once it is stored; a reload's few microseconds between
    // this and the swap are not a window anyone routes by.
    view.publish(&backends);
    let ids: Vec<Arc<str>> = backends.iter().map(|b| b.id.clone()).collect();
    let bounded = pc.hash.as_ref().is_some_and(|h| h.balance_factor > 0.0);
    let metrics = PoolMetrics::new(m, &pc.name, &ids, bounded);
    let breaker = pc.circuit_breaker.map(|opts| {
        let queue = registry.queues().get_or_create(m, &pc.name, &opts);
        crate::queue::Breaker::new(queue, ids.iter(), opts)
    });
    Pool {
        name: pc.name.as_str().into(),
        cookie_attrs: cookie_attrs(&pc.cookie),
        conf: pc.clone(),
        backends,
        by_digest,
        retired,
        codec,
        view: ArcSwap::new(view),
        rr_counter: AtomicUsize::new(0),
        metrics,
        breaker,
    }
}

/// Same policy, fail-open setting and (id, weight) list in the same order: the live view
/// computed for the old pool is valid for the new one if the backend states agree too.
fn same_members(old: &Pool, pc: &config::Pool, backends: &[Backend]) -> bool {
    old.conf.policy == pc.policy
        && old.conf.fail_open == pc.fail_open
        && old.backends.len() == backends.len()
        && old
            .backends
            .iter()
            .zip(backends)
            .all(|(o, n)| o.id == n.id && o.weight == n.weight)
}

fn cookie_attrs(c: &config::CookieOpts) -> String {
    let mut s = format!("; Path={}", c.path);
    if let Some(d) = &c.domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    if let Some(age) = c.max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if c.http_only {
        s.push_str("; HttpOnly");
    }
    if c.secure {
        s.push_str("; Secure");
    }
    if let Some(ss) = c.same_site {
        s.push_str(match ss {
            config::SameSite::Strict => "; SameSite=Strict",
            config::SameSite::Lax => "; SameSite=Lax",
            config::SameSite::None => "; SameSite=None",
        });
    }
    s
}

/// What a successful install changed, for the one-line reload log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub backends_changed: Vec<String>,
    pub routes_changed: bool,
    /// `[rate_limit.NAME]` and `[jwt.NAME]` tables added, removed or changed (a key file's
    /// content included), as `rate_limit.NAME` / `jwt.NAME`.
    pub gateway_changed: Vec<String>,
    /// Anything else differs (server, log, affinity, limits, TLS, a route's or pool's other keys).
    pub other_changed: bool,
}

impl Diff {
    pub fn between(old: &Config, new: &Config) -> Diff {
        let mut d = Diff::default();
        for p in &new.pools {
            match old.pools.iter().find(|o| o.name == p.name) {
                None => d.pools_added.push(p.name.clone()),
                Some(o) => {
                    for b in &p.backends {
                        match o.backends.iter().find(|ob| ob.id == b.id) {
                            None => d.backends_added.push(format!("{}/{}", p.name, b.id)),
                            Some(ob) if ob.addr != b.addr || ob.weight != b.weight => {
                                d.backends_changed.push(format!("{}/{}", p.name, b.id))
                            }
                            Some(_) => {}
                        }
                    }
                    for ob in &o.backends {
                        if !p.backends.iter().any(|b| b.id == ob.id) {
                            d.backends_removed.push(format!("{}/{}", p.name, ob.id));
                        }
                    }
                }
            }
        }
        for o in &old.pools {
            if !new.pools.iter().any(|p| p.name == o.name) {
                d.pools_removed.push(o.name.clone());
            }
        }
        let key = |c: &Config| {
            c.routes
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.path_prefix.clone(),
                        c.pools[r.pool].name.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        d.routes_changed = key(old) != key(new);
        let mut named: Vec<(String, String)> = Vec::new();
        let mut both = |section: &str, a: Vec<(String, String)>, b: Vec<(String, String)>| {
            for (name, fp) in &b {
                if a.iter().all(|(n, f)| n != name || f != fp) {
                    named.push((section.to_owned(), name.clone()));
                }
            }
            for (name, _) in &a {
                if !b.iter().any(|(n, _)| n == name) {
                    named.push((section.to_owned(), name.clone()));
                }
            }
        };
        let limits = |c: &Config| {
            c.rate_limits
                .iter()
                .map(|l| (l.name.clone(), format!("{l:?}")))
                .collect()
        };
        both("rate_limit", limits(old), limits(new));
        let jwts = |c: &Config| {
            c.jwts
                .iter()
                .map(|j| (j.name.clone(), jwt_fingerprint(j)))
                .collect()
        };
        both("jwt", jwts(old), jwts(new));
        d.gateway_changed = named.into_iter().map(|(s, n)| format!("{s}.{n}")).collect();
        // Everything else, compared by its debug form with the parts above (and the source)
        // left out: only a yes/no for the log line.
        let rest = |c: &Config| {
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                c.server, c.log, c.affinity, c.routes, c.pools, c.redis
            )
        };
        d.other_changed = !d.routes_changed
            && d.pools_added.is_empty()
            && d.pools_removed.is_empty()
            && d.backends_added.is_empty()
            && d.backends_removed.is_empty()
            && d.backends_changed.is_empty()
            && rest(old) != rest(new);
        d
    }
}

/// What a `[jwt.NAME]` is, for comparing two configs: its settings, and its keys by the content
/// hash of their file (or their URL).
fn jwt_fingerprint(j: &config::Jwt) -> String {
    let keys = match &j.keys {
        config::JwtKeys::Static(set) => format!("file {}", set.source_hash),
        config::JwtKeys::Url { url, refresh } => format!("url {url} every {refresh:?}"),
    };
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{keys}",
        j.from, j.algorithms, j.issuer, j.audience, j.leeway, j.forward_claims, j.claims
    )
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists = [
            ("pools added", &self.pools_added),
            ("pools removed", &self.pools_removed),
            ("backends added", &self.backends_added),
            ("backends removed", &self.backends_removed),
            ("backends changed", &self.backends_changed),
        ];
        let mut parts: Vec<String> = lists
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(label, v)| format!("{label} [{}]", v.join(", ")))
            .collect();
        if self.routes_changed {
            parts.push("routes changed".into());
        }
        if !self.gateway_changed.is_empty() {
            parts.push(format!("changed [{}]", self.gateway_changed.join(", ")));
        }
        if parts.is_empty() {
            f.write_str(if self.other_changed {
                "no routing changes; other settings changed"
            } else {
                "no routing changes"
            })
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Work handed from worker threads to the control runtime.
pub enum Control {
    /// Rebuild this pool's view (a backend of it changed state).
    Refresh(Arc<str>),
    /// Outlier detection asks for this backend to be ejected.
    Eject {
        pool: Arc<str>,
        state: Arc<BackendState>,
        why: Ejection,
    },
}

/// The published snapshot plus the registry; the single writer of both kinds of swap.
pub struct Store {
    current: ArcSwap<Snapshot>,
    registry: Arc<Registry>,
    /// Serializes writers (install and view refreshes) so a refresh never lands on a snapshot
    /// that is about to be replaced with views computed from older states. Never taken by
    /// requests.
    write: Mutex<()>,
    /// Pools whose views need a rebuild, sent by worker threads (passive health) to the
    /// control runtime. Unset (unit tests, tools): rebuilt inline.
    refresher: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Control>>,
}

impl Store {
    /// Builds generation 1 from `config`.
    pub fn new(config: Config, registry: Arc<Registry>) -> Store {
        let snap = Snapshot::build(Arc::new(config), &registry, 1, None);
        registry.mark_started();
        registry.metrics().generation.set(1);
        registry.metrics().init_reload_series();
        Store {
            current: ArcSwap::from_pointee(snap),
            registry,
            write: Mutex::new(()),
            refresher: std::sync::OnceLock::new(),
        }
    }

    /// The downstream limits of the current configuration (no reference count taken).
    pub fn limits(&self) -> crate::config::Limits {
        self.current.load().config.server.limits
    }

    /// The current snapshot (one atomic load and reference count).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.registry.metrics()
    }

    /// Builds a snapshot of `config` as the next generation and swaps it in with one store.
    /// Backends that left the config leave the registry; their metric series go with them.
    pub fn install(&self, config: Config) -> (Arc<Snapshot>, Diff) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let diff = Diff::between(&old.config, &config);
        let snap = Arc::new(Snapshot::build(
            Arc::new(config),
            &self.registry,
            old.generation + 1,
            Some(&old),
        ));
        self.current.store(snap.clone());
        self.forget_removed(&old, &snap);
        self.registry.queues().installed(&snap);
        self.metrics().generation.set(snap.generation as i64);
        (snap, diff)
    }

    fn forget_removed(&self, old: &Snapshot, new: &Snapshot) {
        let keep: Vec<(&str, &str)> = new
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(move |b| (&*p.name, &*b.id)))
            .collect();
        self.registry.retain(&keep);
        let m = self.metrics();
        let new_sets: std::collections::HashSet<[String; 3]> =
            new.request_label_sets().into_iter().collect();
        for set in old.request_label_sets() {
            if !new_sets.contains(&set) {
                for c in crate::metrics::CODE_CLASSES {
                    let _ = m
                        .requests
                        .remove_label_values(&[&set[0], &set[1], &set[2], c]);
                }
            }
        }
        old.rate_limits.forget_removed(&new.rate_limits, m);
        for j in &old.jwts {
            if !new.jwts.iter().any(|n| n.name == j.name) {
                for r in crate::jwt::RESULTS {
                    let _ = m.jwt.remove_label_values(&[&j.name, r]);
                }
            }
        }
        for p in &old.pools {
            if new.pool(&p.name).is_none() {
                let _ = m.duration.remove_label_values(&[&p.name]);
                let _ = m.retries.remove_label_values(&[&p.name]);
                for o in crate::metrics::OUTCOMES {
                    let _ = m.affinity.remove_label_values(&[&p.name, o]);
                }
            }
        }
    }

    /// Runs the control work that worker threads hand over — view rebuilds
    /// ([`Store::request_refresh`]) and outlier ejections ([`Store::request_ejection`]) — on `rt`
    /// (the control runtime), and rebuilds the views of pools whose backends are ramping up
    /// under slow start twice a second until the ramp is over.
    pub fn start_refresher(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
        if self.refresher.set(tx).is_err() {
            return;
        }
        let store = Arc::downgrade(self);
        let handle = rt.clone();
        rt.spawn(async move {
            while let Some(first) = rx.recv().await {
                let Some(store) = store.upgrade() else {
                    return;
                };
                let mut pools: Vec<Arc<str>> = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                    match msg {
                        Control::Refresh(p) => {
                            if !pools.contains(&p) {
                                pools.push(p);
                            }
                        }
                        Control::Eject { pool, state, why } => {
                            store.eject(&pool, &state, why, &handle);
                        }
                    }
                }
                for p in pools {
                    store.refresh_pool(&p);
                }
            }
        });
        let store = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let snap = store.load();
                for p in &snap.pools {
                    if p.view.load().ramping
                        || p.conf.slow_start.is_some_and(|w| {
                            p.backends.iter().any(|b| b.state.in_slow_start(Some(w)))
                        })
                    {
                        store.refresh_pool(&p.name);
                    }
                }
            }
        });
    }

    /// Asks for `pool`'s view to be rebuilt: from a worker thread, a message to the control
    /// runtime (no lock, no ring build on the request path).
    pub fn request_refresh(&self, pool: &Arc<str>) {
        match self.refresher.get() {
            Some(tx) if tx.send(Control::Refresh(pool.clone())).is_ok() => {}
            _ => self.refresh_pool(pool),
        }
    }

    /// Asks for a backend to be ejected by outlier detection (the control runtime applies the
    /// pool-wide share guard). Without a control runtime (tools, unit tests) nothing happens.
    pub fn request_ejection(&self, pool: &Arc<str>, state: &Arc<BackendState>, why: Ejection) {
        if let Some(tx) = self.refresher.get() {
            let _ = tx.send(Control::Eject {
                pool: pool.clone(),
                state: state.clone(),
                why,
            });
        }
    }

    /// Ejects `state` unless that would take more than `max_ejected_percent` of the pool (rounded
    /// down) out, or its last backend; rebuilds the pool's view and schedules its return.
    /// Control runtime only. Returns whether it ejected.
    fn eject(
        self: &Arc<Self>,
        pool: &Arc<str>,
        state: &Arc<BackendState>,
        why: Ejection,
        rt: &tokio::runtime::Handle,
    ) -> bool {
        let snap = self.load();
        let Some(p) = snap.pool(pool) else {
            return false;
        };
        let Some(opts) = p.conf.outlier else {
            return false;
        };
        if state.is_ejected() || !p.backends.iter().any(|b| Arc::ptr_eq(&b.state, state)) {
            return false;
        }
        let n = p.backends.len();
        let ejected = p.backends.iter().filter(|b| b.state.is_ejected()).count();
        let allowed = n * opts.max_ejected_percent as usize / 100;
        if ejected + 1 > allowed || ejected + 1 >= n {
            tracing::info!(pool = %pool, backend = %state.id, reason = why.as_str(), "outlier not ejected: {ejected} of {n} already out (max_ejected_percent = {})", opts.max_ejected_percent);
            return false;
        }
        let d = state.eject(why, &opts);
        // The view follows at once; /status and tether_backend_state show the ejection from it.
        self.refresh_pool(pool);
        tracing::warn!(pool = %pool, backend = %state.id, reason = why.as_str(), "backend ejected for {}", humantime::format_duration(d));
        let (store, pool, state) = (Arc::downgrade(self), pool.clone(), state.clone());
        rt.spawn(async move {
            tokio::time::sleep(d).await;
            state.return_from_ejection();
            tracing::info!(pool = %pool, backend = %state.id, "backend returns from ejection");
            if let Some(store) = store.upgrade() {
                store.refresh_pool(&pool);
            }
        });
        true
    }

    /// Rebuilds the live view of `pool` in the current snapshot after a backend of it changed
    /// state. Off the request path.
    pub fn refresh_pool(&self, pool: &str) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.current.load().pool(pool) {
            p.refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(dir: &std::path::Path, limit_rate: u32, level: &str) -> Config {
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "off"
[log]
level = "{level}"
[rate_limit.per_user]
key = "header:X-User"
rate = {limit_rate}
[jwt.users]
secret_file = "{}"
algorithms = ["HS256"]
[[route]]
pool = "p"
jwt = "users"
rate_limits = ["per_user"]
[pool.p]
policy = "round_robin"
[[pool.p.backend]]
id = "a"
addr = "127.0.0.1:1"
"#,
            dir.join("secret").display()
        );
        config::parse(&text, None).expect("valid test config")
    }

    /// The reload summary names what changed beyond routing: a rate limit, a jwt's key file
    /// (by its content), other settings.
    #[test]
    fn the_reload_summary_names_gateway_and_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "first-secret").unwrap();
        let base = conf(dir.path(), 10, "info");
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "info")).to_string(),
            "no routing changes"
        );
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 20, "info")).to_string(),
            "changed [rate_limit.per_user]"
        );
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "debug")).to_string(),
            "no routing changes; other settings changed"
        );
        std::fs::write(dir.path().join("secret"), "second-secret").unwrap();
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "info")).to_string(),
            "changed [jwt.users]"
        );
    }
}
