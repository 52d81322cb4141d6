//! Drain with a deadline (DESIGN.md §16): `POST …/drain?deadline=300s` puts the backend in maint
//! when the time is up, so its remaining sessions migrate then.
//!
//! Owns: when a drain started, its deadline, and the timer that ends it. The clock lives in the
//! backend's live state (so it survives a reload, like the admin state, and is reset on
//! restart); `ready` or `maint` before the deadline cancels it (the timer finds its epoch
//! gone). Must not touch selection: ending a drain is an ordinary admin state change followed by
//! a view rebuild.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{Admin, BackendState};
use crate::snapshot::Store;

/// Drain bookkeeping of one backend. Times are unix milliseconds, 0 for none.
#[derive(Default)]
pub struct DrainClock {
    started_ms: AtomicU64,
    deadline_ms: AtomicU64,
    /// Bumped by every arm and cancel: a timer fires only for the epoch it was armed with.
    epoch: AtomicU64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .max(1)
}

fn time_of(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

impl DrainClock {
    /// Follows an admin state change (called by `BackendState::set_admin`): entering drain
    /// notes when; leaving it (ready or maint) clears the drain and cancels its deadline.
    pub fn on_admin(&self, old: Admin, new: Admin) {
        if new == Admin::Drain {
            if old != Admin::Drain {
                self.started_ms
                    .store(unix_ms(SystemTime::now()), Ordering::Release);
            }
        } else {
            self.started_ms.store(0, Ordering::Release);
            self.deadline_ms.store(0, Ordering::Release);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Sets the deadline (replacing an earlier one); returns the epoch to fire with.
    pub fn arm(&self, deadline: SystemTime) -> u64 {
        self.deadline_ms.store(unix_ms(deadline), Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether the deadline armed as `epoch` still stands.
    pub fn armed(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch && self.deadline_ms.load(Ordering::Acquire) != 0
    }

    pub fn started(&self) -> Option<SystemTime> {
        time_of(self.started_ms.load(Ordering::Acquire))
    }

    pub fn deadline(&self) -> Option<SystemTime> {
        time_of(self.deadline_ms.load(Ordering::Acquire))
    }
}

/// RFC 3339 (UTC, whole seconds) or JSON null.
pub fn rfc3339(t: Option<SystemTime>) -> serde_json::Value {
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string().into(),
        None => serde_json::Value::Null,
    }
}

/// Drains `state` now with a deadline `after` from now: at the deadline, unless cancelled, the
/// backend goes to maint and `pool`'s view is rebuilt. Call on a tokio runtime that lives as long
/// as the process (the admin service's).
pub fn drain_until(store: &Arc<Store>, pool: &str, state: &Arc<BackendState>, after: Duration) {
    state.set_admin(Admin::Drain);
    let epoch = state.drain.arm(SystemTime::now() + after);
    let (store, pool, state) = (Arc::downgrade(store), Arc::<str>::from(pool), state.clone());
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if !state.drain.armed(epoch) || state.admin() != Admin::Drain {
            return;
        }
        state.set_admin(Admin::Maint);
        if let Some(store) = store.upgrade() {
            store.refresh_pool(&pool);
        }
        tracing::info!(pool = %pool, backend = %state.id, "drain deadline reached: admin state set to maint");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_or_maint_cancels_and_drain_notes_its_start() {
        let c = DrainClock::default();
        assert_eq!(c.started(), None);
        c.on_admin(Admin::Ready, Admin::Drain);
        let started = c.started().expect("started");
        let e = c.arm(SystemTime::now() + Duration::from_secs(300));
        assert!(c.armed(e));
        assert!(c.deadline().is_some());
        c.on_admin(Admin::Drain, Admin::Drain);
        assert_eq!(
            c.started(),
            Some(started),
            "a repeated drain keeps its start"
        );
        assert!(c.armed(e), "and its deadline");
        c.on_admin(Admin::Drain, Admin::Ready);
        assert!(!c.armed(e));
        assert_eq!((c.started(), c.deadline()), (None, None));
        c.on_admin(Admin::Ready, Admin::Drain);
        let e2 = c.arm(SystemTime::now());
        c.on_admin(Admin::Drain, Admin::Maint);
        assert!(!c.armed(e2));
        assert!(rfc3339(Some(UNIX_EPOCH)).as_str() == Some("1970-01-01T00:00:00Z"));
    }
}
