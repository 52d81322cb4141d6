//! The per-request backend decision: policy + affinity cookie + hash key → backend.
//!
//! Owns: how the policies of DESIGN.md §4 combine the pure pieces of `balance/` with a pool's
//! live [`View`]. Pure: no IO, no clock (the caller passes `now`), no metrics, no locks; the only
//! randomness is the session nonce, supplied by the caller, and `least_request`'s two draws.
//! Must not touch: Pingora types.
//!
//! Failover is deterministic: when a pinned backend is down, removed or in maint, the session's new
//! home is the owner of its key (the hash key, else the cookie's nonce) on the ring of backends that
//! take new sessions — the first eligible backend clockwise from the key — so every tether
//! instance with the same configuration and health view picks the same one.
//!
//! Bounded-load hashing (`hash.balance_factor`, DESIGN.md §16) is the one input that is not
//! shared by instances: a new assignment of a key skips an owner that has the bound in flight
//! (read from the backends' in-flight gauges, atomics) for the next backend clockwise. It never
//! applies to a valid cookie (affinity first) nor to failover, so failover targets still agree.

use std::sync::Arc;

use crate::balance::cookie::{Affinity, NONCE_LEN};
use crate::config::Policy;
use crate::snapshot::{Pool, View};
use crate::state::backend::Admin;

/// Why a session moved (the `reason` label of `tether_affinity_migrations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Down,
    Removed,
    Maint,
    ConnectError,
    Ejected,
    /// A drain with hand-off moved it (DESIGN.md §25).
    Drain,
}

impl Reason {
    /// Index into `metrics::MIGRATION_REASONS`.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Down => "down",
            Reason::Removed => "removed",
            Reason::Maint => "maint",
            Reason::ConnectError => "connect_error",
            Reason::Ejected => "ejected",
            Reason::Drain => "drain",
        }
    }
}

/// The affinity outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pool keeps no affinity (round-robin, or hash without `pin`).
    None,
    /// The cookie's backend served the request.
    Hit,
    /// A new session was assigned (no cookie).
    New,
    /// The session moved to a new home.
    Migrated {
        from: Arc<str>,
        /// `from`'s index in the pool, unless it left the pool.
        from_index: Option<u32>,
        reason: Reason,
    },
    /// The cookie was tampered with, malformed or expired: treated as absent.
    Invalid,
}

impl Outcome {
    /// Index into `metrics::OUTCOMES`, if the outcome is counted.
    pub fn metric_index(&self) -> Option<usize> {
        match self {
            Outcome::None => None,
            Outcome::Hit => Some(0),
            Outcome::New => Some(1),
            Outcome::Migrated { .. } => Some(2),
            Outcome::Invalid => Some(3),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::None => "-",
            Outcome::Hit => "hit",
            Outcome::New => "new",
            Outcome::Migrated { .. } => "migrated",
            Outcome::Invalid => "invalid",
        }
    }
}

/// What a request brings to the decision.
pub struct Input<'a> {
    /// Value of the pool's affinity cookie, when the pool uses one and the request has it.
    pub cookie: Option<&'a [u8]>,
    /// Hash key (hash pools), after the fallback key; `None` means round-robin.
    pub key: Option<&'a [u8]>,
    /// Unix seconds.
    pub now: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backend: u32,
    pub outcome: Outcome,
    /// Affinity to (re)issue as `Set-Cookie`.
    pub issue: Option<Affinity>,
    /// The session nonce of a sticky request (also on a hit, for failover on connect errors).
    pub session: Option<[u8; NONCE_LEN]>,
    /// Bounded-load hashing skipped this backend (the key's owner, full) for this request.
    pub overflow: Option<u32>,
}

impl Pool {
    /// Picks the backend for a request, or `None` when no backend is eligible.
    pub fn select(
        &self,
        view: &View,
        input: &Input<'_>,
        new_nonce: &mut dyn FnMut() -> [u8; NONCE_LEN],
    ) -> Option<Decision> {
        let pinned = self.codec.is_some();
        match self.conf.policy {
            Policy::LeastRequest => self.least_request(view, &[]).map(|backend| Decision {
                backend,
                outcome: Outcome::None,
                issue: None,
                session: None,
                overflow: None,
            }),
            Policy::RoundRobin => self.round_robin(view).map(|backend| Decision {
                backend,
                outcome: Outcome::None,
                issue: None,
                session: None,
                overflow: None,
            }),
            Policy::Hash if !pinned => {
                self.assign(view, input.key)
                    .map(|(backend, overflow)| Decision {
                        backend,
                        outcome: Outcome::None,
                        issue: None,
                        session: None,
                        overflow,
                    })
            }
            Policy::Cookie | Policy::Hash => self.sticky(view, input, new_nonce),
        }
    }

