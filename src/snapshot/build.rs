//! Building a [`Snapshot`] from a validated `Config` plus the live registry: pools with their
//! backends' live states and metric handles, views (an unchanged pool lends its view from the
//! snapshot it replaces), breakers, rate limiters, JWT verifiers, the route table in match order.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::types::*;
use crate::balance::cookie::{backend_digest, CookieCodec};
use crate::config::{self, Config, HostMatch};
use crate::state::backend::Registry;
use crate::state::metrics::{request_counters, Metrics, PoolMetrics};
use crate::state::ratelimit::RateLimits;

impl Snapshot {
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
        let jwts = crate::state::jwt::verifiers(&config, metrics, prev.map(|p| &p.jwts[..]));
        let claim_headers = crate::state::jwt::claim_headers(&jwts);
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
    pub(super) fn request_label_sets(&self) -> Vec<[String; 3]> {
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
        .map(|t| crate::state::upstream_tls::PoolTls::new(&pc.name, t));
    let backends: Vec<Backend> = pc
        .backends
        .iter()
        .map(|bc| {
            let mut peer = crate::state::upstream_tls::peer(bc.addr, tls.as_ref());
            peer.options.connection_timeout = Some(pc.connect_timeout);
            peer.options.total_connection_timeout = Some(pc.connect_timeout);
            peer.options.read_timeout = Some(pc.read_timeout);
            peer.options.write_timeout = Some(pc.read_timeout);
            if pc.protocol == config::Protocol::H2 {
                peer.options.alpn = pingora::protocols::ALPN::H2;
            }
            Backend {
                id: bc.id.as_str().into(),
                addr: bc.addr,
                weight: bc.weight,
                digest: backend_digest(&pc.name, &bc.id),
                state: registry.get_or_create(&pc.name, &bc.id, bc.addr),
                peer,
                conn_key: crate::state::upstream::Key {
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
        .map(|id| {
            let digest = backend_digest(&pc.name, &id);
            // Leaving now: its live state is still in the registry; left earlier: as recorded.
            let alive_at = match registry.get(&pc.name, &id) {
                Some(s) => (s.is_healthy() && !s.is_ejected()).then(|| s.addr()),
                None => prev
                    .and_then(|p| p.retired.get(&digest))
                    .and_then(|r| r.alive_at),
            };
            (digest, Retired { id, alive_at })
        })
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
        crate::state::queue::Breaker::new(queue, ids.iter(), opts)
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
        && old
            .conf
            .backends
            .iter()
            .map(|b| b.priority)
            .eq(pc.backends.iter().map(|b| b.priority))
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
