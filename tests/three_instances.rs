//! A fleet of three tether instances with one configuration and one secret (DESIGN.md §1, §16):
//! every client's requests are spread across the instances round-robin, and every request of a
//! client lands on the same backend whichever instance takes it — for a cookie pool, a hash pool
//! and a pinned hash pool — through a backend failure, its recovery, a reload that removes a
//! backend and an affinity-secret rotation. No shared store: agreement comes from pure
//! decisions over the same config and the same (independently observed) health.

mod common;

use common::*;
use std::time::Duration;

const OLD_SECRET: &str = "\"fleet-secret-of-three-0123456789\"";
const ROTATED: &str =
    "[\"fleet-secret-rotated-0123456789ab\", \"fleet-secret-of-three-0123456789\"]";

fn config(bs: &[&Backend], secret: &str) -> String {
    let health = |pool: &str| {
        format!(
            "[pool.{pool}.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n"
        )
    };
    let mut s = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = {secret}
[[route]]
path_prefix = "/"
pool = "shop"
[[route]]
path_prefix = "/api"
pool = "sessions"
[[route]]
path_prefix = "/pinned"
pool = "pinned"
[pool.shop]
policy = "cookie"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "query:user"
[pool.pinned]
policy = "hash"
[pool.pinned.hash]
key = "query:user"
pin = true
"#
    );
    for pool in ["shop", "sessions", "pinned"] {
        s.push_str(&health(pool));
        s.push_str(&backend_tables(pool, bs));
    }
    s
}

/// One pool a client talks to: the request path and, for pools with a cookie, its name.
#[derive(Clone, Copy)]
struct Pool {
    name: &'static str,
    path: &'static str,
    cookie: Option<&'static str>,
}

const POOLS: [Pool; 3] = [
    Pool {
        name: "shop",
        path: "/",
        cookie: Some("tether_shop"),
    },
    Pool {
        name: "sessions",
        path: "/api",
        cookie: None,
    },
    Pool {
        name: "pinned",
        path: "/pinned",
        cookie: Some("tether_pinned"),
    },
];

/// A browser-like client of one pool: its user key and the cookie it holds.
struct Client {
    pool: Pool,
    user: String,
    cookie: Option<String>,
    /// Which instance takes its next request (round-robin over the fleet).
    next: usize,
}

impl Client {
    fn request(&mut self, t: &Tether) -> String {
        let url = t.url(&format!("{}?user={}", self.pool.path, self.user));
        let cookie_header = match (self.pool.cookie, &self.cookie) {
            (Some(name), Some(v)) => Some(format!("{name}={v}")),
            _ => None,
        };
        let headers: Vec<(&str, &str)> = cookie_header
            .as_deref()
            .map(|c| ("Cookie", c))
            .into_iter()
            .collect();
        let r = get(&url, &headers);
        assert_eq!(
            r.status,
            200,
            "{} via {}: {}",
            self.pool.name,
            t.listen(),
            r.body
        );
        if let Some(name) = self.pool.cookie {
            if let Some(v) = r.set_cookie(name) {
                self.cookie = Some(v);
            }
        }
        r.backend().unwrap().to_owned()
    }

    /// One request to every instance, in this client's round-robin order; all must agree.
    fn round(&mut self, fleet: &[Tether], phase: &str) -> String {
        let mut seen = Vec::new();
        for _ in 0..fleet.len() {
            let t = &fleet[self.next % fleet.len()];
            self.next += 1;
            seen.push(self.request(t));
        }
        assert!(
            seen.iter().all(|b| *b == seen[0]),
            "{phase}: pool {} user {}: instances disagree: {seen:?}",
            self.pool.name,
            self.user
        );
        seen.swap_remove(0)
    }

    /// The decision of every instance for the client's current cookie and key, taken
    /// independently (the cookie is not updated in between): the failover target must agree.
    fn independent(&self, fleet: &[Tether], phase: &str) -> String {
        let homes: Vec<String> = fleet
            .iter()
            .map(|t| {
                let mut probe = Client {
                    pool: self.pool,
                    user: self.user.clone(),
                    cookie: self.cookie.clone(),
                    next: 0,
                };
                probe.request(t)
            })
            .collect();
        assert!(
            homes.iter().all(|b| *b == homes[0]),
            "{phase}: pool {} user {}: independent decisions differ: {homes:?}",
            self.pool.name,
            self.user
        );
        homes[0].clone()
    }
}

/// Every client: the independent decision first, then a round-robin round that must land on the
/// same backend. Returns each client's backend.
fn phase(fleet: &[Tether], clients: &mut [Client], phase: &str) -> Vec<String> {
    clients
        .iter_mut()
        .map(|c| {
            let independent = c.independent(fleet, phase);
            let round = c.round(fleet, phase);
            assert_eq!(
                independent, round,
                "{phase}: pool {} user {}",
                c.pool.name, c.user
            );
            round
        })
        .collect()
}