    fn sticky(
        &self,
        view: &View,
        input: &Input<'_>,
        new_nonce: &mut dyn FnMut() -> [u8; NONCE_LEN],
    ) -> Option<Decision> {
        let codec = self.codec.as_ref()?;
        let mut invalid = false;
        if let Some(value) = input.cookie {
            let max_age = self.conf.cookie.max_age.map(|d| d.as_secs());
            match codec.decode(value, input.now, max_age) {
                Ok((aff, key_index)) => {
                    let (from, from_index, reason) = match self.by_digest.get(&aff.backend) {
                        Some(&i) if view.serving[i as usize] => {
                            // Re-sign cookies verified by an older secret (rotation).
                            let issue = (key_index > 0).then_some(aff);
                            return Some(Decision {
                                backend: i,
                                outcome: Outcome::Hit,
                                issue,
                                session: Some(aff.nonce),
                                overflow: None,
                            });
                        }
                        Some(&i) => {
                            let b = &self.backends[i as usize];
                            // Why, as the view that does not serve it was built (and /status
                            // shows it): not the live state, which may have moved on since.
                            let shown = view.shown[i as usize];
                            let reason = if shown.admin == Admin::Maint {
                                Reason::Maint
                            } else if shown.healthy && shown.ejected {
                                Reason::Ejected
                            } else if shown.healthy && shown.handoff {
                                Reason::Drain
                            } else {
                                Reason::Down
                            };
                            (b.id.clone(), Some(i), reason)
                        }
                        None => (
                            self.retired
                                .get(&aff.backend)
                                .map(|r| r.id.clone())
                                .unwrap_or_else(|| Arc::from("unknown")),
                            None,
                            Reason::Removed,
                        ),
                    };
                    let key = input.key.unwrap_or(&aff.nonce);
                    let backend = owner(view, key)?;
                    return Some(Decision {
                        backend,
                        outcome: Outcome::Migrated {
                            from,
                            from_index,
                            reason,
                        },
                        issue: Some(Affinity {
                            backend: self.backends[backend as usize].digest,
                            nonce: aff.nonce,
                            issued: input.now,
                        }),
                        session: Some(aff.nonce),
                        overflow: None,
                    });
                }
                Err(_) => invalid = true,
            }
        }
        let (backend, overflow) = self.assign(view, input.key)?;
        let nonce = new_nonce();
        Some(Decision {
            backend,
            outcome: if invalid {
                Outcome::Invalid
            } else {
                Outcome::New
            },
            issue: Some(Affinity {
                backend: self.backends[backend as usize].digest,
                nonce,
                issued: input.now,
            }),
            session: Some(nonce),
            overflow,
        })
    }

    /// A new assignment: the key's owner (under bounded load, maybe the next one clockwise,
    /// returned with the skipped owner), or round-robin without a key.
    fn assign(&self, view: &View, key: Option<&[u8]>) -> Option<(u32, Option<u32>)> {
        match key {
            Some(k) => self.bounded_owner(view, k),
            None => self.round_robin(view).map(|b| (b, None)),
        }
    }

