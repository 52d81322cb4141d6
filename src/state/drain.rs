//! A backend's drain clock (DESIGN.md §16): when its drain started and the deadline an operator
//! gave it, in the backend's live state so both survive a reload (and are reset on restart).
//!
//! Owns: the times and the epoch that lets a cancelled deadline's timer find itself stale. Must
//! not touch: admin state itself (`backend` calls [`DrainClock::on_admin`] on each change) or the
//! timer (`control::drain`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Drain bookkeeping of one backend. Times are unix milliseconds, 0 for none.
#[derive(Default)]
pub struct DrainClock {
    started_ms: AtomicU64,
    deadline_ms: AtomicU64,
    /// Bumped by every arm and cancel: a timer fires only for the epoch it was armed with.
    epoch: AtomicU64,
    /// `drain?handoff=true` (DESIGN.md §25): the backend's sessions move at their next request
    /// while it stays reachable; cleared when the drain ends.
    handoff: AtomicBool,
    /// Sessions it had when the hand-off started (the recent-sessions estimate), and its
    /// hand-off count then: `/status`'s `still_pinned` is what is left of the first.
    pinned_at_start: AtomicU64,
    handed_off_at_start: AtomicU64,
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
    pub fn on_admin(&self, was_draining: bool, draining: bool) {
        if draining {
            if !was_draining {
                self.started_ms
                    .store(unix_ms(SystemTime::now()), Ordering::Release);
            }
        } else {
            self.started_ms.store(0, Ordering::Release);
            self.deadline_ms.store(0, Ordering::Release);
            self.handoff.store(false, Ordering::Release);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Starts handing the sessions over (`drain?handoff=true`): `pinned` sessions by the
    /// recent-sessions estimate, `handed_off` the backend's hand-off count so far.
    pub fn start_handoff(&self, pinned: u64, handed_off: u64) {
        self.pinned_at_start.store(pinned, Ordering::Relaxed);
        self.handed_off_at_start
            .store(handed_off, Ordering::Relaxed);
        self.handoff.store(true, Ordering::Release);
    }

    /// Whether this drain hands its sessions over.
    pub fn handoff(&self) -> bool {
        self.handoff.load(Ordering::Acquire)
    }

    /// Sessions not handed over yet, of those it had when the hand-off started (an estimate).
    pub fn still_pinned(&self, handed_off: u64) -> u64 {
        let moved = handed_off.saturating_sub(self.handed_off_at_start.load(Ordering::Relaxed));
        self.pinned_at_start
            .load(Ordering::Relaxed)
            .saturating_sub(moved)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_or_maint_cancels_and_drain_notes_its_start() {
        let c = DrainClock::default();
        assert_eq!(c.started(), None);
        c.on_admin(false, true);
        let started = c.started().expect("started");
        let e = c.arm(SystemTime::now() + Duration::from_secs(300));
        assert!(c.armed(e));
        assert!(c.deadline().is_some());
        c.on_admin(true, true);
        assert_eq!(
            c.started(),
            Some(started),
            "a repeated drain keeps its start"
        );
        assert!(c.armed(e), "and its deadline");
        c.on_admin(true, false);
        assert!(!c.armed(e));
        assert_eq!((c.started(), c.deadline()), (None, None));
        c.on_admin(false, true);
        let e2 = c.arm(SystemTime::now());
        c.on_admin(true, false);
        assert!(!c.armed(e2));
    }
}