/// Sessions start on whichever instance a client reaches first (a new cookie session is
/// assigned round-robin by that instance; from then on the cookie decides).
fn begin(fleet: &[Tether], clients: &mut [Client]) {
    for c in clients.iter_mut() {
        let t = &fleet[c.next % fleet.len()];
        c.next += 1;
        c.request(t);
    }
}

fn all_see(fleet: &[Tether], what: &str, backend: &str, up: f64) {
    for t in fleet {
        wait_for(what, Duration::from_secs(10), || {
            POOLS.iter().all(|p| {
                t.metric(
                    "tether_backend_up",
                    &[("pool", p.name), ("backend", backend)],
                ) == Some(up)
            })
        });
    }
}

fn reload_all(fleet: &[Tether], cfg: &str, generation: f64) {
    for (i, t) in fleet.iter().enumerate() {
        t.write_config(cfg);
        if i % 2 == 0 {
            let r = post(&t.admin_url("/reload"), &[], "");
            assert_eq!(r.status, 200, "{}", r.body);
        } else {
            t.sighup();
        }
    }
    for t in fleet {
        wait_for("reloaded", Duration::from_secs(10), || {
            t.metric("tether_config_generation", &[]) == Some(generation)
        });
    }
}

#[test]
fn three_instances_agree_on_pins_and_failover_through_failure_recovery_reload_and_rotation() {
    let bs: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("n{i}"))).collect();
    let all: Vec<&Backend> = bs.iter().collect();
    let cfg = config(&all, OLD_SECRET);
    let fleet: Vec<Tether> = (0..3).map(|_| Tether::start(&cfg)).collect();
    let mut clients: Vec<Client> = POOLS
        .iter()
        .flat_map(|&pool| {
            (0..24).map(move |i| Client {
                pool,
                user: format!("{}-{i}", pool.name),
                cookie: None,
                next: i,
            })
        })
        .collect();

    begin(&fleet, &mut clients);
    let start = phase(&fleet, &mut clients, "start");
    for pool in POOLS {
        let on_n2 = clients
            .iter()
            .zip(&start)
            .filter(|(c, b)| c.pool.name == pool.name && *b == "n2")
            .count();
        assert!(on_n2 > 0, "some {} sessions live on n2", pool.name);
    }

    // n2 dies; each instance finds out through its own health checks.
    bs[1].stop();
    all_see(&fleet, "n2 down everywhere", "n2", 0.0);
    let failed = phase(&fleet, &mut clients, "n2 down");
    for (before, after) in start.iter().zip(&failed) {
        assert_ne!(after, "n2");
        if before != "n2" {
            assert_eq!(before, after, "sessions of healthy backends stay");
        }
    }

    // n2 returns: moved cookie sessions stay on their new home; unpinned hash keys go back.
    bs[1].restart();
    all_see(&fleet, "n2 up everywhere", "n2", 1.0);
    let recovered = phase(&fleet, &mut clients, "n2 back");
    for (i, c) in clients.iter().enumerate() {
        match c.pool.cookie {
            None => assert_eq!(start[i], recovered[i], "hash keys return to their owner"),
            Some(_) => assert_eq!(failed[i], recovered[i], "no flap-back"),
        }
    }

    // A reload on every instance removes n4.
    assert!(
        recovered.iter().any(|b| b == "n4"),
        "some sessions live on n4"
    );
    let three: Vec<&Backend> = bs[..3].iter().collect();
    reload_all(&fleet, &config(&three, OLD_SECRET), 2.0);
    let reloaded = phase(&fleet, &mut clients, "n4 removed");
    for (before, after) in recovered.iter().zip(&reloaded) {
        assert_ne!(after, "n4");
        if before != "n4" {
            assert_eq!(before, after, "only n4's sessions move");
        }
    }

    // Secret rotation: the new secret signs, the old one still verifies, on every instance.
    reload_all(&fleet, &config(&three, ROTATED), 3.0);
    let rotated = phase(&fleet, &mut clients, "secret rotated");
    assert_eq!(rotated, reloaded, "no session moves on a rotation");
    for t in &fleet {
        assert_eq!(
            t.metric_sum("tether_affinity_total", &[("outcome", "invalid")]),
            0.0,
            "old cookies still verify"
        );
    }
    // Sessions begun after the rotation (new secret) agree too.
    let mut late: Vec<Client> = POOLS
        .iter()
        .flat_map(|&pool| {
            (0..6).map(move |i| Client {
                pool,
                user: format!("late-{}-{i}", pool.name),
                cookie: None,
                next: i,
            })
        })
        .collect();
    begin(&fleet, &mut late);
    phase(&fleet, &mut late, "after rotation");
    // Old-secret cookies were re-signed: they now verify with the new secret alone.
    let new_only = "\"fleet-secret-rotated-0123456789ab\"";
    reload_all(&fleet, &config(&three, new_only), 4.0);
    let resigned = phase(&fleet, &mut clients, "old secret retired");
    assert_eq!(resigned, reloaded);
    for t in &fleet {
        assert_eq!(
            t.metric_sum("tether_affinity_total", &[("outcome", "invalid")]),
            0.0,
            "every client holds a cookie of the new secret"
        );
    }
}
