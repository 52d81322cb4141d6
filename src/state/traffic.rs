//! Recent traffic (DESIGN.md §24): requests and `5xx` answers per pool and per backend over the
//! last 10 seconds, for `/status` and the status page.
//!
//! Owns: one small ring of per-second counts per `(pool, backend)` (backend `""`: the whole pool,
//! answers given without a backend included). The rings are fed once a second by a sampler on
//! the control runtime (`control::traffic`) with the cumulative `tether_requests_total` counts,
//! and keep the differences: the request path counts nothing more than it already did. Keyed by
//! names, so a reload keeps an unchanged backend's history. Must not touch: the metrics
//! themselves, or anything on the request path.

use std::collections::HashMap;
use std::sync::Mutex;

/// Seconds the window covers.
pub const WINDOW_SECS: usize = 10;

/// Requests and `5xx` answers seen in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub requests: u64,
    pub errors_5xx: u64,
    /// Seconds of history the counts cover (fewer than [`WINDOW_SECS`] just after start).
    pub seconds: u32,
}

impl Window {
    /// Requests per second over the seconds covered, to one decimal (0 with no history).
    pub fn per_second(&self) -> f64 {
        if self.seconds == 0 {
            return 0.0;
        }
        round1(self.requests as f64 / f64::from(self.seconds))
    }

    /// The share of `5xx` answers in percent, to one decimal; `None` without requests.
    pub fn percent_5xx(&self) -> Option<f64> {
        (self.requests > 0).then(|| round1(self.errors_5xx as f64 * 100.0 / self.requests as f64))
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One ring: the last cumulative counts and the per-second differences.
#[derive(Default)]
struct Ring {
    last: Option<(u64, u64)>,
    slots: [(u64, u64); WINDOW_SECS],
    next: usize,
    filled: usize,
    /// Seen in the latest sample (rings of removed backends are dropped at the next one).
    seen: bool,
}

impl Ring {
    fn push(&mut self, total: u64, errors: u64) {
        if let Some((t0, e0)) = self.last {
            // A counter series removed by a reload (its route left) makes a sum shrink: that
            // second counts what is left, never a negative number.
            self.slots[self.next] = (total.saturating_sub(t0), errors.saturating_sub(e0));
            self.next = (self.next + 1) % WINDOW_SECS;
            self.filled = (self.filled + 1).min(WINDOW_SECS);
        }
        self.last = Some((total, errors));
        self.seen = true;
    }

    fn window(&self) -> Window {
        // Slots not yet filled are still zero: summing all of them is the same.
        let (requests, errors_5xx) = self
            .slots
            .iter()
            .fold((0, 0), |(r, e), s| (r + s.0, e + s.1));
        Window {
            requests,
            errors_5xx,
            seconds: self.filled as u32,
        }
    }
}

/// The rings of every pool and backend.
#[derive(Default)]
pub struct Traffic {
    rings: Mutex<HashMap<(String, String), Ring>>,
}

impl Traffic {
    pub fn new() -> Traffic {
        Traffic::default()
    }

    /// Records one second: `samples` are `(pool, backend or "", cumulative requests, cumulative
    /// 5xx)` for everything that exists now; rings not named are dropped.
    pub fn tick<'a>(&self, samples: impl IntoIterator<Item = (&'a str, &'a str, u64, u64)>) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        for ring in rings.values_mut() {
            ring.seen = false;
        }
        for (pool, backend, total, errors) in samples {
            match rings.get_mut(&(pool.to_owned(), backend.to_owned())) {
                Some(r) => r.push(total, errors),
                None => {
                    let mut r = Ring::default();
                    r.push(total, errors);
                    rings.insert((pool.to_owned(), backend.to_owned()), r);
                }
            }
        }
        rings.retain(|_, r| r.seen);
    }

    /// The window of `pool`'s `backend` (`""`: the pool); empty before its first two samples.
    pub fn window(&self, pool: &str, backend: &str) -> Window {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings
            .get(&(pool.to_owned(), backend.to_owned()))
            .map(Ring::window)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_differences_of_the_last_ten_seconds() {
        let t = Traffic::new();
        t.tick([("p", "a", 100, 1)]);
        assert_eq!(
            t.window("p", "a"),
            Window::default(),
            "one sample is no history"
        );
        t.tick([("p", "a", 130, 4)]);
        assert_eq!(
            t.window("p", "a"),
            Window {
                requests: 30,
                errors_5xx: 3,
                seconds: 1
            }
        );
        assert_eq!(t.window("p", "a").per_second(), 30.0);
        assert_eq!(t.window("p", "a").percent_5xx(), Some(10.0));
        // Eleven more seconds of 10 requests each, 1 of them 5xx: only the last ten count.
        let (mut total, mut errors) = (130, 4);
        for _ in 0..11 {
            total += 10;
            errors += 1;
            t.tick([("p", "a", total, errors)]);
        }
        let w = t.window("p", "a");
        assert_eq!((w.requests, w.errors_5xx, w.seconds), (100, 10, 10));
        assert_eq!(w.per_second(), 10.0);
        assert_eq!(w.percent_5xx(), Some(10.0));
    }

    #[test]
    fn a_shrinking_sum_counts_zero_and_removed_rings_go() {
        let t = Traffic::new();
        t.tick([("p", "a", 50, 0), ("p", "", 60, 5)]);
        t.tick([("p", "a", 20, 0), ("p", "", 61, 5)]);
        assert_eq!(t.window("p", "a").requests, 0);
        assert_eq!(t.window("p", "").requests, 1);
        assert_eq!(t.window("p", "").percent_5xx(), Some(0.0));
        t.tick([("p", "", 70, 8)]);
        assert_eq!(t.window("p", "a"), Window::default(), "a is gone");
        let w = t.window("p", "");
        assert_eq!((w.requests, w.errors_5xx, w.seconds), (10, 3, 2));
        assert_eq!(w.per_second(), 5.0);
        assert_eq!(w.percent_5xx(), Some(30.0));
    }

    #[test]
    fn no_requests_no_share() {
        assert_eq!(Window::default().percent_5xx(), None);
        assert_eq!(Window::default().per_second(), 0.0);
        let w = Window {
            requests: 2,
            errors_5xx: 1,
            seconds: 3,
        };
        assert_eq!(w.per_second(), 0.7);
        assert_eq!(w.percent_5xx(), Some(50.0));
    }
}
