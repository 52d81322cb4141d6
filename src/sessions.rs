//! `recent_sessions` of `/status` (DESIGN.md §16): how many distinct affinity sessions (cookie
//! nonces, or hash keys) a backend served in about the last minute, so an operator sees when a
//! drained backend is safe to stop.
//!
//! Owns the per-backend estimator and the account-stage hook that feeds it. Must not touch
//! routing: it only observes. Counted whatever the backend's admin state.
//!
//! Estimator: seven 10-second buckets (the current one and the six before it, so the window is
//! 60–70 s), each a HyperLogLog of 128 one-byte registers (896 bytes per backend). Recording is
//! one hash, one relaxed load and, only when the register grows, one `fetch_max`: no lock, no
//! allocation. A bucket is cleared by whoever first writes to it in a new slot (a write racing
//! the clear may be lost: the count is approximate anyway). Estimates use HyperLogLog with
//! linear counting for small counts (close to exact below a few dozen, ≈ 9 % standard error
//! above).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use pingora::http::RequestHeader;

use crate::backend::Exchanged;
use crate::exchange::Upstream;
use crate::head::{hash_key, ClientIp};
use crate::snapshot::Pool;

const BUCKETS: usize = 7;
const SLOT_SECS: u64 = 10;
const P: u32 = 7;
const REGS: usize = 1 << P;

struct Bucket {
    /// The 10-s slot (unix seconds / 10) the registers belong to; `u64::MAX`: never used.
    slot: AtomicU64,
    regs: [AtomicU8; REGS],
}

/// Distinct sessions seen by one backend, by 10-s bucket.
pub struct RecentSessions {
    buckets: [Bucket; BUCKETS],
}

impl Default for RecentSessions {
    fn default() -> Self {
        RecentSessions {
            buckets: std::array::from_fn(|_| Bucket {
                slot: AtomicU64::new(u64::MAX),
                regs: std::array::from_fn(|_| AtomicU8::new(0)),
            }),
        }
    }
}

/// The 64-bit hash of a session key (deterministic SipHash; only this process compares them).
pub fn session_hash(key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl RecentSessions {
    /// Notes session `hash` at `now` (unix seconds).
    pub fn record(&self, hash: u64, now: u64) {
        let slot = now / SLOT_SECS;
        let b = &self.buckets[(slot % BUCKETS as u64) as usize];
        let cur = b.slot.load(Ordering::Acquire);
        if cur != slot
            && b.slot
                .compare_exchange(cur, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for r in &b.regs {
                r.store(0, Ordering::Relaxed);
            }
        }
        let idx = (hash >> (64 - P)) as usize;
        // Rank of the remaining bits: leading zeros + 1, capped by a sentinel bit.
        let rank = ((hash << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        let reg = &b.regs[idx];
        if reg.load(Ordering::Relaxed) < rank {
            reg.fetch_max(rank, Ordering::Relaxed);
        }
    }

    /// Estimated distinct sessions over the buckets of the last 60–70 s before `now`.
    pub fn estimate(&self, now: u64) -> u64 {
        let slot = now / SLOT_SECS;
        let mut merged = [0u8; REGS];
        for b in &self.buckets {
            let s = b.slot.load(Ordering::Acquire);
            if s == u64::MAX || s > slot || slot - s >= BUCKETS as u64 {
                continue;
            }
            for (m, r) in merged.iter_mut().zip(&b.regs) {
                *m = (*m).max(r.load(Ordering::Relaxed));
            }
        }
        estimate(&merged)
    }
}

fn estimate(regs: &[u8; REGS]) -> u64 {
    let m = REGS as f64;
    let zeros = regs.iter().filter(|r| **r == 0).count();
    if zeros == REGS {
        return 0;
    }
    let sum: f64 = regs.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let e = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    e.round() as u64
}

/// Account-stage hook: notes the session of a request a backend served — its cookie nonce, or
/// for hash pools its key. Requests that never got an answer from a backend are not counted.
pub fn served(
    pool: &Pool,
    u: &Upstream,
    req: &RequestHeader,
    client: ClientIp,
    exchanged: Option<Exchanged>,
) {
    if exchanged == Some(Exchanged::Failed) || u.sent_at.is_none() {
        return;
    }
    let hash = match hash_key(pool, req, client) {
        Some(k) => session_hash(k.as_bytes()),
        None => match &u.pick.session {
            Some(nonce) => session_hash(nonce),
            None => return,
        },
    };
    let now = crate::pick::unix_now();
    pool.backends[u.pick.backend as usize]
        .state
        .sessions
        .record(hash, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_close_to_exact_and_repeats_count_once() {
        let s = RecentSessions::default();
        let now = 1_000_000;
        assert_eq!(s.estimate(now), 0);
        for i in 0..20u32 {
            for _ in 0..3 {
                s.record(session_hash(&i.to_le_bytes()), now);
            }
        }
        let e = s.estimate(now);
        assert!((18..=22).contains(&e), "estimate {e}");
    }

    #[test]
    fn large_counts_are_within_a_few_standard_errors() {
        let s = RecentSessions::default();
        let now = 5_000_000;
        for i in 0..5000u32 {
            s.record(
                session_hash(format!("user-{i}").as_bytes()),
                now + u64::from(i % 30),
            );
        }
        let e = s.estimate(now + 30) as f64;
        assert!((e - 5000.0).abs() / 5000.0 < 0.3, "estimate {e}");
    }

    #[test]
    fn sessions_older_than_the_window_are_forgotten() {
        let s = RecentSessions::default();
        let t0 = 2_000_000;
        for i in 0..10u32 {
            s.record(session_hash(&i.to_le_bytes()), t0);
        }
        assert_eq!(s.estimate(t0 + 59), 10);
        assert_eq!(s.estimate(t0 + 71), 0, "seven buckets later");
        // A bucket reused for a new slot starts empty.
        s.record(session_hash(b"fresh"), t0 + 70);
        assert_eq!(s.estimate(t0 + 70), 1);
    }
}
