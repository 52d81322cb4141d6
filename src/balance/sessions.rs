//! `recent_sessions` of `/status` (DESIGN.md §16): how many distinct affinity sessions (cookie
//! nonces, or hash keys) a backend served in about the last minute, so an operator sees when a
//! drained backend is safe to stop.
//!
//! Owns the per-backend estimator (pure: it is handed the time). The account stage feeds it
//! (`path::account`). Must not touch routing: it only observes. Counted whatever the backend's admin state.
//!
//! Estimator: seven 10-second buckets (the current one and the six before it, so the window is
//! 60–70 s). Each bucket keeps the first 32 distinct session hashes exactly (an open-addressing
//! table of atomics) and every hash in a HyperLogLog of 128 one-byte registers (≈ 2.7 KiB per
//! backend in all). While no bucket of the window overflowed its table the count is exact (the
//! case that matters when a drained backend winds down); otherwise it is the HyperLogLog
//! estimate (≈ 9 % standard error). Recording is one hash, a probe that usually reads one slot
//! (a CAS only for a session new to the bucket), one relaxed load and, only when the register
//! grows, one `fetch_max`: no lock, no allocation. A bucket is cleared by whoever first writes
//! to it in a new slot (a write racing the clear may be lost, and two first sightings of one
//! session racing each other may count twice: the count is approximate).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

const BUCKETS: usize = 7;
const SLOT_SECS: u64 = 10;
const P: u32 = 7;
const REGS: usize = 1 << P;
/// Session hashes kept exactly per bucket.
const EXACT: usize = 32;

struct Bucket {
    /// The 10-s slot (unix seconds / 10) the registers belong to; `u64::MAX`: never used.
    slot: AtomicU64,
    regs: [AtomicU8; REGS],
    /// Distinct hashes (never 0) by linear probing from `hash % EXACT`; 0 is an empty slot.
    exact: [AtomicU64; EXACT],
    /// A hash found no room in `exact`: only the HyperLogLog counts this bucket.
    overflowed: AtomicBool,
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
                exact: std::array::from_fn(|_| AtomicU64::new(0)),
                overflowed: AtomicBool::new(false),
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
            for e in &b.exact {
                e.store(0, Ordering::Relaxed);
            }
            b.overflowed.store(false, Ordering::Relaxed);
        }
        b.remember(hash.max(1));
        let idx = (hash >> (64 - P)) as usize;
        // Rank of the remaining bits: leading zeros + 1, capped by a sentinel bit.
        let rank = ((hash << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        let reg = &b.regs[idx];
        if reg.load(Ordering::Relaxed) < rank {
            reg.fetch_max(rank, Ordering::Relaxed);
        }
    }

    /// Distinct sessions over the buckets of the last 60–70 s before `now`: exact while every
    /// bucket's table held its sessions, else estimated.
    pub fn estimate(&self, now: u64) -> u64 {
        let slot = now / SLOT_SECS;
        let mut merged = [0u8; REGS];
        let mut seen: Vec<u64> = Vec::new();
        let mut exact = true;
        for b in &self.buckets {
            let s = b.slot.load(Ordering::Acquire);
            if s == u64::MAX || s > slot || slot - s >= BUCKETS as u64 {
                continue;
            }
            for (m, r) in merged.iter_mut().zip(&b.regs) {
                *m = (*m).max(r.load(Ordering::Relaxed));
            }
            exact &= !b.overflowed.load(Ordering::Acquire);
            seen.extend(
                b.exact
                    .iter()
                    .map(|e| e.load(Ordering::Relaxed))
                    .filter(|h| *h != 0),
            );
        }
        if exact {
            seen.sort_unstable();
            seen.dedup();
            return seen.len() as u64;
        }
        estimate(&merged)
    }
}

impl Bucket {
    /// Adds `hash` (not 0) to the exact table, or marks the bucket overflowed.
    fn remember(&self, hash: u64) {
        let start = (hash % EXACT as u64) as usize;
        for i in 0..EXACT {
            let e = &self.exact[(start + i) % EXACT];
            let cur = e.load(Ordering::Relaxed);
            if cur == hash {
                return;
            }
            if cur == 0 {
                match e.compare_exchange(0, hash, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(now) if now == hash => return,
                    Err(_) => {}
                }
            }
        }
        if !self.overflowed.load(Ordering::Relaxed) {
            self.overflowed.store(true, Ordering::Release);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_exact_and_repeats_count_once() {
        let s = RecentSessions::default();
        let now = 1_000_000;
        assert_eq!(s.estimate(now), 0);
        for i in 0..20u32 {
            for _ in 0..3 {
                s.record(session_hash(&i.to_le_bytes()), now);
            }
        }
        assert_eq!(s.estimate(now), 20);
        // Spread over several buckets of the window, a session still counts once.
        s.record(session_hash(&3u32.to_le_bytes()), now + 20);
        s.record(session_hash(b"another"), now + 20);
        assert_eq!(s.estimate(now + 20), 21);
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
