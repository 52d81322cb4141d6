//! Metric definitions (DESIGN.md §8): names, help texts, label sets, and the registry they live in.
//!
//! Owns: the `prometheus::Registry` tether serves at `/metrics` and every metric family in it.
//! Must not touch: request handling. Per-backend and per-route handles are resolved by the
//! snapshot builder and the backend registry, once; nothing on the request path looks up labels.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `reason` values of `tether_downstream_rejected_total` (DESIGN.md §12), in handle order
/// (the read stage's `Reject::index`).
pub const REJECT_REASONS: [&str; 6] = [
    "header_timeout",
    "header_too_large",
    "too_many_headers",
    "body_too_large",
    "bad_request",
    "h2_protocol",
];

/// Response classes used as the `code` label of `tether_requests_total`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CODE_CLASSES`] for a status code (0 and out-of-range codes count as 5xx: the
/// client got no proper answer; a client that went away is logged as 499, a 4xx).
pub fn code_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Backend states of `tether_backend_state`, in gauge order.
pub const STATES: [&str; 5] = ["up", "down", "drain", "maint", "ejected"];

/// Affinity outcomes of `tether_affinity_total`, in handle order.
pub const OUTCOMES: [&str; 4] = ["hit", "new", "migrated", "invalid"];

/// Every metric family name tether exports (the Grafana dashboard test checks against this).
pub const NAMES: [&str; 26] = [
    "tether_jwt_total",
    "tether_hash_overflow_total",
    "tether_outlier_ejections_total",
    "tether_rate_limit_total",
    "tether_rate_limit_store_errors_total",
    "tether_downstream_rejected_total",
    "tether_requests_total",
    "tether_request_duration_seconds",
    "tether_upstream_connect_failures_total",
    "tether_retries_total",
    "tether_backend_up",
    "tether_backend_state",
    "tether_backend_in_flight",
    "tether_health_checks_total",
    "tether_affinity_total",
    "tether_affinity_migrations_total",
    "tether_config_reloads_total",
    "tether_config_last_reload_successful",
    "tether_config_generation",
    "tether_build_info",
    "tether_queue_length",
    "tether_backend_queued",
    "tether_queue_rejections_total",
    "tether_discovery_backends",
    "tether_discovery_resolutions_total",
    "tether_session_handoffs_total",
];

