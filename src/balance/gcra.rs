//! GCRA, the generic cell rate algorithm (DESIGN.md §14): a token bucket of `burst` tokens
//! refilled at `rate` per `per`, kept as one number per key — the theoretical arrival time (TAT)
//! of the next request once the bucket is full again.
//!
//! Owns: the arithmetic. Pure: no clock (the caller passes `now`), no storage, no IO. The Redis
//! store runs the same rule server-side (see `state/ratelimit/redis.rs`'s script); the unit tests here pin it.
//!
//! With emission interval T = per / rate and window W = burst × T: a request at `now` against a
//! stored `tat` is allowed when `max(tat, now) + T - now <= W`, and the new TAT is
//! `max(tat, now) + T`; else it must wait `max(tat, now) + T - now - W`. A key with no stored TAT
//! (or a TAT in the past) has a full bucket, so an entry is worth keeping only while `tat > now`.

use std::time::Duration;

/// One limit's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// T: nanoseconds per token (at least 1).
    interval: u64,
    /// W = burst × T.
    window: u64,
    burst: u32,
}

impl Gcra {
    /// `rate` tokens per `per`, at most `burst` at once. `rate` and `burst` are at least 1 and
    /// `per` is positive (validated); out-of-range values are clamped, never a panic.
    pub fn new(rate: u32, per: Duration, burst: u32) -> Gcra {
        let rate = u128::from(rate.max(1));
        let per = per.as_nanos().max(1);
        // Rounded to the nearest nanosecond: 3 per second is 333,333,333 ns.
        let interval = ((per + rate / 2) / rate).clamp(1, u128::from(u64::MAX)) as u64;
        let burst = burst.max(1);
        Gcra {
            interval,
            window: interval.saturating_mul(u64::from(burst)),
            burst,
        }
    }

    /// The bucket size (the `RateLimit-Limit` header).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// T in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.interval
    }

    /// One request at `now` against the stored `tat` (`None`: no entry, a full bucket):
    /// `Ok(new_tat)` when allowed, `Err(wait)` (nanoseconds until one would be) when not.
    pub fn check(&self, tat: Option<u64>, now: u64) -> Result<u64, u64> {
        let base = tat.map_or(now, |t| t.max(now));
        let new_tat = base.saturating_add(self.interval);
        let ahead = new_tat - now;
        if ahead <= self.window {
            Ok(new_tat)
        } else {
            Err(ahead - self.window)
        }
    }
}

/// Whole seconds, rounded up, at least 1: `Retry-After` and `RateLimit-Reset` of a refusal.
pub fn retry_after_secs(wait_nanos: u64) -> u64 {
    wait_nanos.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Runs requests at the given times (ms) and returns which were allowed.
    fn run(g: &Gcra, times_ms: &[u64]) -> Vec<bool> {
        let mut tat = None;
        times_ms
            .iter()
            .map(|t| match g.check(tat, t * MS) {
                Ok(n) => {
                    tat = Some(n);
                    true
                }
                Err(_) => false,
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_allows_exactly_burst_then_refills_at_rate() {
        // burst 3, 2 per second: three at once, the fourth waits 500 ms.
        let g = Gcra::new(2, Duration::from_secs(1), 3);
        assert_eq!(run(&g, &[0, 0, 0, 0]), [true, true, true, false]);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(g.check(tat, 0).unwrap());
        }
        assert_eq!(g.check(tat, 0), Err(500 * MS));
        assert_eq!(g.check(tat, 499 * MS), Err(MS));
        // After 500 ms exactly one more.
        let t = g.check(tat, 500 * MS).expect("one token back");
        assert_eq!(g.check(Some(t), 500 * MS), Err(500 * MS));
        // After a long idle time the bucket is full again, never fuller.
        assert_eq!(
            run(&g, &[0, 0, 0, 10_000, 10_000, 10_000, 10_000]),
            [true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn a_steady_rate_is_sustained() {
        // 10 per second, burst 1: one every 100 ms, never two within 100 ms.
        let g = Gcra::new(10, Duration::from_secs(1), 1);
        assert_eq!(run(&g, &[0, 50, 100, 150, 200, 299, 300]), {
            [true, false, true, false, true, false, true]
        });
    }

    #[test]
    fn intervals_round_and_clamp() {
        assert_eq!(
            Gcra::new(3, Duration::from_secs(1), 3).interval_nanos(),
            333_333_333
        );
        assert_eq!(
            Gcra::new(u32::MAX, Duration::from_nanos(1), 1).interval_nanos(),
            1
        );
        let huge = Gcra::new(1, Duration::from_secs(u64::MAX), u32::MAX);
        assert!(huge.check(None, 0).is_ok());
        assert_eq!(Gcra::new(0, Duration::ZERO, 0).burst(), 1);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(500 * MS), 1);
        assert_eq!(retry_after_secs(1000 * MS), 1);
        assert_eq!(retry_after_secs(1001 * MS), 2);
        assert_eq!(retry_after_secs(0), 1);
    }
}
