//! The live backend registry: health, admin state (drain/maint), in-flight counts and per-backend
//! metric handles, keyed by `(pool, backend id)`.
//!
//! Owns: everything about a backend that must outlive a configuration snapshot. Old and new
//! snapshots share the same `Arc<BackendState>`, so a reload never resets the health, admin state
//! or counters of an unchanged backend. Must not touch: routing or selection (it only stores
//! state); callers that change a state tell the snapshot store to rebuild the pool's live view.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};

use crate::metrics::{Metrics, STATES};

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
    pub state: [IntGauge; 4],
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
    pub metrics: BackendMetrics,
}

impl BackendState {
    fn new(m: &Metrics, pool: &str, id: &str, addr: SocketAddr) -> BackendState {
        let l = [pool, id];
        let metrics = BackendMetrics {
            up: m.backend_up.with_label_values(&l),
            state: STATES.map(|s| m.backend_state.with_label_values(&[pool, id, s])),
            in_flight: m.in_flight.with_label_values(&l),
            checks_ok: m.health_checks.with_label_values(&[pool, id, "success"]),
            checks_failed: m.health_checks.with_label_values(&[pool, id, "failure"]),
            connect_failures: m.connect_failures.with_label_values(&l),
        };
        let s = BackendState {
            pool: pool.into(),
            id: id.into(),
            healthy: true.into(),
            admin: AtomicU8::new(Admin::Ready as u8),
            streak: AtomicU32::new(0),
            passive_streak: AtomicU32::new(0),
            addr: Mutex::new(addr),
            metrics,
        };
        s.publish();
        s
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// Up and not in maintenance: may keep serving its existing sessions.
    pub fn is_serving(&self) -> bool {
        self.is_healthy() && self.admin() != Admin::Maint
    }

    /// Serving and not draining: may take new sessions.
    pub fn is_assignable(&self) -> bool {
        self.is_healthy() && self.admin() == Admin::Ready
    }

    /// The state name shown in `/status` and `tether_backend_state`.
    pub fn state_name(&self) -> &'static str {
        STATES[self.state_index()]
    }

    fn state_index(&self) -> usize {
        match (self.is_healthy(), self.admin()) {
            (_, Admin::Maint) => 3,
            (false, _) => 1,
            (true, Admin::Drain) => 2,
            (true, Admin::Ready) => 0,
        }
    }

    fn publish(&self) {
        self.metrics.up.set(self.is_healthy() as i64);
        let cur = self.state_index();
        for (i, g) in self.metrics.state.iter().enumerate() {
            g.set((i == cur) as i64);
        }
    }

    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// Sets the admin state; returns whether it changed.
    pub fn set_admin(&self, a: Admin) -> bool {
        let old = self.admin.swap(a as u8, Ordering::AcqRel);
        self.publish();
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
        self.publish();
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
        self.publish();
        true
    }

    /// Forces the health state (used when an address change starts a backend over).
    fn reset(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        self.healthy.store(true, Ordering::Release);
        self.streak.store(0, Ordering::Relaxed);
        self.passive_streak.store(0, Ordering::Relaxed);
        self.publish();
    }

    fn addr(&self) -> SocketAddr {
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
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            metrics,
            inner: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
            for s in STATES {
                let _ = m.backend_state.remove_label_values(&[p, i, s]);
            }
            for r in ["success", "failure"] {
                let _ = m.health_checks.remove_label_values(&[p, i, r]);
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
        assert_eq!(s.metrics.up.get(), 0);
        assert_eq!(s.state_name(), "down");
        assert!(!s.record(true, 2, 3));
        assert!(s.record(true, 2, 3));
        assert!(s.is_healthy());
        assert_eq!(s.metrics.state[0].get(), 1);
        assert_eq!(s.metrics.state[1].get(), 0);
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
