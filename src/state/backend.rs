//! The live backend registry: health, admin state (drain/maint), in-flight counts and per-backend
//! metric handles, keyed by `(pool, backend id)`.
//!
//! Owns: everything about a backend that must outlive a configuration snapshot. Old and new
//! snapshots share the same `Arc<BackendState>`, so a reload never resets the health, admin state
//! or counters of an unchanged backend. Must not touch: routing or selection (it only stores
//! state); callers that change a state tell the snapshot store to rebuild the pool's live view.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};

use crate::state::metrics::{Metrics, STATES};

/// Operator-set state of a backend (DESIGN.md §4). Kept across reloads, reset on restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// Normal operation.
    Ready = 0,
    /// No new sessions; existing affinity kept.
    Drain = 1,
    /// No traffic; sessions migrate.
    Maint = 2,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }

    pub fn parse(s: &str) -> Option<Admin> {
        match s {
            "ready" => Some(Admin::Ready),
            "drain" => Some(Admin::Drain),
            "maint" => Some(Admin::Maint),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Admin {
        match v {
            1 => Admin::Drain,
            2 => Admin::Maint,
            _ => Admin::Ready,
        }
    }
}

/// Handles of one backend's metric series, resolved once when the backend enters the registry.
pub struct BackendMetrics {
    pub up: IntGauge,
    /// Indexed like [`STATES`].
    pub state: [IntGauge; 5],
    /// `tether_outlier_ejections_total`, by [`Ejection`] reason.
    pub ejections: [IntCounter; 2],
    /// The in-flight count itself lives here: an `IntGauge` is an atomic integer.
    pub in_flight: IntGauge,
    pub checks_ok: IntCounter,
    pub checks_failed: IntCounter,
    pub connect_failures: IntCounter,
}

/// Live state of one backend.
pub struct BackendState {
    pub pool: Arc<str>,
    pub id: Arc<str>,
    healthy: std::sync::atomic::AtomicBool,
    admin: AtomicU8,
    /// Consecutive check results in the current direction (successes while down, failures while
    /// up). Active and passive results both feed it.
    streak: AtomicU32,
    /// Consecutive connection failures seen while proxying (reset by any proxied response).
    passive_streak: AtomicU32,
    /// The address the state belongs to: when a reload changes it, health starts over.
    addr: Mutex<SocketAddr>,
    /// Outlier detection (DESIGN.md §13): ejected now; responses in a row that were 5xx and
    /// exchanges in a row that failed; ejections in a row and when the last one ended.
    ejected: std::sync::atomic::AtomicBool,
    streak_5xx: AtomicU32,
    streak_failures: AtomicU32,
    ejections_in_row: AtomicU32,
    returned_at_ms: AtomicU64,
    /// When the backend last became eligible (slow start), in [`clock_ms`]; 0: long ago.
    eligible_since_ms: AtomicU64,
    /// When the current ejection ends, in unix milliseconds; 0 while not ejected (`/status`'s
    /// `ejected_until`).
    ejected_until_ms: AtomicU64,
    /// When a failed connection was last logged, and how many failed since without a line.
    connect_logged_ms: AtomicU64,
    connect_unlogged: AtomicU64,
    /// Drain start and deadline (DESIGN.md §16).
    pub drain: crate::state::drain::DrainClock,
    /// Distinct affinity sessions served recently (`recent_sessions` of `/status`).
    pub sessions: crate::balance::sessions::RecentSessions,
    /// Sessions that moved off this backend with an address to hand their state over from
    /// (`tether_session_handoffs_total` with this `from`).
    pub handed_off: AtomicU64,
    pub metrics: BackendMetrics,
}

/// Why outlier detection ejects a backend (the `reason` of `tether_outlier_ejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    FiveXx = 0,
    Failures = 1,
}

impl Ejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Ejection::FiveXx => "5xx",
            Ejection::Failures => "failures",
        }
    }
}

/// What one exchange with a backend came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchanged {
    /// A response head that was not 5xx (and a body that did not fail).
    Ok,
    /// A 5xx response.
    ServerError,
    /// A connection failure, an upstream timeout, or a failure in the middle of a response.
    Failed,
}

/// One backend's state as operators see it (`/status`, `tether_backend_up`,
/// `tether_backend_state`, a migration's `reason`): what the pool's view was built from, so that
/// what is shown is what requests are routed by — a backend shown down, in maintenance or
/// ejected is one no request is sent to any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    pub healthy: bool,
    pub admin: Admin,
    pub ejected: bool,
    /// Draining with `handoff=true`: its sessions move (reason `drain`) while it stays up.
    pub handoff: bool,
}