    /// Weighted power of two choices (Envoy's default least-request shape): two distinct random
    /// candidates not in `tried`, and the one with fewer requests in flight per unit of weight
    /// (`(in_flight + 1) / weight`) wins; ties go to the first drawn. The randomness is the
    /// per-thread `fastrand` generator: no shared state on the request path, and in-flight counts
    /// are this instance's own.
    fn least_request(&self, view: &View, tried: &[u32]) -> Option<u32> {
        let all = &view.candidates;
        let untried = |c: &&(u32, u32)| !tried.contains(&c.0);
        let n = if tried.is_empty() {
            all.len()
        } else {
            all.iter().filter(untried).count()
        };
        let nth = |k: usize| -> (u32, u32) {
            if tried.is_empty() {
                all[k]
            } else {
                *all.iter().filter(untried).nth(k).expect("k < n")
            }
        };
        match n {
            0 => None,
            1 => Some(nth(0).0),
            _ => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let ((ia, wa), (ib, wb)) = (nth(a), nth(b));
                let load = |i: u32| self.backends[i as usize].state.in_flight().max(0) as u64 + 1;
                // a wins when load_a / wa <= load_b / wb.
                if load(ia) * u64::from(wb) <= load(ib) * u64::from(wa) {
                    Some(ia)
                } else {
                    Some(ib)
                }
            }
        }
    }

    /// The key's owner among backends taking new sessions, unless `hash.balance_factor` is on
    /// and the owner already has the bound B in flight (DESIGN.md §16): then the first backend
    /// clockwise with fewer. Reads the per-instance in-flight gauges (atomics), and sums the
    /// pool's only when the owner is busy at all.
    fn bounded_owner(&self, view: &View, key: &[u8]) -> Option<(u32, Option<u32>)> {
        let factor = self.conf.hash.as_ref().map_or(0.0, |h| h.balance_factor);
        let (ring, eligible) = if view.assignable_ring.is_empty() {
            (&view.serving_ring, &view.serving)
        } else {
            (&view.assignable_ring, &view.assignable)
        };
        let owner = ring.get(key)?;
        let load = |i: u32| self.backends[i as usize].state.in_flight().max(0) as u64;
        if factor == 0.0 || load(owner) == 0 {
            return Some((owner, None));
        }
        let total = self
            .backends
            .iter()
            .map(|b| b.state.in_flight().max(0) as u64)
            .sum::<u64>()
            + 1;
        let n = eligible.iter().filter(|e| **e).count();
        let b = crate::balance::bounded::bound(factor, total, n);
        crate::balance::bounded::place(ring.walk(key), load, b)
    }

    fn round_robin(&self, view: &View) -> Option<u32> {
        let n = self
            .rr_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        view.wrr.pick(n)
    }

    /// The next backend after connection failures to every backend in `tried`: for a keyed
    /// request the first backend clockwise from the key that was not tried, on the existing
    /// rings (deterministic, like failover: it is the owner on the ring without the tried ones),
    /// otherwise the next untried one in round-robin order.
    pub fn reselect(&self, view: &View, key: Option<&[u8]>, tried: &[u32]) -> Option<u32> {
        let untried = |i: &u32| !tried.contains(i);
        if let Some(k) = key {
            if let Some(i) = view.assignable_ring.walk(k).find(untried) {
                return Some(i);
            }
            if let Some(i) = view.serving_ring.walk(k).find(untried) {
                return Some(i);
            }
            if !view.serving_ring.is_empty() {
                return None;
            }
        }
        if self.conf.policy == Policy::LeastRequest {
            return self.least_request(view, tried);
        }
        for _ in 0..view.wrr.len() {
            match self.round_robin(view) {
                Some(i) if untried(&i) => return Some(i),
                Some(_) => {}
                None => break,
            }
        }
        // Round-robin sequences can repeat a heavy backend: fall back to any untried one.
        let any =
            |set: &[bool]| (0..self.backends.len() as u32).find(|i| set[*i as usize] && untried(i));
        any(&view.assignable).or_else(|| any(&view.serving))
    }

    /// Moves a request whose backend refused the connection (its index already pushed on
    /// `tried`) to the next one, see [`Pool::reselect`]. A session that already existed (a hit,
    /// or one that had just migrated) moves for good: its cookie is re-issued for the new home
    /// and the move is returned for counting (reason `connect_error`); a session assigned by
    /// this very request is still new and only gets the new home in its cookie. `None` when
    /// no backend is left.
    pub fn fail_over(
        &self,
        view: &View,
        hash_key: Option<&[u8]>,
        d: &mut Decision,
        tried: &[u32],
        now: u64,
    ) -> Option<Option<Moved>> {
        let key = hash_key.or(d.session.as_ref().map(|n| &n[..]));
        let next = self.reselect(view, key, tried)?;
        let failed = d.backend;
        d.backend = next;
        let Some(nonce) = d.session else {
            return Some(None);
        };
        d.issue = Some(Affinity {
            backend: self.backends[next as usize].digest,
            nonce,
            issued: now,
        });
        match d.outcome {
            Outcome::Hit => {
                d.outcome = Outcome::Migrated {
                    from: self.backends[failed as usize].id.clone(),
                    from_index: Some(failed),
                    reason: Reason::ConnectError,
                };
            }
            Outcome::Migrated { .. } => {}
            _ => return Some(None),
        }
        Some(Some(Moved {
            from: Ok(failed),
            to: next,
            reason: Reason::ConnectError,
        }))
    }
}

