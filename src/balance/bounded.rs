//! Bounded-load consistent hashing (DESIGN.md §16, `hash.balance_factor`).
//!
//! Owns the arithmetic of the bound and the walk that skips full owners. Pure: the caller passes
//! the loads (per-instance in-flight counts) and the ring walk; no IO, clock, metrics or locks.
//! Must not touch backend state or the ring's placement.
//!
//! With B = ⌈factor × total / eligible⌉ (total: requests in flight in the pool, the one being
//! placed included), the key's owner takes the request while it has fewer than B in flight;
//! otherwise the first backend clockwise from the key with fewer than B does. Since the sum of
//! the loads is below total ≤ factor × total ≤ B × eligible, some eligible backend is always
//! under the bound (unless loads change under our feet: then the owner keeps the request).

/// The factor is applied in millionths, so the bound is integer arithmetic (no float rounding
/// can turn an exact ⌈2.0⌉ into 3).
const SCALE: u128 = 1_000_000;

/// The per-backend bound B for `total` requests in flight (this one included) over `eligible`
/// backends. `factor` ≥ 1.0. At least 1.
pub fn bound(factor: f64, total: u64, eligible: usize) -> u64 {
    let eligible = eligible.max(1) as u128;
    let f = (factor * SCALE as f64).round().max(SCALE as f64) as u128;
    let num = f * total.max(1) as u128;
    let den = SCALE * eligible;
    num.div_ceil(den).min(u64::MAX as u128) as u64
}

/// Where a keyed request goes under the bound: `walk` yields the backends clockwise from the
/// key, owner first (each once). Returns the chosen backend and, when it is not the owner, the
/// owner that was skipped. `None` when the walk is empty.
pub fn place(
    mut walk: impl Iterator<Item = u32>,
    load: impl Fn(u32) -> u64,
    bound: u64,
) -> Option<(u32, Option<u32>)> {
    let owner = walk.next()?;
    if load(owner) < bound {
        return Some((owner, None));
    }
    match walk.find(|&i| load(i) < bound) {
        Some(i) => Some((i, Some(owner))),
        None => Some((owner, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::ring::Ring;
    use proptest::prelude::*;

    #[test]
    fn bound_is_the_ceiling_of_factor_times_average() {
        assert_eq!(bound(1.25, 1, 4), 1);
        assert_eq!(bound(1.25, 4, 4), 2);
        assert_eq!(bound(1.0, 8, 4), 2);
        assert_eq!(bound(1.0, 9, 4), 3);
        assert_eq!(bound(2.0, 10, 4), 5);
        assert_eq!(bound(1.1, 10, 1), 11);
        assert_eq!(bound(1.0, 0, 0), 1);
    }

    #[test]
    fn a_full_owner_is_skipped_for_the_next_one_clockwise() {
        let loads = [3u64, 0, 1, 3];
        let load = |i: u32| loads[i as usize];
        assert_eq!(place([0, 3, 2, 1].into_iter(), load, 3), Some((2, Some(0))));
        assert_eq!(place([2, 0].into_iter(), load, 3), Some((2, None)));
        // Nobody under the bound (loads raced): the owner keeps it.
        assert_eq!(place([0, 3].into_iter(), load, 3), Some((0, None)));
        assert_eq!(place(std::iter::empty(), load, 3), None);
    }

    fn ring(n: usize, weights: &[u32]) -> (Vec<String>, Ring) {
        let ids: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
        let ring = Ring::build(
            ids.iter()
                .enumerate()
                .map(|(i, id)| (i as u32, id.as_str(), weights[i])),
        );
        (ids, ring)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Requests arrive (a key each) and some finish; every placement obeys the bound: the
        /// chosen backend had fewer than B in flight, and the key's owner keeps it whenever the
        /// owner was under B. With arrivals only (B never shrinks), no backend is ever above B.
        #[test]
        fn nobody_above_the_bound_and_owners_keep_keys_while_under_it(
            n in 1usize..8,
            weights in prop::collection::vec(1u32..=3, 8),
            factor in prop::sample::select(vec![1.0, 1.1, 1.25, 1.5, 2.0, 3.0]),
            ops in prop::collection::vec((any::<u16>(), any::<bool>(), any::<prop::sample::Index>()), 1..300),
            finishing in any::<bool>(),
        ) {
            let (_, ring) = ring(n, &weights);
            let mut loads = vec![0u64; n];
            for (key, finish, which) in ops {
                let busy: Vec<usize> = (0..n).filter(|&i| loads[i] > 0).collect();
                if finishing && finish && !busy.is_empty() {
                    loads[busy[which.index(busy.len())]] -= 1;
                    continue;
                }
                let key = format!("user-{key}");
                let total = loads.iter().sum::<u64>() + 1;
                let b = bound(factor, total, n);
                let owner = ring.get(key.as_bytes()).unwrap();
                let (chosen, skipped) =
                    place(ring.walk(key.as_bytes()), |i| loads[i as usize], b).unwrap();
                prop_assert!(loads[chosen as usize] < b, "chosen {} had {} >= B {}", chosen, loads[chosen as usize], b);
                if loads[owner as usize] < b {
                    prop_assert_eq!(chosen, owner);
                    prop_assert_eq!(skipped, None);
                } else {
                    prop_assert_eq!(skipped, Some(owner));
                }
                loads[chosen as usize] += 1;
                if !finishing {
                    for (i, l) in loads.iter().enumerate() {
                        prop_assert!(*l <= b, "backend {} at {} above B {}", i, l, b);
                    }
                }
            }
        }
    }
}
