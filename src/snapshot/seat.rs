//! Live eligibility over a pool: whether a backend serves its sessions or may take a request
//! without affinity *now* — by the pool's view and, since the view may be an old snapshot's that
//! is no longer rebuilt, by the backend's live state and its membership of the breaker — and
//! [`PoolSeat`], through which the circuit breaker's queue asks a waiting request's pool these
//! questions without knowing snapshots.
//!
//! Owns: those two rules. Must not touch: the queue's order or counts (`state::queue`), or the
//! decision itself (`select`).

use std::sync::Arc;

use super::types::{Pool, Snapshot, View};
use crate::state::queue::{Breaker, Seat};

impl Pool {
    /// Backend `i` serves its sessions: in the view, and — the view may be an old snapshot's, no
    /// longer rebuilt — still in the pool and serving by its live state.
    pub fn serving_live(&self, i: u32) -> bool {
        let view = self.view.load();
        let i = i as usize;
        view.serving[i] && self.live(&view, i)
    }

    /// Backend `i` may take a request without affinity (the round-robin set: assignable
    /// backends, or serving ones when every serving backend drains), by the view and live state.
    pub fn usable_any(&self, view: &View, i: u32) -> bool {
        let i = i as usize;
        let in_set = view.assignable[i] || (view.serving[i] && !view.assignable.iter().any(|a| *a));
        in_set && self.live(view, i)
    }

    /// [`Pool::reselect`] that also skips backends that no longer serve by their live state.
    pub fn live_reselect(&self, view: &View, key: Option<&[u8]>, tried: &[u32]) -> Option<u32> {
        let mut skip = tried.to_vec();
        for _ in 0..=self.backends.len() {
            let i = self.reselect(view, key, &skip)?;
            if self.serving_live(i) {
                return Some(i);
            }
            skip.push(i);
        }
        None
    }

    fn live(&self, view: &View, i: usize) -> bool {
        let member = self.breaker.as_ref().is_none_or(|b| b.is_member(i as u32));
        member && (view.failed_open || self.backends[i].state.is_serving())
    }
}

/// A waiting request's pool in its own snapshot (DESIGN.md §7: a request stays on the snapshot
/// it started with), as the breaker's queue sees it.
pub struct PoolSeat {
    snap: Arc<Snapshot>,
    pool: usize,
}

impl PoolSeat {
    /// The seat of pool `pool` of `snap`; `None` when that pool has no circuit breaker.
    pub fn of(snap: Arc<Snapshot>, pool: usize) -> Option<Arc<dyn Seat>> {
        snap.pools[pool].breaker.as_ref()?;
        Some(Arc::new(PoolSeat { snap, pool }))
    }

    fn pool(&self) -> &Pool {
        &self.snap.pools[self.pool]
    }
}

impl Seat for PoolSeat {
    fn breaker(&self) -> &Breaker {
        self.pool()
            .breaker
            .as_ref()
            .expect("a seat is made only for a pool with a breaker")
    }

    fn usable_any(&self, i: u32) -> bool {
        let pool = self.pool();
        pool.usable_any(&pool.view.load(), i)
    }

    fn serving(&self, i: u32) -> bool {
        self.pool().serving_live(i)
    }
}
