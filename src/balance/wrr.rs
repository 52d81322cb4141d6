//! Smooth weighted round-robin (DESIGN §4, policy `round_robin`), lock-free.
//!
//! Owns the pick order only. nginx's smooth WRR keeps mutable per-backend state; instead we
//! precompute one full period of nginx's sequence when the eligible set changes, so a pick is
//! `seq[counter % len]` where the counter is one atomic increment owned by the caller. It must not
//! touch backend state, counters or clocks: no IO, no locks, no allocation on `pick`.

use std::fmt;

/// One precomputed period of nginx's smooth weighted round-robin.
#[derive(Clone, Default)]
pub struct Wrr {
    seq: Box<[u32]>,
}

/// Backends sharing one weight. Under nginx's rule their current weights only ever differ by
/// whole multiples of the total, and the one picked least often wins (ties: listed first), so
/// they take turns in listing order. Simulating groups instead of backends makes a build cost
/// O(len × distinct weights) rather than O(len × backends): ≤ 256 weights, however many backends.
struct Group {
    weight: i64,
    /// (listing position, backend index), in listing order.
    members: Vec<(usize, u32)>,
    /// Whose turn it is within the group.
    next: usize,
    /// nginx's current weight of `members[next..]` (those picked one time fewer than the rest).
    current: i64,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Wrr {
    /// members: (index, weight 1..=256). The sequence is nginx's smooth WRR over the weights
    /// divided by their gcd, of length sum(weight / gcd); ties pick the member listed first.
    /// Members of weight 0 are left out.
    pub fn build(members: impl IntoIterator<Item = (u32, u32)>) -> Wrr {
        let members: Vec<(u32, u32)> = members.into_iter().filter(|&(_, w)| w > 0).collect();
        let divisor = members.iter().fold(0, |g, &(_, w)| gcd(g, w));
        if divisor == 0 {
            return Wrr::default();
        }

        let mut groups: Vec<Group> = Vec::new();
        let mut total: i64 = 0;
        for (position, &(idx, weight)) in members.iter().enumerate() {
            let weight = i64::from(weight / divisor);
            total += weight;
            match groups.iter_mut().find(|g| g.weight == weight) {
                Some(group) => group.members.push((position, idx)),
                None => groups.push(Group {
                    weight,
                    members: vec![(position, idx)],
                    next: 0,
                    current: 0,
                }),
            }
        }

        // total ≤ 256 × members, so it fits a usize.
        let len = total as usize;
        let mut seq = Vec::with_capacity(len);
        for _ in 0..len {
            // nginx: every current += weight; pick the greatest current (first listed on ties);
            // the picked one's current -= total.
            for group in &mut groups {
                group.current += group.weight;
            }
            let mut best = 0;
            for (i, g) in groups.iter().enumerate().skip(1) {
                let b = &groups[best];
                if g.current > b.current
                    || (g.current == b.current && g.members[g.next].0 < b.members[b.next].0)
                {
                    best = i;
                }
            }
            let group = &mut groups[best];
            seq.push(group.members[group.next].1);
            group.next += 1;
            if group.next == group.members.len() {
                // Every member of the group has now been picked once more.
                group.next = 0;
                group.current -= total;
            }
        }
        Wrr {
            seq: seq.into_boxed_slice(),
        }
    }

    /// The backend index for the `counter`-th pick: `seq[counter % len]`; `None` when empty.
    #[inline]
    pub fn pick(&self, counter: usize) -> Option<u32> {
        match self.seq.len() {
            0 => None,
            len => Some(self.seq[counter % len]),
        }
    }

    /// Length of one period.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// True when no backend is eligible.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

impl fmt::Debug for Wrr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrr").field("len", &self.seq.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn period(wrr: &Wrr) -> Vec<u32> {
        (0..wrr.len()).map(|i| wrr.pick(i).unwrap()).collect()
    }

    /// nginx's algorithm verbatim (ngx_http_upstream_get_peer), as the reference.
    fn nginx(members: &[(u32, u32)]) -> Vec<u32> {
        let divisor = members.iter().fold(0, |g, &(_, w)| gcd(g, w));
        let weights: Vec<i64> = members
            .iter()
            .map(|&(_, w)| i64::from(w / divisor))
            .collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; members.len()];
        let mut seq = Vec::new();
        for _ in 0..total {
            let mut best: Option<usize> = None;
            for i in 0..members.len() {
                current[i] += weights[i];
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            seq.push(members[b].0);
        }
        seq
    }

    #[test]
    fn three_to_one_interleaves() {
        let wrr = Wrr::build([(0, 3), (1, 1)]);
        assert_eq!(period(&wrr), [0, 0, 1, 0]);
    }

    #[test]
    fn nginx_five_one_one() {
        // nginx's documented example: { a, a, b, a, c, a, a }.
        let wrr = Wrr::build([(10, 5), (20, 1), (30, 1)]);
        assert_eq!(period(&wrr), [10, 10, 20, 10, 30, 10, 10]);
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(period(&Wrr::build([(0, 1), (1, 1), (2, 1)])), [0, 1, 2]);
        assert_eq!(period(&Wrr::build([(5, 7), (3, 7)])), [5, 3]);
    }

    #[test]
    fn gcd_reduces_the_period() {
        let reduced = Wrr::build([(0, 6), (1, 2)]);
        assert_eq!(period(&reduced), period(&Wrr::build([(0, 3), (1, 1)])));
        assert_eq!(reduced.len(), 4);
    }

    #[test]
    fn pick_wraps_around() {
        let wrr = Wrr::build([(0, 3), (1, 1)]);
        assert_eq!(wrr.pick(4), Some(0));
        assert_eq!(wrr.pick(6), Some(1));
        assert_eq!(wrr.pick(usize::MAX), wrr.pick(usize::MAX % 4));
    }

    #[test]
    fn empty_picks_none() {
        let empty = Wrr::build(std::iter::empty());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.pick(0), None);
        assert_eq!(empty.pick(12345), None);
        assert_eq!(Wrr::build([(0, 0)]).pick(0), None);
    }

    #[test]
    fn weight_zero_is_left_out() {
        assert_eq!(period(&Wrr::build([(0, 0), (1, 2), (2, 1)])), [1, 2, 1]);
    }

    #[test]
    fn thousand_backends_max_weight_build() {
        let wrr = Wrr::build((0..1000).map(|i| (i, 256)));
        assert_eq!(wrr.len(), 1000);
        // Mixed weights (gcd 1): the longest realistic period still builds.
        let mixed = Wrr::build((0..1000).map(|i| (i, if i % 2 == 0 { 256 } else { 1 })));
        assert_eq!(mixed.len(), 500 * 257);
    }

    #[test]
    fn share_matches_weight() {
        let wrr = Wrr::build([(0, 5), (1, 3), (2, 2)]);
        let seq = period(&wrr);
        for (idx, weight) in [(0, 5), (1, 3), (2, 2)] {
            assert_eq!(seq.iter().filter(|&&x| x == idx).count(), weight);
        }
    }

    proptest! {
        /// The grouped simulation is exactly nginx's per-backend algorithm.
        #[test]
        fn matches_nginx(weights in prop::collection::vec(1u32..=12, 1..=16)) {
            let members: Vec<(u32, u32)> =
                weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
            prop_assert_eq!(period(&Wrr::build(members.iter().copied())), nginx(&members));
        }
    }
}
