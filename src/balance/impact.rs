//! Reload impact preview (DESIGN.md §16): for each pool a reload changes, the share of hash keys
//! that change owner and the share of cookie sessions that migrate.
//!
//! Owns the computation and its one-line wording, used by `tether check --against`, by every
//! reload's log and by `[server] max_reload_move`. Pure: configurations in, numbers out; off the
//! request path. Must not touch the live snapshot (the caller says which backends are in maint).
//!
//! Hash keys: measured exactly from the two rings — the key space (2^64 positions) is cut at
//! every virtual node of either ring; on each arc both rings have one owner, and the arcs whose
//! owners differ (by backend id) are summed. Cookie sessions: a cookie names its backend, so only
//! sessions on a backend that leaves (removed, or newly in maint) migrate; assuming sessions
//! spread by weight, that is the removed weight's share of the old pool's weight.

use std::fmt;

use crate::balance::ring::Ring;
use crate::config::{self, Config, Policy};

/// What a reload does to one pool's sessions. Shares are in 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolImpact {
    pub pool: String,
    /// The pool keeps affinity (cookie or hash policy); otherwise nothing is pinned.
    pub affinity: bool,
    pub hash_keys: f64,
    pub cookie_sessions: f64,
}

impl PoolImpact {
    /// The larger of the two shares (what `max_reload_move` is compared with); 0 without affinity.
    pub fn larger(&self) -> f64 {
        if self.affinity {
            self.hash_keys.max(self.cookie_sessions)
        } else {
            0.0
        }
    }
}

impl fmt::Display for PoolImpact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.affinity {
            write!(
                f,
                "pool {}: {:.1}% of hash keys move, {:.1}% of cookie sessions migrate",
                self.pool,
                self.hash_keys * 100.0,
                self.cookie_sessions * 100.0
            )
        } else {
            write!(f, "pool {}: no affinity, no session moves", self.pool)
        }
    }
}

/// The impact of replacing `old` by `new`, one entry per pool present in both whose policy or
/// backends (id, address, weight) changed, in `new`'s order. `in_maint(pool, id)`: backends
/// in maint (live admin state, the same before and after: it is kept by id) take no part.
pub fn between(
    old: &Config,
    new: &Config,
    in_maint: &dyn Fn(&str, &str) -> bool,
) -> Vec<PoolImpact> {
    new.pools
        .iter()
        .filter_map(|n| {
            let o = old.pools.iter().find(|o| o.name == n.name)?;
            changed(o, n).then(|| pool_impact(o, n, in_maint))
        })
        .collect()
}

fn changed(o: &config::Pool, n: &config::Pool) -> bool {
    let members = |p: &config::Pool| {
        p.backends
            .iter()
            .map(|b| (b.id.clone(), b.addr, b.weight))
            .collect::<Vec<_>>()
    };
    o.policy != n.policy || members(o) != members(n)
}

fn pool_impact(
    o: &config::Pool,
    n: &config::Pool,
    in_maint: &dyn Fn(&str, &str) -> bool,
) -> PoolImpact {
    let members = |p: &config::Pool| -> Vec<(String, u32)> {
        p.backends
            .iter()
            .filter(|b| !in_maint(&p.name, &b.id))
            .map(|b| (b.id.clone(), b.weight))
            .collect()
    };
    let (before, after) = (members(o), members(n));
    let total: u64 = before.iter().map(|(_, w)| u64::from(*w)).sum();
    let gone: u64 = before
        .iter()
        .filter(|(id, _)| !after.iter().any(|(a, _)| a == id))
        .map(|(_, w)| u64::from(*w))
        .sum();
    let affinity = |p: Policy| matches!(p, Policy::Cookie | Policy::Hash);
    PoolImpact {
        pool: n.name.clone(),
        affinity: affinity(o.policy) || affinity(n.policy),
        hash_keys: hash_move_share(&before, &after),
        cookie_sessions: if total == 0 {
            0.0
        } else {
            gone as f64 / total as f64
        },
    }
}

fn ring_of(members: &[(String, u32)]) -> Ring {
    Ring::build(
        members
            .iter()
            .enumerate()
            .map(|(i, (id, w))| (i as u32, id.as_str(), *w)),
    )
}

/// The exact share of the key space whose owner (by id) differs between the rings of `before`
/// and `after` (members: id and weight).
pub fn hash_move_share(before: &[(String, u32)], after: &[(String, u32)]) -> f64 {
    let (rb, ra) = (ring_of(before), ring_of(after));
    let (pb, pa) = (rb.points(), ra.points());
    match (pb.is_empty(), pa.is_empty()) {
        // No key had an owner before (a discovered pool's first answer): nothing moves.
        (true, _) => return 0.0,
        (false, true) => return 1.0,
        _ => {}
    }
    // Cut points of both rings, in order; the arc ending at cut c (exclusive of the previous
    // cut, inclusive of c) belongs, in each ring, to its first node at or after c.
    let mut cuts: Vec<u64> = pb.iter().chain(pa).map(|p| p.0).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let (mut ib, mut ia) = (0usize, 0usize);
    let mut moved: u128 = 0;
    let mut prev: Option<u64> = None;
    for &c in &cuts {
        while ib < pb.len() && pb[ib].0 < c {
            ib += 1;
        }
        while ia < pa.len() && pa[ia].0 < c {
            ia += 1;
        }
        let ob = &before[pb[ib % pb.len()].1 as usize].0;
        let oa = &after[pa[ia % pa.len()].1 as usize].0;
        // The first arc also takes the wrap-around past the last cut.
        let len: u128 = match prev {
            Some(p) => u128::from(c - p),
            None => {
                u128::from(c) + 1 + (u128::from(u64::MAX) - u128::from(*cuts.last().unwrap_or(&0)))
            }
        };
        if ob != oa {
            moved += len;
        }
        prev = Some(c);
    }
    moved as f64 / (1u128 << 64) as f64
}