impl Shown {
    /// Index into [`STATES`]: maint over down over ejected over drain over ready.
    pub fn state_index(&self) -> usize {
        match (self.healthy, self.admin) {
            (_, Admin::Maint) => 3,
            (false, _) => 1,
            _ if self.ejected => 4,
            (true, Admin::Drain) => 2,
            (true, Admin::Ready) => 0,
        }
    }

    /// The name in `/status` and the `state` label of `tether_backend_state`.
    pub fn state_name(&self) -> &'static str {
        STATES[self.state_index()]
    }

    /// `/status`'s `health`.
    pub fn health(&self) -> &'static str {
        if self.healthy {
            "up"
        } else {
            "down"
        }
    }
}

impl BackendMetrics {
    /// Sets `tether_backend_up` and `tether_backend_state` to `shown`.
    pub fn publish(&self, shown: Shown) {
        self.up.set(shown.healthy as i64);
        let cur = shown.state_index();
        for (i, g) in self.state.iter().enumerate() {
            g.set((i == cur) as i64);
        }
    }
}

/// Milliseconds on a monotonic clock that starts with the process (never 0 after start).
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

/// At most one log line per backend for failed connections in this long.
const CONNECT_LOG_EVERY_MS: u64 = 1000;

impl BackendState {
    /// Whether a failed connection gets a log line now: the first in each second does, with
    /// the number of failures that went unlogged since the last line; the others are counted
    /// (`tether_upstream_connect_failures_total` has them all).
    pub fn log_connect_failure(&self) -> Option<u64> {
        let now = clock_ms();
        let last = self.connect_logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= CONNECT_LOG_EVERY_MS)
            && self
                .connect_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.connect_unlogged.swap(0, Ordering::Relaxed));
        }
        self.connect_unlogged.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn new(m: &Metrics, pool: &str, id: &str, addr: SocketAddr) -> BackendState {
        let l = [pool, id];
        let metrics = BackendMetrics {
            up: m.backend_up.with_label_values(&l),
            state: STATES.map(|s| m.backend_state.with_label_values(&[pool, id, s])),
            in_flight: m.in_flight.with_label_values(&l),
            checks_ok: m.health_checks.with_label_values(&[pool, id, "success"]),
            checks_failed: m.health_checks.with_label_values(&[pool, id, "failure"]),
            connect_failures: m.connect_failures.with_label_values(&l),
            ejections: ["5xx", "failures"].map(|r| m.ejections.with_label_values(&[pool, id, r])),
        };
        let s = BackendState {
            pool: pool.into(),
            id: id.into(),
            healthy: true.into(),
            admin: AtomicU8::new(Admin::Ready as u8),
            streak: AtomicU32::new(0),
            passive_streak: AtomicU32::new(0),
            addr: Mutex::new(addr),
            ejected: false.into(),
            streak_5xx: AtomicU32::new(0),
            streak_failures: AtomicU32::new(0),
            ejections_in_row: AtomicU32::new(0),
            returned_at_ms: AtomicU64::new(0),
            eligible_since_ms: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            connect_logged_ms: AtomicU64::new(0),
            connect_unlogged: AtomicU64::new(0),
            drain: Default::default(),
            sessions: Default::default(),
            handed_off: AtomicU64::new(0),
            metrics,
        };
        s.metrics.publish(s.shown());
        s
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// Ejected by outlier detection (for a while).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Up, not ejected and not in maintenance: may keep serving its existing sessions.
    pub fn is_serving(&self) -> bool {
        self.is_healthy() && !self.is_ejected() && self.admin() != Admin::Maint
    }

    /// Serving and not draining: may take new sessions.
    pub fn is_assignable(&self) -> bool {
        self.is_serving() && self.admin() == Admin::Ready
    }

    /// Records an exchange for outlier detection; returns the ejection it calls for, if its
    /// streak just reached the configured count (the caller hands that to the control runtime,
    /// which applies the pool-wide guard). Lock-free; writes a shared line only on a change.
    pub fn record_exchange(
        &self,
        what: Exchanged,
        opts: &crate::config::OutlierOpts,
    ) -> Option<Ejection> {
        let reset = |a: &AtomicU32| {
            if a.load(Ordering::Relaxed) != 0 {
                a.store(0, Ordering::Relaxed);
            }
        };
        let bump =
            |a: &AtomicU32, limit: u32| limit > 0 && a.fetch_add(1, Ordering::AcqRel) + 1 == limit;
        match what {
            Exchanged::Ok => {
                reset(&self.streak_5xx);
                reset(&self.streak_failures);
                None
            }
            Exchanged::ServerError => {
                reset(&self.streak_failures);
                bump(&self.streak_5xx, opts.consecutive_5xx).then_some(Ejection::FiveXx)
            }
            Exchanged::Failed => {
                bump(&self.streak_failures, opts.consecutive_failures).then_some(Ejection::Failures)
            }
        }
    }

    /// Ejects the backend (control runtime only); returns for how long: the n-th ejection in a
    /// row lasts n × `base_ejection`, at most `max_ejection`. "In a row" ends once the backend
    /// has served `base_ejection` since its last return without being ejected again.
    pub fn eject(&self, why: Ejection, opts: &crate::config::OutlierOpts) -> std::time::Duration {
        let now = clock_ms();
        let returned = self.returned_at_ms.load(Ordering::Relaxed);
        if returned > 0 && now.saturating_sub(returned) >= opts.base_ejection.as_millis() as u64 {
            self.ejections_in_row.store(0, Ordering::Relaxed);
        }
        let n = self.ejections_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let d = opts.base_ejection.saturating_mul(n).min(opts.max_ejection);
        let until = std::time::SystemTime::now() + d;
        let until_ms = until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |t| t.as_millis() as u64)
            .max(1);
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
        self.ejected.store(true, Ordering::Release);
        self.metrics.ejections[why as usize].inc();
        d
    }

    /// Ends an ejection (control runtime only): the backend takes traffic again (if healthy)
    /// and starts over its streaks.
    pub fn return_from_ejection(&self) {
        self.streak_5xx.store(0, Ordering::Relaxed);
        self.streak_failures.store(0, Ordering::Relaxed);
        self.returned_at_ms.store(clock_ms(), Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
        self.became_eligible();
    }

    /// When the current ejection ends (`None` while not ejected).
    pub fn ejected_until(&self) -> Option<std::time::SystemTime> {
        match self.ejected_until_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        }
    }

    /// Notes that the backend just became eligible (slow start starts now).
    pub fn became_eligible(&self) {
        self.eligible_since_ms.store(clock_ms(), Ordering::Relaxed);
    }

    /// Its weight for round-robin picks and new sessions under slow start: from 10 % of
    /// `weight` when it became eligible, linearly to all of it at the end of `window`. In
    /// tenths of a weight unit, so that 10 % of weight 1 is still representable.
    pub fn effective_weight_tenths(&self, weight: u32, window: Option<std::time::Duration>) -> u32 {
        let full = weight * 10;
        let (Some(window), since) = (window, self.eligible_since_ms.load(Ordering::Relaxed)) else {
            return full;
        };
        if since == 0 || window.is_zero() {
            return full;
        }
        let elapsed = clock_ms().saturating_sub(since) as f64;
        let share = (elapsed / window.as_millis() as f64).min(1.0);
        if share >= 1.0 {
            return full;
        }
        let tenths = full as f64 * (0.1 + 0.9 * share);
        (tenths.round() as u32).clamp(1, full)
    }

    /// Whether slow start is still ramping this backend up.
    pub fn in_slow_start(&self, window: Option<std::time::Duration>) -> bool {
        let since = self.eligible_since_ms.load(Ordering::Relaxed);
        match window {
            Some(w) if since > 0 => clock_ms().saturating_sub(since) < w.as_millis() as u64,
            _ => false,
        }
    }

    /// Health, admin state and ejection as they are now. What operators are shown comes from
    /// the pool's view instead (`snapshot::View::shown`), taken when the view that routes by them
    /// was built.
    pub fn shown(&self) -> Shown {
        let admin = self.admin();
        Shown {
            healthy: self.is_healthy(),
            admin,
            ejected: self.is_ejected(),
            handoff: admin == Admin::Drain && self.drain.handoff(),
        }
    }

    /// The state name of [`BackendState::shown`], now.
    pub fn state_name(&self) -> &'static str {
        self.shown().state_name()
    }

    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// Sets the admin state; returns whether it changed.
    pub fn set_admin(&self, a: Admin) -> bool {
        let old = self.admin.swap(a as u8, Ordering::AcqRel);
        if old == Admin::Maint as u8 && a != Admin::Maint {
            self.became_eligible();
        }
        self.drain
            .on_admin(Admin::from_u8(old) == Admin::Drain, a == Admin::Drain);
        old != a as u8
    }

    /// Records one check result (active or passive) against `rise`/`fall`; returns whether the
    /// health state flipped.
    pub fn record(&self, ok: bool, rise: u32, fall: u32) -> bool {
        let healthy = self.is_healthy();
        if ok == healthy {
            // Result agrees with the current state: any streak towards a flip is broken. Load
            // first so the common case does not write a shared cache line.
            if self.streak.load(Ordering::Relaxed) != 0 {
                self.streak.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let needed = if ok { rise } else { fall }.max(1);
        let n = self.streak.fetch_add(1, Ordering::AcqRel) + 1;
        if n < needed {
            return false;
        }
        // Only one caller wins the flip.
        if self
            .healthy
            .compare_exchange(healthy, ok, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.streak.store(0, Ordering::Relaxed);
        if ok {
            self.became_eligible();
        }
        true
    }

    /// Records a result seen while proxying: `fall` consecutive failures mark the backend down
    /// at once; a success only breaks the streak (only active checks bring a backend back).
    /// Returns whether the backend was marked down.
    pub fn record_passive(&self, ok: bool, fall: u32) -> bool {
        if ok {
            if self.passive_streak.load(Ordering::Relaxed) != 0 {
                self.passive_streak.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let n = self.passive_streak.fetch_add(1, Ordering::AcqRel) + 1;
        if n < fall.max(1) {
            return false;
        }
        self.passive_streak.store(0, Ordering::Relaxed);
        if self
            .healthy
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.streak.store(0, Ordering::Relaxed);
        true
    }

    /// Forces the health state (used when an address change starts a backend over).
    fn reset(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        self.healthy.store(true, Ordering::Release);
        self.streak.store(0, Ordering::Relaxed);
        self.passive_streak.store(0, Ordering::Relaxed);
    }

    pub fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Key = (Arc<str>, Arc<str>);

/// All live backends, by `(pool, id)`. Locked only when snapshots are built and admin actions look
/// a backend up: never on the request path (requests reach states through their snapshot).
pub struct Registry {
    metrics: Arc<Metrics>,
    inner: Mutex<HashMap<Key, Arc<BackendState>>>,
    /// Every backend id ever seen per pool since start, so a cookie naming a removed backend can
    /// still say where the session came from.
    known: Mutex<HashMap<Arc<str>, Vec<Arc<str>>>>,
    /// Set once the first snapshot is built: backends created after that were added by a
    /// reload, and slow start ramps them up.
    started: std::sync::atomic::AtomicBool,
    /// Circuit-breaker queues and slot counts, by pool (DESIGN.md §13).
    queues: crate::state::queue::Queues,
    /// Requests and 5xx answers of the last seconds, by pool and backend (DESIGN.md §24).
    traffic: crate::state::traffic::Traffic,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            metrics,
            inner: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            started: false.into(),
            queues: crate::state::queue::Queues::new(),
            traffic: crate::state::traffic::Traffic::new(),
        }
    }

    pub fn traffic(&self) -> &crate::state::traffic::Traffic {
        &self.traffic
    }

    pub fn queues(&self) -> &crate::state::queue::Queues {
        &self.queues
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the end of start-up (see `started`).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// The state of `(pool, id)`, created (up, ready) if new. A changed address resets health:
    /// it is a different server now.
    pub fn get_or_create(&self, pool: &str, id: &str, addr: SocketAddr) -> Arc<BackendState> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&(Arc::from(pool), Arc::from(id))) {
            if s.addr() != addr {
                s.reset(addr);
            }
            return s.clone();
        }
        let s = Arc::new(BackendState::new(&self.metrics, pool, id, addr));
        if self.started.load(Ordering::Relaxed) {
            s.became_eligible();
        }
        map.insert((s.pool.clone(), s.id.clone()), s.clone());
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let ids = known.entry(s.pool.clone()).or_default();
        if !ids.iter().any(|k| &**k == id) {
            ids.push(s.id.clone());
        }
        s
    }

    pub fn get(&self, pool: &str, id: &str) -> Option<Arc<BackendState>> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(Arc::from(pool), Arc::from(id))).cloned()
    }

    /// Ids ever seen in `pool` since start.
    pub fn known_ids(&self, pool: &str) -> Vec<Arc<str>> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(pool).cloned().unwrap_or_default()
    }

    /// Drops every backend not in `keep` and deletes its metric series (removed backends' series
    /// disappear after a reload). Returns the removed keys.
    pub fn retain(&self, keep: &[(&str, &str)]) -> Vec<(Arc<str>, Arc<str>)> {
        let keep: std::collections::HashSet<(&str, &str)> = keep.iter().copied().collect();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let removed: Vec<Key> = map
            .keys()
            .filter(|(p, i)| !keep.contains(&(&**p, &**i)))
            .cloned()
            .collect();
        for key in &removed {
            map.remove(key);
            let (p, i) = (&*key.0, &*key.1);
            let m = &self.metrics;
            let _ = m.backend_up.remove_label_values(&[p, i]);
            let _ = m.in_flight.remove_label_values(&[p, i]);
            let _ = m.connect_failures.remove_label_values(&[p, i]);
            let _ = m.hash_overflow.remove_label_values(&[p, i]);
            for s in STATES {
                let _ = m.backend_state.remove_label_values(&[p, i, s]);
            }
            for r in ["success", "failure"] {
                let _ = m.health_checks.remove_label_values(&[p, i, r]);
            }
            for r in ["5xx", "failures"] {
                let _ = m.ejections.remove_label_values(&[p, i, r]);
            }
            m.forget_migrations(p, i);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(Arc::new(Metrics::new()))
    }

    #[test]
    fn failed_connections_are_logged_once_a_second_with_the_rest_counted() {
        let r = reg();
        let s = r.get_or_create("p", "a", "127.0.0.1:1".parse().unwrap());
        // The first is always logged, the next ones in the same second are not.
        assert_eq!(s.log_connect_failure(), Some(0));
        assert_eq!(s.log_connect_failure(), None);
        assert_eq!(s.log_connect_failure(), None);
        // Once the last line is old enough (0: as if never): logged, with the two that were not.
        s.connect_logged_ms.store(0, Ordering::Relaxed);
        assert_eq!(s.log_connect_failure(), Some(2));
        assert_eq!(s.log_connect_failure(), None);
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let r = reg();
        let s = r.get_or_create("p", "a", "127.0.0.1:1".parse().unwrap());
        assert!(s.is_healthy());
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(true, 2, 3)); // breaks the streak
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(false, 2, 3));
        assert!(s.record(false, 2, 3));
        assert!(!s.is_healthy());
        assert_eq!(s.state_name(), "down");
        assert!(!s.record(true, 2, 3));
        assert!(s.record(true, 2, 3));
        assert!(s.is_healthy());
        assert_eq!(s.state_name(), "up");
    }

    #[test]
    fn passive_failures_mark_down_and_successes_break_the_streak() {
        let r = reg();
        let s = r.get_or_create("p", "a", "127.0.0.1:1".parse().unwrap());
        assert!(!s.record_passive(false, 2));
        assert!(!s.record_passive(true, 2));
        assert!(!s.record_passive(false, 2));
        assert!(s.record_passive(false, 2));
        assert!(!s.is_healthy());
        assert!(
            !s.record_passive(true, 2),
            "passive success never brings it back"
        );
        assert!(!s.is_healthy());
    }

    #[test]
    fn admin_states_and_eligibility() {
        let r = reg();
        let s = r.get_or_create("p", "a", "127.0.0.1:1".parse().unwrap());
        assert!(s.is_assignable() && s.is_serving());
        assert!(s.set_admin(Admin::Drain));
        assert!(s.is_serving() && !s.is_assignable());
        assert_eq!(s.state_name(), "drain");
        assert!(s.set_admin(Admin::Maint));
        assert!(!s.is_serving());
        assert_eq!(s.state_name(), "maint");
        assert!(!s.set_admin(Admin::Maint));
    }

    #[test]
    fn state_survives_lookup_and_resets_on_new_address() {
        let r = reg();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s = r.get_or_create("p", "a", a);
        s.set_admin(Admin::Drain);
        for _ in 0..3 {
            s.record(false, 1, 3);
        }
        assert!(!s.is_healthy());
        let again = r.get_or_create("p", "a", a);
        assert!(Arc::ptr_eq(&s, &again));
        assert!(!again.is_healthy());
        let moved = r.get_or_create("p", "a", "127.0.0.1:2".parse().unwrap());
        assert!(moved.is_healthy());
        assert_eq!(moved.admin(), Admin::Drain, "admin state is kept by id");
    }

    #[test]
    fn retain_removes_series() {
        let r = reg();
        r.get_or_create("p", "a", "127.0.0.1:1".parse().unwrap());
        r.get_or_create("p", "b", "127.0.0.1:2".parse().unwrap());
        let removed = r.retain(&[("p", "a")]);
        assert_eq!(removed.len(), 1);
        let text = String::from_utf8(r.metrics().render()).unwrap();
        assert!(text.contains("backend=\"a\""));
        assert!(!text.contains("backend=\"b\""));
        assert_eq!(r.known_ids("p").len(), 2);
    }
}
