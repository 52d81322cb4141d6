//! The local bucket store: one limit's TATs (see `balance/gcra.rs`) in this process, by key.
//!
//! Owns: the map of key → TAT and its memory bound. Must not touch: keys' meaning (the limit
//! stage extracts them), metrics, IO.
//!
//! Layout: 64 shards, each a `Mutex<HashMap<u64, u64>>` on its own cache lines, chosen by the
//! key's hash; a request takes one uncontended lock for a few nanoseconds (two requests contend
//! only when their keys land in the same shard at the same instant). The map stores the key's
//! 64-bit SipHash (randomly seeded per limit, so clients cannot aim collisions), not the key:
//! nothing is allocated per request, and an entry is 16 bytes whatever the key's length. Two
//! keys sharing a hash would share a bucket; at 2^-64 per pair that is accepted.
//!
//! Memory bound: an entry matters only while its TAT is in the future (afterwards the bucket is
//! full, exactly as if there were no entry), i.e. for at most `burst × per / rate` after the
//! key's last request. A shard sweeps out such idle entries whenever it has doubled since its
//! last sweep (amortized O(1) per insert, never on a timer), so it holds at most twice the keys
//! active within one window (and at least [`MIN_SWEEP`] before it bothers). As a hard ceiling a
//! shard never holds more than [`SHARD_CAP`] entries: when a sweep leaves it seven-eighths full
//! of live entries, arbitrary ones are dropped down to three quarters (those keys start again
//! with a full bucket: a flood of more than 64 × `SHARD_CAP` live keys can only loosen one
//! limit, never tighten it).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use crate::balance::gcra::Gcra;

const SHARDS: usize = 64;
/// A shard is not swept before it has this many entries.
pub const MIN_SWEEP: usize = 1024;
/// The most entries one shard holds (64 shards: about 4 M keys, ≈ 100 MiB, per limit).
pub const SHARD_CAP: usize = 1 << 16;

/// A key's hash, for [`Local::check`]: computed once per request, also used by the fallback
/// bucket of a Redis limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(u64);

pub struct Local {
    shards: Box<[Shard]>,
    seed: RandomState,
}

/// A shard on its own cache lines (no false sharing between neighbours' locks).
#[repr(align(128))]
struct Shard(Mutex<Inner>);

struct Inner {
    tats: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

impl Local {
    pub fn new() -> Local {
        Local {
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(Mutex::new(Inner {
                        tats: HashMap::default(),
                        sweep_at: MIN_SWEEP,
                    }))
                })
                .collect(),
            seed: RandomState::new(),
        }
    }

    /// The hash of `key` under this store's seed.
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        KeyHash(self.seed.hash_one(key))
    }

    /// One request of key `k` at `now` (nanoseconds on the caller's monotonic clock):
    /// `Ok(())` when allowed (the token is taken), `Err(wait)` in nanoseconds when not.
    pub fn check(&self, gcra: &Gcra, k: KeyHash, now: u64) -> Result<(), u64> {
        // The top bits pick the shard; the map's own hashing uses the low ones.
        let shard = &self.shards[(k.0 >> 58) as usize % SHARDS];
        let mut inner = shard.0.lock().unwrap_or_else(|e| e.into_inner());
        match inner.tats.get_mut(&k.0) {
            Some(tat) => {
                *tat = gcra.check(Some(*tat), now)?;
                Ok(())
            }
            None => {
                let tat = gcra.check(None, now)?;
                inner.make_room(now);
                inner.tats.insert(k.0, tat);
                Ok(())
            }
        }
    }

    /// Entries held (all shards), for tests and `/status`-like introspection.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

impl Inner {
    /// Before an insert: sweeps idle entries when the shard has doubled since the last sweep,
    /// and keeps it under [`SHARD_CAP`].
    fn make_room(&mut self, now: u64) {
        if self.tats.len() < self.sweep_at {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.len() >= SHARD_CAP / 8 * 7 {
            // Full of live entries: drop arbitrary ones down to three quarters, so the next
            // sweep is a quarter of the cap away (amortized, even under a flood of keys).
            let excess = self.tats.len() - SHARD_CAP / 4 * 3;
            let drop: Vec<u64> = self.tats.keys().take(excess).copied().collect();
            for k in drop {
                self.tats.remove(&k);
            }
        }
        self.sweep_at = (self.tats.len() * 2).clamp(MIN_SWEEP, SHARD_CAP);
    }
}

/// The map's keys are already SipHash outputs: hashing them again would only cost time.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; kept correct for any input all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn keys_have_their_own_buckets() {
        let l = Local::new();
        let g = Gcra::new(2, Duration::from_secs(1), 3);
        let (a, b) = (l.hash(b"alice"), l.hash(b"bob"));
        for _ in 0..3 {
            assert!(l.check(&g, a, 0).is_ok());
        }
        assert_eq!(l.check(&g, a, 0), Err(SEC / 2));
        assert!(l.check(&g, b, 0).is_ok(), "bob is not limited by alice");
        assert!(l.check(&g, a, SEC / 2).is_ok());
        assert!(l.check(&g, a, SEC / 2).is_err());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn idle_entries_are_swept_and_memory_stays_bounded() {
        let l = Local::new();
        // One token a second, burst 1: an entry is live for one second after its request.
        let g = Gcra::new(1, Duration::from_secs(1), 1);
        // 200,000 distinct keys, each seen once, 10,000 per (simulated) second.
        for i in 0u64..200_000 {
            let now = (i / 10_000) * SEC;
            assert!(l.check(&g, l.hash(&i.to_le_bytes()), now).is_ok());
        }
        // Live at the end: only keys of the last second (10,000); each shard holds at most twice
        // its live keys or MIN_SWEEP, whichever is larger.
        let held = l.len();
        assert!(
            held <= SHARDS * MIN_SWEEP.max(2 * 10_000 / SHARDS + 64),
            "{held} entries held"
        );
        assert!(held >= 10_000, "live entries are kept: {held}");
        // A key that was swept starts with a full bucket (as it would have anyway).
        assert!(l.check(&g, l.hash(&0u64.to_le_bytes()), 30 * SEC).is_ok());
    }

    #[test]
    fn a_shard_never_exceeds_its_cap() {
        let l = Local::new();
        // Entries live for ~11 days: nothing is idle, the cap alone bounds the shard.
        let g = Gcra::new(1, Duration::from_secs(1_000_000), 1);
        let mut inner = Inner {
            tats: HashMap::default(),
            sweep_at: MIN_SWEEP,
        };
        for i in 0..(SHARD_CAP as u64 + 10) {
            let tat = g.check(None, 0).unwrap();
            inner.make_room(0);
            inner.tats.insert(l.hash(&i.to_le_bytes()).0, tat);
            assert!(inner.tats.len() <= SHARD_CAP);
        }
        assert!(inner.tats.len() >= SHARD_CAP / 4 * 3);
    }
}