/// What `tether check -c NEW --against OLD` prints: the diff line, then one line per changed
/// pool (no backend state: every backend counts as in service), then whether the running
/// `max_reload_move` guard would refuse it.
pub fn preview(old: &Config, new: &Config) -> Vec<String> {
    let mut lines = vec![format!(
        "changes: {}",
        crate::config::diff::Diff::between(old, new)
    )];
    let impacts = between(old, new, &|_, _| false);
    lines.extend(impacts.iter().map(ToString::to_string));
    if let Some(max) = guard(old, new) {
        let over = over(&impacts, max);
        if !over.is_empty() {
            lines.push(format!(
                "a reload would be refused: more than server.max_reload_move = {max} ({:.1}%) moves in {} (POST /reload?force=true applies it anyway)",
                max * 100.0,
                over.iter().map(|i| i.pool.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    lines
}

/// The stricter of the running and the new `max_reload_move`.
pub fn guard(old: &Config, new: &Config) -> Option<f64> {
    match (old.server.max_reload_move, new.server.max_reload_move) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The pools whose larger share exceeds `max` (for `max_reload_move`).
pub fn over(impacts: &[PoolImpact], max: f64) -> Vec<&PoolImpact> {
    impacts.iter().filter(|i| i.larger() > max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ids: &[(&str, u32)]) -> Vec<(String, u32)> {
        ids.iter().map(|(i, w)| (i.to_string(), *w)).collect()
    }

    /// The exact share agrees with routing a large sample of keys through both rings.
    #[test]
    fn exact_share_matches_a_sample_of_keys() {
        let cases = [
            (
                m(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]),
                m(&[("a", 1), ("b", 1), ("c", 1)]),
            ),
            (
                m(&[("a", 1), ("b", 1), ("c", 1)]),
                m(&[("a", 1), ("b", 1), ("c", 1), ("e", 2)]),
            ),
            (m(&[("a", 1), ("b", 3)]), m(&[("a", 2), ("b", 3)])),
            (m(&[("a", 1), ("b", 1)]), m(&[("a", 1), ("b", 1)])),
        ];
        for (before, after) in cases {
            let exact = hash_move_share(&before, &after);
            let (rb, ra) = (ring_of(&before), ring_of(&after));
            let n = 200_000;
            let moved = (0..n)
                .filter(|i| {
                    let k = format!("key-{i}");
                    let (b, a) = (rb.get(k.as_bytes()).unwrap(), ra.get(k.as_bytes()).unwrap());
                    before[b as usize].0 != after[a as usize].0
                })
                .count();
            let sampled = moved as f64 / n as f64;
            // Binomial standard error at n = 200k is at most 0.0011: allow 4 of them.
            assert!(
                (exact - sampled).abs() < 0.0045,
                "exact {exact} sampled {sampled}"
            );
        }
        assert_eq!(hash_move_share(&m(&[("a", 1)]), &m(&[("a", 1)])), 0.0);
        assert_eq!(hash_move_share(&m(&[("a", 1)]), &m(&[("b", 1)])), 1.0);
        assert_eq!(hash_move_share(&[], &m(&[("b", 1)])), 0.0);
        assert_eq!(hash_move_share(&m(&[("b", 1)]), &[]), 1.0);
    }

    #[test]
    fn cookie_share_is_the_removed_weight() {
        let text = |ids: &[&str]| {
            let mut s = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[affinity]\nsecret = \"impact-test-secret-0123456789abc\"\n[[route]]\npool = \"shop\"\n[pool.shop]\npolicy = \"cookie\"\n".to_string();
            for (i, id) in ids.iter().enumerate() {
                s.push_str(&format!(
                    "[[pool.shop.backend]]\nid = \"{id}\"\naddr = \"127.0.0.1:{}\"\n",
                    2000 + i
                ));
            }
            crate::config::parse(&s, None).unwrap()
        };
        let old = text(&["s1", "s2", "s3", "s4"]);
        let new = text(&["s1", "s2", "s3"]);
        let none = |_: &str, _: &str| false;
        let i = between(&old, &new, &none);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].cookie_sessions, 0.25);
        let line = i[0].to_string();
        assert!(line.starts_with("pool shop: "), "{line}");
        assert!(
            line.ends_with("% of hash keys move, 25.0% of cookie sessions migrate"),
            "{line}"
        );
        assert!(between(&old, &old, &none).is_empty(), "nothing changed");
        // s4 already in maint: its sessions moved before; nothing migrates now.
        let s4 = |_: &str, id: &str| id == "s4";
        let i = between(&old, &new, &s4);
        assert_eq!((i[0].cookie_sessions, i[0].hash_keys), (0.0, 0.0));
        assert_eq!(over(&between(&old, &new, &none), 0.2).len(), 1);
        assert!(over(&between(&old, &new, &none), 0.3).is_empty());
    }
}