/// Results of `tether_discovery_resolutions_total` (DESIGN.md §22).
pub const RESOLUTION_RESULTS: [&str; 5] = ["changed", "unchanged", "held", "error", "empty"];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub connect_failures: IntCounterVec,
    pub retries: IntCounterVec,
    pub backend_up: IntGaugeVec,
    pub backend_state: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub health_checks: IntCounterVec,
    pub affinity: IntCounterVec,
    pub migrations: IntCounterVec,
    pub reloads: IntCounterVec,
    pub last_reload_ok: IntGauge,
    pub generation: IntGauge,
    /// `tether_downstream_rejected_total`, indexed like [`REJECT_REASONS`].
    pub rejected: [IntCounter; 6],
    pub ejections: IntCounterVec,
    /// The circuit breaker's queue (DESIGN.md §13): see [`crate::state::queue`].
    pub queue_length: IntGaugeVec,
    pub backend_queued: IntGaugeVec,
    pub queue_rejections: IntCounterVec,
    /// `tether_rate_limit_total{limit,result}` and `..._store_errors_total{limit}` (handles
    /// resolved per limit by `ratelimit`).
    pub rate_limit: IntCounterVec,
    pub rate_limit_store_errors: IntCounterVec,
    /// `tether_jwt_total{jwt,result}` (DESIGN.md §15).
    pub jwt: IntCounterVec,
    pub hash_overflow: IntCounterVec,
    /// `tether_discovery_backends{pool}` and `tether_discovery_resolutions_total{pool,result}`
    /// (DESIGN.md §22).
    pub discovery_backends: IntGaugeVec,
    pub discovery_resolutions: IntCounterVec,
    /// `tether_session_handoffs_total{pool,from,to}` (DESIGN.md §25).
    pub handoffs: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tether_request_duration_seconds",
                "Time from receiving the request header to the end of the response, by pool.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
            &["pool"],
        )
        .expect("valid metric");
        r.register(Box::new(duration.clone()))
            .expect("unique metric");
        let build_info = gauge_vec(
            &r,
            "tether_build_info",
            "Always 1; the version label tells which tether build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            requests: counter(
                &r,
                "tether_requests_total",
                "Requests answered, by route, pool, backend and status class (backend is empty when none was picked).",
                &["route", "pool", "backend", "code"],
            ),
            duration,
            connect_failures: counter(
                &r,
                "tether_upstream_connect_failures_total",
                "Failed or timed-out connection attempts to a backend.",
                &["pool", "backend"],
            ),
            retries: counter(
                &r,
                "tether_retries_total",
                "Requests retried on another backend after a connect failure.",
                &["pool"],
            ),
            backend_up: gauge_vec(
                &r,
                "tether_backend_up",
                "1 when the backend passes its health checks, 0 when it is marked down.",
                &["pool", "backend"],
            ),
            backend_state: gauge_vec(
                &r,
                "tether_backend_state",
                "1 for the backend's current state (up, down, drain, maint), 0 for the others.",
                &["pool", "backend", "state"],
            ),
            in_flight: gauge_vec(
                &r,
                "tether_backend_in_flight",
                "Requests currently being proxied to the backend.",
                &["pool", "backend"],
            ),
            health_checks: counter(
                &r,
                "tether_health_checks_total",
                "Active health checks, by result.",
                &["pool", "backend", "result"],
            ),
            affinity: counter(
                &r,
                "tether_affinity_total",
                "Affinity decisions: hit (pinned backend used), new (session assigned), migrated (moved to a new home), invalid (tampered, malformed or expired cookie).",
                &["pool", "outcome"],
            ),
            migrations: counter(
                &r,
                "tether_affinity_migrations_total",
                "Sessions moved from one backend to another, by reason (down, removed, maint, connect_error, ejected, drain: a drain with hand-off).",
                &["pool", "from", "to", "reason"],
            ),
            reloads: counter(
                &r,
                "tether_config_reloads_total",
                "Configuration reload attempts, by result.",
                &["result"],
            ),
            last_reload_ok: gauge(
                &r,
                "tether_config_last_reload_successful",
                "1 if the last configuration reload succeeded (or none was attempted), 0 if it failed.",
            ),
            generation: gauge(
                &r,
                "tether_config_generation",
                "Generation of the running configuration: 1 at start, +1 on each successful reload and each DNS discovery change applied.",
            ),
            rejected: {
                let v = counter(
                    &r,
                    "tether_downstream_rejected_total",
                    "Requests refused at the edge before reaching a backend, by reason (header_timeout, header_too_large, too_many_headers, body_too_large, bad_request, h2_protocol).",
                    &["reason"],
                );
                REJECT_REASONS.map(|reason| v.with_label_values(&[reason]))
            },
            ejections: counter(
                &r,
                "tether_outlier_ejections_total",
                "Backends ejected by outlier detection, by reason (5xx, failures).",
                &["pool", "backend", "reason"],
            ),
            queue_length: gauge_vec(
                &r,
                "tether_queue_length",
                "Requests waiting in the pool's circuit-breaker queue for a backend slot (pinned and unpinned).",
                &["pool"],
            ),
            backend_queued: gauge_vec(
                &r,
                "tether_backend_queued",
                "Requests waiting in the circuit-breaker queue for a slot on this backend (sessions pinned to it).",
                &["pool", "backend"],
            ),
            queue_rejections: counter(
                &r,
                "tether_queue_rejections_total",
                "Requests refused with 503 by the circuit breaker, by reason (full: the queue was full, timeout: waited past queue_timeout).",
                &["pool", "reason"],
            ),
            rate_limit: counter(
                &r,
                "tether_rate_limit_total",
                "Rate limit decisions, by limit and result: allowed, limited (refused: 429, or 503 when the store failed with on_store_error = deny), no_key (the request lacks the limit's key and is not limited by it).",
                &["limit", "result"],
            ),
            rate_limit_store_errors: counter(
                &r,
                "tether_rate_limit_store_errors_total",
                "Requests a redis rate limit could not decide in its store (Redis down, failing or slower than [redis] timeout); they followed on_store_error.",
                &["limit"],
            ),
            jwt: counter(
                &r,
                "tether_jwt_total",
                "Requests on routes that require a JWT, by jwt and result (valid, missing, invalid, expired).",
                &["jwt", "result"],
            ),
            hash_overflow: counter(
                &r,
                "tether_hash_overflow_total",
                "Requests that bounded-load hashing sent past their key's owner because it had too many in flight, by the skipped owner.",
                &["pool", "backend"],
            ),
            discovery_backends: gauge_vec(
                &r,
                "tether_discovery_backends",
                "Backends of the pool found through [pool.NAME.discover] (DNS) and in service now.",
                &["pool"],
            ),
            discovery_resolutions: counter(
                &r,
                "tether_discovery_resolutions_total",
                "DNS resolutions of a pool's [discover] name, by result: changed (applied), unchanged, held (moved more than max_reload_move allows), error (timeout, SERVFAIL, NXDOMAIN: the last good set is kept), empty (no records: kept too).",
                &["pool", "result"],
            ),
            handoffs: counter(
                &r,
                "tether_session_handoffs_total",
                "Sessions moved with their old backend's address in the hand-off header (a drain with hand-off, maint, or removed while up), so the new home could fetch their state from it.",
                &["pool", "from", "to"],
            ),
            registry: r,
        }
    }

    /// Makes both result series of the reload counter visible from the start (at 0), so rate()
    /// and alerts work before the first reload.
    pub fn init_reload_series(&self) {
        self.reloads.with_label_values(&["success"]);
        self.reloads.with_label_values(&["failure"]);
        self.last_reload_ok.set(1);
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        buf
    }

    /// `tether_affinity_migrations_total` of `pool` as `(from, to, reason, count)`, sorted, for
    /// `/status`. Not on the request path.
    pub fn migrations_of(&self, pool: &str) -> Vec<(String, String, String, u64)> {
        let mut v = Vec::new();
        for family in self.migrations.collect() {
            for m in family.get_metric() {
                let mut labels = [""; 4];
                for l in m.get_label() {
                    let idx = match l.name() {
                        "pool" => 0,
                        "from" => 1,
                        "to" => 2,
                        "reason" => 3,
                        _ => continue,
                    };
                    labels[idx] = l.value();
                }
                if labels[0] == pool {
                    let count = m.get_counter().value() as u64;
                    v.push((labels[1].into(), labels[2].into(), labels[3].into(), count));
                }
            }
        }
        v.sort();
        v
    }

    /// Drops every `tether_affinity_migrations_total` and `tether_session_handoffs_total` series
    /// that names `backend` of `pool` as source or target (after a reload removed it). Not on the request path.
    pub fn forget_migrations(&self, pool: &str, backend: &str) {
        for family in self.migrations.collect() {
            for m in family.get_metric() {
                let mut labels = [""; 4];
                for l in m.get_label() {
                    let idx = match l.name() {
                        "pool" => 0,
                        "from" => 1,
                        "to" => 2,
                        "reason" => 3,
                        _ => continue,
                    };
                    labels[idx] = l.value();
                }
                if labels[0] == pool && (labels[1] == backend || labels[2] == backend) {
                    let _ = self.migrations.remove_label_values(&labels);
                }
            }
        }
        // And its hand-offs (DESIGN.md §25), the same way.
        for family in self.handoffs.collect() {
            for m in family.get_metric() {
                let mut labels = [""; 3];
                for l in m.get_label() {
                    let idx = match l.name() {
                        "pool" => 0,
                        "from" => 1,
                        "to" => 2,
                        _ => continue,
                    };
                    labels[idx] = l.value();
                }
                if labels[0] == pool && (labels[1] == backend || labels[2] == backend) {
                    let _ = self.handoffs.remove_label_values(&labels);
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles of one pool, resolved when the snapshot is built.
pub struct PoolMetrics {
    pub duration: Histogram,
    pub retries: IntCounter,
    /// Indexed like [`OUTCOMES`].
    pub affinity: [IntCounter; 4],
    pub migrations: Migrations,
    /// `tether_session_handoffs_total` (DESIGN.md §25; label lookup per count: moves are rare).
    pub handoffs: IntCounterVec,
    /// `tether_hash_overflow_total` by backend index; empty unless the pool bounds its load.
    pub hash_overflow: Box<[IntCounter]>,
}

impl PoolMetrics {
    pub fn new(m: &Metrics, pool: &str, backends: &[Arc<str>], bounded: bool) -> PoolMetrics {
        PoolMetrics {
            hash_overflow: if bounded {
                backends
                    .iter()
                    .map(|b| m.hash_overflow.with_label_values(&[pool, b]))
                    .collect()
            } else {
                Box::default()
            },
            duration: m.duration.with_label_values(&[pool]),
            retries: m.retries.with_label_values(&[pool]),
            affinity: OUTCOMES.map(|o| m.affinity.with_label_values(&[pool, o])),
            migrations: Migrations::new(m, pool, backends),
            handoffs: m.handoffs.clone(),
        }
    }
}

/// Reasons of `tether_affinity_migrations_total`, in handle order.
pub const MIGRATION_REASONS: [&str; 6] = [
    "down",
    "removed",
    "maint",
    "connect_error",
    "ejected",
    "drain",
];

/// Pools up to this size get a table of migration handles (64 backends: 20,480 cells, 320 KiB).
const MIGRATION_TABLE_MAX: usize = 64;

/// `tether_affinity_migrations_total` handles of one pool, by (from, to, reason) backend index.
/// A handle is resolved the first time its pair is counted, never before: resolving every pair
/// ahead would export n² × 5 zero series. After that, counting is one atomic add with no lock
/// and no label lookup. Pools larger than the table, and moves from a backend no longer in the
/// pool, look their labels up each time (sessions move rarely; that is when it matters least).
pub struct Migrations {
    vec: IntCounterVec,
    pool: Arc<str>,
    ids: Box<[Arc<str>]>,
    table: Box<[std::sync::OnceLock<IntCounter>]>,
}

impl Migrations {
    fn new(m: &Metrics, pool: &str, backends: &[Arc<str>]) -> Migrations {
        let n = backends.len();
        let cells = if n <= MIGRATION_TABLE_MAX {
            n * n * MIGRATION_REASONS.len()
        } else {
            0
        };
        Migrations {
            vec: m.migrations.clone(),
            pool: pool.into(),
            ids: backends.into(),
            table: (0..cells).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// Counts one move. `from` is a backend index of the pool, or the id of one that left it.
    pub fn count(&self, from: Result<u32, &str>, to: u32, reason: usize) {
        let n = self.ids.len();
        let to_id = &*self.ids[to as usize];
        match from {
            Ok(f) if !self.table.is_empty() => {
                let cell = (f as usize * n + to as usize) * MIGRATION_REASONS.len() + reason;
                self.table[cell]
                    .get_or_init(|| {
                        self.vec.with_label_values(&[
                            &self.pool,
                            &self.ids[f as usize],
                            to_id,
                            MIGRATION_REASONS[reason],
                        ])
                    })
                    .inc();
            }
            Ok(f) => self
                .vec
                .with_label_values(&[
                    &self.pool,
                    &self.ids[f as usize],
                    to_id,
                    MIGRATION_REASONS[reason],
                ])
                .inc(),
            Err(from) => self
                .vec
                .with_label_values(&[&self.pool, from, to_id, MIGRATION_REASONS[reason]])
                .inc(),
        }
    }
}

/// `tether_requests_total` handles for one (route, pool, backend), indexed by [`code_class`].
pub type RequestCounters = [IntCounter; 5];

pub fn request_counters(m: &Metrics, route: &str, pool: &str, backend: &str) -> RequestCounters {
    CODE_CLASSES.map(|c| m.requests.with_label_values(&[route, pool, backend, c]))
}