/// A session move to count in `tether_affinity_migrations_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The backend index it left, or the id of a backend no longer in the pool.
    pub from: Result<u32, Arc<str>>,
    pub to: u32,
    pub reason: Reason,
}

impl Decision {
    /// The move this decision made, if the session migrated.
    pub fn moved(&self) -> Option<Moved> {
        match &self.outcome {
            Outcome::Migrated {
                from,
                from_index,
                reason,
            } => Some(Moved {
                from: from_index.ok_or_else(|| from.clone()),
                to: self.backend,
                reason: *reason,
            }),
            _ => None,
        }
    }
}

/// Owner of `key` among backends taking new sessions; among serving ones when all of those drain.
fn owner(view: &View, key: &[u8]) -> Option<u32> {
    view.assignable_ring
        .get(key)
        .or_else(|| view.serving_ring.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use crate::state::backend::Registry;
    use crate::state::metrics::Metrics;

    fn snapshot(policy: &str, extra: &str, secrets: &str) -> Snapshot {
        let mut text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[affinity]\nsecret = {secrets}\n\
             [[route]]\npool = \"p\"\n[pool.p]\npolicy = \"{policy}\"\n{extra}\n"
        );
        for i in 1..=4 {
            text.push_str(&format!(
                "[[pool.p.backend]]\nid = \"b{i}\"\naddr = \"127.0.0.1:{}\"\n",
                1000 + i
            ));
        }
        let config = crate::config::parse(&text, None).expect("valid test config");
        let registry = Registry::new(std::sync::Arc::new(Metrics::new()));
        Snapshot::build(std::sync::Arc::new(config), &registry, 1, None)
    }

    const SECRET: &str = "\"selection-test-secret-0123456789\"";

    fn nonce(i: u8) -> [u8; NONCE_LEN] {
        [i; NONCE_LEN]
    }

    fn pick(s: &Snapshot, cookie: Option<&str>, key: Option<&str>, n: u8) -> Decision {
        let pool = &s.pools[0];
        let view = pool.view.load();
        let input = Input {
            cookie: cookie.map(str::as_bytes),
            key: key.map(str::as_bytes),
            now: 1_000_000,
        };
        pool.select(&view, &input, &mut || nonce(n))
            .expect("a backend")
    }

    fn cookie_of(s: &Snapshot, d: &Decision) -> String {
        s.pools[0]
            .codec
            .as_ref()
            .unwrap()
            .encode(d.issue.as_ref().unwrap())
    }

    #[test]
    fn new_session_then_hits() {
        let s = snapshot("cookie", "", SECRET);
        let first = pick(&s, None, None, 1);
        assert_eq!(first.outcome, Outcome::New);
        let c = cookie_of(&s, &first);
        let again = pick(&s, Some(&c), None, 2);
        assert_eq!(again.outcome, Outcome::Hit);
        assert_eq!(again.backend, first.backend);
        assert_eq!(again.issue, None);
        assert_eq!(again.session, Some(nonce(1)));
    }

    #[test]
    fn failover_is_deterministic_across_independent_snapshots() {
        // Two "instances": separately built snapshots and registries.
        let (a, b) = (
            snapshot("cookie", "", SECRET),
            snapshot("cookie", "", SECRET),
        );
        let mut moved = 0;
        for n in 0..50u8 {
            let d = pick(&a, None, None, n);
            let c = cookie_of(&a, &d);
            let home = d.backend as usize;
            for s in [&a, &b] {
                let st = &s.pools[0].backends[home].state;
                while st.is_healthy() {
                    st.record(false, 1, 1);
                }
                s.pools[0].refresh();
            }
            let (da, db) = (pick(&a, Some(&c), None, 99), pick(&b, Some(&c), None, 99));
            assert_eq!(da.backend, db.backend, "both instances agree");
            assert_ne!(da.backend as usize, home);
            assert!(matches!(
                da.outcome,
                Outcome::Migrated {
                    reason: Reason::Down,
                    ..
                }
            ));
            assert_eq!(
                da.issue.unwrap().nonce,
                nonce(n),
                "the session keeps its nonce"
            );
            moved += 1;
            for s in [&a, &b] {
                let st = &s.pools[0].backends[home].state;
                while !st.is_healthy() {
                    st.record(true, 1, 1);
                }
                s.pools[0].refresh();
            }
        }
        assert_eq!(moved, 50);
    }

    #[test]
    fn what_is_shown_is_what_the_view_routes_by() {
        let s = snapshot("cookie", "", SECRET);
        let pool = &s.pools[0];
        let d = pick(&s, None, None, 1);
        let c = cookie_of(&s, &d);
        let b = &pool.backends[d.backend as usize];
        let gauge = |state: usize| b.state.metrics.state[state].get();
        while b.state.is_healthy() {
            b.state.record(false, 1, 1);
        }
        // Marked down, the view not rebuilt yet: still shown (and routed) as up.
        let shown = pool.view.load().shown[d.backend as usize];
        assert_eq!((shown.state_name(), shown.health()), ("up", "up"));
        assert_eq!((b.state.metrics.up.get(), gauge(0), gauge(1)), (1, 1, 0));
        assert_eq!(pick(&s, Some(&c), None, 2).outcome, Outcome::Hit);
        pool.refresh();
        let shown = pool.view.load().shown[d.backend as usize];
        assert_eq!((shown.state_name(), shown.health()), ("down", "down"));
        assert_eq!((b.state.metrics.up.get(), gauge(0), gauge(1)), (0, 0, 1));
        assert!(matches!(
            pick(&s, Some(&c), None, 3).outcome,
            Outcome::Migrated {
                reason: Reason::Down,
                ..
            }
        ));
        // Ejected: the reason and the state come from the view too.
        while !b.state.is_healthy() {
            b.state.record(true, 1, 1);
        }
        let opts = crate::config::OutlierOpts {
            consecutive_5xx: 1,
            consecutive_failures: 0,
            base_ejection: std::time::Duration::from_secs(30),
            max_ejection: std::time::Duration::from_secs(300),
            max_ejected_percent: 50,
        };
        b.state
            .eject(crate::state::backend::Ejection::FiveXx, &opts);
        pool.refresh();
        assert_eq!(
            pool.view.load().shown[d.backend as usize].state_name(),
            "ejected"
        );
        b.state.return_from_ejection();
        // Returned, not yet rebuilt: the view still says ejected, and so does the reason.
        assert!(matches!(
            pick(&s, Some(&c), None, 4).outcome,
            Outcome::Migrated {
                reason: Reason::Ejected,
                ..
            }
        ));
        assert_eq!(gauge(4), 1);
        pool.refresh();
        assert_eq!(gauge(4), 0);
        assert_eq!(pick(&s, Some(&c), None, 5).outcome, Outcome::Hit);
    }

    #[test]
    fn drained_backends_keep_sessions_but_take_no_new_ones() {
        let s = snapshot("cookie", "", SECRET);
        let d = pick(&s, None, None, 7);
        let c = cookie_of(&s, &d);
        s.pools[0].backends[d.backend as usize]
            .state
            .set_admin(Admin::Drain);
        s.pools[0].refresh();
        assert_eq!(pick(&s, Some(&c), None, 8).backend, d.backend);
        for n in 0..20 {
            assert_ne!(pick(&s, None, None, n).backend, d.backend);
        }
        s.pools[0].backends[d.backend as usize]
            .state
            .set_admin(Admin::Maint);
        s.pools[0].refresh();
        let m = pick(&s, Some(&c), None, 9);
        assert_ne!(m.backend, d.backend);
        assert!(matches!(
            m.outcome,
            Outcome::Migrated {
                reason: Reason::Maint,
                ..
            }
        ));
    }

    #[test]
    fn invalid_cookies_become_new_sessions_and_old_secrets_are_resigned() {
        let old = snapshot("cookie", "", SECRET);
        let d = pick(&old, None, None, 3);
        let c = cookie_of(&old, &d);
        let bad = pick(&old, Some("bogus"), None, 4);
        assert_eq!(bad.outcome, Outcome::Invalid);
        assert!(bad.issue.is_some());
        // Rotation: a new first secret, the old one still verifies and the cookie is re-signed.
        let rotated = snapshot(
            "cookie",
            "",
            &format!("[\"a-brand-new-secret-0123456789\", {SECRET}]"),
        );
        let r = pick(&rotated, Some(&c), None, 5);
        assert_eq!(r.outcome, Outcome::Hit);
        assert_eq!(r.backend, d.backend);
        assert!(r.issue.is_some(), "re-issued with the current secret");
    }

    #[test]
    fn bounded_load_skips_a_full_owner_and_a_cookie_still_wins() {
        let s = snapshot(
            "hash",
            "[pool.p.hash]\nkey = \"header:x-user\"\npin = true\nbalance_factor = 1.0",
            SECRET,
        );
        let pool = &s.pools[0];
        let first = pick(&s, None, Some("alice"), 1);
        assert_eq!(
            (first.outcome.clone(), first.overflow),
            (Outcome::New, None)
        );
        let owner = first.backend as usize;
        // The owner holds 2 requests, the others none: B = ceil(1.0 * 3 / 4) = 1.
        pool.backends[owner].state.metrics.in_flight.add(2);
        let next = pool
            .view
            .load()
            .assignable_ring
            .walk(b"alice")
            .nth(1)
            .unwrap();
        let d = pick(&s, None, Some("alice"), 2);
        assert_eq!(d.backend, next, "the next backend clockwise");
        assert_eq!(d.overflow, Some(owner as u32));
        assert_eq!(
            d.issue.unwrap().backend,
            pool.backends[next as usize].digest,
            "pinned there"
        );
        // The first session's cookie still goes to its (busy) owner: affinity first.
        let c = cookie_of(&s, &first);
        let hit = pick(&s, Some(&c), Some("alice"), 3);
        assert_eq!((hit.backend as usize, hit.outcome), (owner, Outcome::Hit));
        pool.backends[owner].state.metrics.in_flight.sub(2);
        assert_eq!(pick(&s, None, Some("alice"), 4).backend as usize, owner);
    }

    #[test]
    fn hash_without_pin_follows_the_key_and_falls_back_to_round_robin() {
        let s = snapshot("hash", "[pool.p.hash]\nkey = \"header:x-user\"", SECRET);
        let d = pick(&s, None, Some("alice"), 0);
        assert_eq!(d.outcome, Outcome::None);
        assert_eq!(d.issue, None);
        for _ in 0..5 {
            assert_eq!(pick(&s, None, Some("alice"), 0).backend, d.backend);
        }
        let spread: std::collections::BTreeSet<u32> =
            (0..8).map(|_| pick(&s, None, None, 0).backend).collect();
        assert_eq!(spread.len(), 4, "no key: round-robin over all backends");
    }

    #[test]
    fn least_request_prefers_the_backend_with_less_in_flight_per_weight() {
        let s = snapshot("least_request", "", SECRET);
        let pool = &s.pools[0];
        let in_flight = |i: usize, n: i64| pool.backends[i].state.metrics.in_flight.set(n);
        // b1 idle, the others busy: every pick that draws b1 takes it, and with four backends a
        // pair holds b1 half of the time (3 of the 6 pairs).
        in_flight(0, 0);
        for i in 1..4 {
            in_flight(i, 10);
        }
        let n = 2000;
        let b1 = (0..n)
            .filter(|_| pick(&s, None, None, 0).backend == 0)
            .count();
        assert!((800..=1200).contains(&b1), "b1 took {b1} of {n}");
        // Never the busiest of a pair: with b4 the only busy one it is never chosen.
        for i in 0..3 {
            in_flight(i, 1);
        }
        in_flight(3, 50);
        assert!((0..n).all(|_| pick(&s, None, None, 0).backend != 3));
        assert_eq!(pick(&s, None, None, 0).outcome, Outcome::None);
    }

    #[test]
    fn least_request_weighs_in_flight_by_weight() {
        let mut text = String::from(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[[route]]\npool = \"p\"\n\
             [pool.p]\npolicy = \"least_request\"\n",
        );
        for (i, w) in [(1, 4), (2, 1)] {
            text.push_str(&format!(
                "[[pool.p.backend]]\nid = \"b{i}\"\naddr = \"127.0.0.1:{}\"\nweight = {w}\n",
                1000 + i
            ));
        }
        let config = crate::config::parse(&text, None).expect("valid test config");
        let registry = Registry::new(std::sync::Arc::new(Metrics::new()));
        let s = Snapshot::build(std::sync::Arc::new(config), &registry, 1, None);
        let pool = &s.pools[0];
        // b1 (weight 4) with 6 in flight: 7/4 < 2/1, so it still wins over an idle b2 ...
        pool.backends[0].state.metrics.in_flight.set(6);
        pool.backends[1].state.metrics.in_flight.set(1);
        assert!((0..100).all(|_| pick(&s, None, None, 0).backend == 0));
        // ... and loses once 9/4 > 2/1.
        pool.backends[0].state.metrics.in_flight.set(8);
        assert!((0..100).all(|_| pick(&s, None, None, 0).backend == 1));
        // Failover skips the tried backend.
        let view = pool.view.load();
        assert_eq!(pool.reselect(&view, None, &[1]), Some(0));
        assert_eq!(pool.reselect(&view, None, &[0, 1]), None);
    }
}
