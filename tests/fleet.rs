//! Fleet-grade affinity (DESIGN.md §16) end to end, on the real binary: bounded-load hashing
//! under slow requests, the reload impact preview (`tether check --against`, reload logs,
//! `max_reload_move` with 409 and `?force=true`), drains with a deadline, and `recent_sessions`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "fleet-test-secret-0123456789abcdef";

fn backend<'a>(bs: &'a [Backend], name: &str) -> &'a Backend {
    bs.iter().find(|b| b.name() == name).expect("known backend")
}

fn admin_post(t: &Tether, path: &str) -> Resp {
    post(&t.admin_url(path), &[], "")
}

fn status_backend(t: &Tether, pool: &str, id: &str) -> serde_json::Value {
    let s = t.status();
    let p = s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .cloned()
        .unwrap_or_else(|| panic!("no pool {pool} in /status: {s}"));
    p["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {id} in pool {pool}: {p}"))
}

// ----- 1. Bounded-load hashing -----

fn bounded_config(bs: &[Backend]) -> String {
    let mut s = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "{SECRET}"
[[route]]
path_prefix = "/hashed"
pool = "hashed"
[[route]]
path_prefix = "/pinned"
pool = "pinned"
[pool.hashed]
policy = "hash"
[pool.hashed.hash]
key = "header:x-user"
balance_factor = 1.0
[pool.pinned]
policy = "hash"
[pool.pinned.hash]
key = "header:x-user"
balance_factor = 1.0
pin = true
"#
    );
    for pool in ["hashed", "pinned"] {
        s.push_str(&backend_tables(pool, bs));
    }
    s
}

/// Where `user` goes in `pool` with no cookie and nothing in flight.
fn home(t: &Tether, pool: &str, user: &str) -> String {
    get(&t.url(&format!("/{pool}")), &[("x-user", user)])
        .backend()
        .unwrap()
        .to_owned()
}

#[test]
fn a_busy_owner_overflows_to_the_next_backend_clockwise_and_a_pinned_session_sticks() {
    let bs: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let t = Tether::start(&bounded_config(&bs));
    let user = "alice";
    for pool in ["hashed", "pinned"] {
        let owner = home(&t, pool, user);
        // The next backend clockwise from the key is its owner once the owner is out.
        assert_eq!(
            admin_post(&t, &format!("/pools/{pool}/backends/{owner}/maint")).status,
            200
        );
        let next = home(&t, pool, user);
        assert_ne!(next, owner);
        assert_eq!(
            admin_post(&t, &format!("/pools/{pool}/backends/{owner}/ready")).status,
            200
        );
        assert_eq!(home(&t, pool, user), owner, "{pool}: owner back");

        // One slow request holds the owner: B = ceil(1.0 × 2 / 3) = 1, so the next request
        // for the same key skips it.
        // A request's in-flight slot is given back just after its response is sent: wait until
        // the earlier ones are all accounted, or the owner may still look busy.
        let idle = || t.metric_sum("tether_backend_in_flight", &[("pool", pool)]) == 0.0;
        wait_for("nothing in flight", Duration::from_secs(5), idle);
        let o = backend(&bs, &owner);
        o.set_delay(Duration::from_secs(3));
        let url = t.url(&format!("/{pool}"));
        let slow = std::thread::spawn(move || get(&url, &[("x-user", "alice")]));
        wait_for("the slow request in flight", Duration::from_secs(5), || {
            t.metric_sum("tether_backend_in_flight", &[("pool", pool)]) == 1.0
                && t.metric(
                    "tether_backend_in_flight",
                    &[("pool", pool), ("backend", &owner)],
                ) == Some(1.0)
        });
        let over = get(&t.url(&format!("/{pool}")), &[("x-user", user)]);
        assert_eq!(over.status, 200);
        assert_eq!(
            over.backend(),
            Some(next.as_str()),
            "{pool}: overflow goes clockwise"
        );
        assert_eq!(
            t.metric(
                "tether_hash_overflow_total",
                &[("pool", pool), ("backend", &owner)]
            ),
            Some(1.0),
            "{pool}: the skipped owner is counted"
        );
        let cookie = over.set_cookie(&format!("tether_{pool}"));
        let slow = slow.join().unwrap();
        assert_eq!(slow.backend(), Some(owner.as_str()));
        o.set_delay(Duration::ZERO);
        wait_for("nothing in flight", Duration::from_secs(5), idle);

        // With nothing in flight the owner takes the key again…
        assert_eq!(home(&t, pool, user), owner, "{pool}: owner under the bound");
        // …but the overflowed session of a pinned pool stays where it went.
        match pool {
            "pinned" => {
                let c = cookie.expect("pin = true sets the affinity cookie");
                for _ in 0..3 {
                    let r = get(
                        &t.url("/pinned"),
                        &[("x-user", user), ("Cookie", &format!("tether_pinned={c}"))],
                    );
                    assert_eq!(
                        r.backend(),
                        Some(next.as_str()),
                        "the pinned session sticks"
                    );
                }
            }
            _ => assert_eq!(cookie, None, "no cookie without pin"),
        }
    }
    // Counted only when skipped.
    let text = t.metrics();
    assert!(
        text.contains("# HELP tether_hash_overflow_total "),
        "HELP text"
    );
    assert_eq!(t.metric_sum("tether_hash_overflow_total", &[]), 2.0);
}

// ----- 2. Reload impact preview -----

fn impact_config(bs: &[&Backend], extra_server: &str) -> String {
    let mut s = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
{extra_server}
[affinity]
secret = "{SECRET}"
[[route]]
path_prefix = "/"
pool = "shop"
[[route]]
path_prefix = "/api"
pool = "sessions"
[pool.shop]
policy = "cookie"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "query:user"
"#
    );
    for pool in ["shop", "sessions"] {
        s.push_str(&backend_tables(pool, bs));
    }
    s
}

/// The two percentages of `pool`'s impact line.
fn shares(out: &str, pool: &str) -> (f64, f64) {
    let prefix = format!("pool {pool}: ");
    let line = out
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no impact line for {pool} in:\n{out}"));
    let pct: Vec<f64> = line
        .split('%')
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        line.contains("% of hash keys move, ") && line.ends_with("% of cookie sessions migrate"),
        "{line}"
    );
    (pct[0] / 100.0, pct[1] / 100.0)
}

#[test]
fn check_against_prints_the_shares_that_real_routing_shows() {
    let bs: Vec<Backend> = (1..=5).map(|i| Backend::start(&format!("n{i}"))).collect();
    let old: Vec<&Backend> = bs[..4].iter().collect();
    // n4 leaves, n5 joins.
    let new: Vec<&Backend> = bs.iter().filter(|b| b.name() != "n4").collect();
    let t = Tether::start(&impact_config(&old, ""));
    let dir = tempfile::tempdir().unwrap();
    let (old_path, new_path) = (dir.path().join("old.toml"), dir.path().join("new.toml"));
    let fill = |c: String| {
        c.replace("{LISTEN}", &t.listen().to_string())
            .replace("{ADMIN}", &t.admin().to_string())
    };
    std::fs::write(&old_path, fill(impact_config(&old, ""))).unwrap();
    std::fs::write(&new_path, fill(impact_config(&new, ""))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["check", "-c"])
        .arg(&new_path)
        .arg("--against")
        .arg(&old_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("backends added [sessions/n5, shop/n5]")
            || stdout.contains("backends added [shop/n5, sessions/n5]"),
        "{stdout}"
    );
    assert!(stdout.contains("backends removed ["), "{stdout}");
    let (hash_share, cookie_share) = shares(&stdout, "sessions");
    assert_eq!(cookie_share, 0.25, "one of four equal weights leaves");
    assert_eq!(shares(&stdout, "shop").1, 0.25);

    // Route many keys through the running old config, reload, route them again.
    let keys = 1500;
    let route_all = || -> Vec<String> {
        (0..keys)
            .map(|i| {
                get(&t.url(&format!("/api?user=k{i}")), &[])
                    .backend()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let cookies: Vec<(String, String)> = (0..400)
        .map(|_| {
            let r = get(&t.url("/"), &[]);
            (
                r.set_cookie("tether_shop").unwrap(),
                r.backend().unwrap().to_owned(),
            )
        })
        .collect();
    let before = route_all();
    t.write_config(&impact_config(&new, ""));
    let r = admin_post(&t, "/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("% of hash keys move"),
        "the reply carries the lines: {}",
        r.body
    );
    let after = route_all();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / keys as f64;
    // Binomial standard error at 1500 keys is at most 0.013: allow four of them.
    assert!(
        (moved - hash_share).abs() < 0.052,
        "printed {hash_share}, routed {moved}"
    );
    let migrated = cookies
        .iter()
        .filter(|(c, home)| {
            get(&t.url("/"), &[("Cookie", &format!("tether_shop={c}"))]).backend()
                != Some(home.as_str())
        })
        .count() as f64
        / cookies.len() as f64;
    assert!((migrated - 0.25).abs() < 0.09, "routed {migrated}");
    // The reload logged the same lines.
    let (log_hash, log_cookie) = shares(&t.stderr(), "sessions");
    assert_eq!((log_hash, log_cookie), (hash_share, cookie_share));
}

#[test]
fn max_reload_move_refuses_with_409_unless_forced() {
    let bs: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("m{i}"))).collect();
    let all: Vec<&Backend> = bs.iter().collect();
    let guard = "max_reload_move = 0.1";
    let t = Tether::start(&impact_config(&all, guard));
    let cookie = |t: &Tether| {
        (0..50)
            .map(|_| get(&t.url("/"), &[]))
            .find(|r| r.backend() == Some("m4"))
            .and_then(|r| r.set_cookie("tether_shop"))
            .expect("a session on m4")
    };
    let c = cookie(&t);
    let on_m4 = |t: &Tether| {
        get(&t.url("/"), &[("Cookie", &format!("tether_shop={c}"))])
            .backend()
            .map(str::to_owned)
    };
    t.write_config(&impact_config(&all[..3], guard));
    let r = admin_post(&t, "/reload");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("pool shop: "), "{}", r.body);
    assert!(
        r.body.contains("25.0% of cookie sessions migrate"),
        "{}",
        r.body
    );
    assert!(r.body.contains("max_reload_move"), "{}", r.body);
    assert_eq!(
        t.metric("tether_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(t.metric("tether_config_generation", &[]), Some(1.0));
    assert_eq!(
        on_m4(&t).as_deref(),
        Some("m4"),
        "the old config keeps serving"
    );

    // SIGHUP is refused too.
    let failures = |t: &Tether| t.metric("tether_config_reloads_total", &[("result", "failure")]);
    assert_eq!(failures(&t), Some(1.0));
    t.sighup();
    wait_for("the SIGHUP reload refused", Duration::from_secs(10), || {
        failures(&t) == Some(2.0)
    });
    assert_eq!(t.metric("tether_config_generation", &[]), Some(1.0));

    // Forced, it applies.
    let r = admin_post(&t, "/reload?force=true");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(t.metric("tether_config_generation", &[]), Some(2.0));
    assert_eq!(
        t.metric("tether_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_ne!(on_m4(&t).as_deref(), Some("m4"), "m4 is gone");
    assert!(t.stderr().contains("25.0% of cookie sessions migrate"));
}

// ----- 3. Drain with a deadline, recent sessions -----

fn drain_config(bs: &[Backend]) -> String {
    let mut s = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "{SECRET}"
[[route]]
path_prefix = "/"
pool = "shop"
[[route]]
path_prefix = "/api"
pool = "sessions"
[pool.shop]
policy = "cookie"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "query:user"
"#
    );
    for pool in ["shop", "sessions"] {
        s.push_str(&backend_tables(pool, bs));
    }
    s
}

/// A cookie whose session lives on `id`.
fn session_on(t: &Tether, id: &str) -> String {
    (0..100)
        .map(|_| get(&t.url("/"), &[]))
        .find(|r| r.backend() == Some(id))
        .and_then(|r| r.set_cookie("tether_shop"))
        .unwrap_or_else(|| panic!("no session on {id}"))
}

fn by_cookie(t: &Tether, c: &str) -> String {
    get(&t.url("/"), &[("Cookie", &format!("tether_shop={c}"))])
        .backend()
        .unwrap()
        .to_owned()
}

fn rfc3339(v: &serde_json::Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

#[test]
fn a_drain_deadline_ends_in_maint_and_sessions_migrate_then() {
    let bs: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("d{i}"))).collect();
    let t = Tether::start(&drain_config(&bs));
    let c = session_on(&t, "d1");
    let before = status_backend(&t, "shop", "d1");
    assert!(before["drain_started"].is_null() && before["drain_deadline"].is_null());

    let r = admin_post(&t, "/pools/shop/backends/d1/drain?deadline=4s");
    assert_eq!(r.status, 200, "{}", r.body);
    let st = status_backend(&t, "shop", "d1");
    assert_eq!(st["state"], "drain");
    let (started, deadline) = (
        rfc3339(&st["drain_started"]),
        rfc3339(&st["drain_deadline"]),
    );
    let d = deadline.duration_since(started).unwrap();
    assert!(
        d >= Duration::from_secs(3) && d <= Duration::from_secs(5),
        "{d:?}"
    );

    // A reload in between keeps the drain and its deadline.
    let mut cfg = drain_config(&bs);
    cfg = cfg.replacen(
        "grace_period = \"1s\"",
        "grace_period = \"1s\"\nwatch = false",
        1,
    );
    t.write_config(&cfg);
    assert_eq!(admin_post(&t, "/reload").status, 200);
    assert_eq!(
        status_backend(&t, "shop", "d1")["drain_deadline"],
        st["drain_deadline"]
    );

    // While draining, the existing session stays and new ones go elsewhere.
    assert_eq!(by_cookie(&t, &c), "d1");
    for _ in 0..6 {
        assert_ne!(get(&t.url("/"), &[]).backend(), Some("d1"));
    }
    wait_for(
        "d1 in maint at the deadline",
        Duration::from_secs(10),
        || status_backend(&t, "shop", "d1")["state"] == "maint",
    );
    let st = status_backend(&t, "shop", "d1");
    assert!(
        st["drain_started"].is_null() && st["drain_deadline"].is_null(),
        "{st}"
    );
    assert_ne!(by_cookie(&t, &c), "d1", "the session migrated");
    assert_eq!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[("pool", "shop"), ("from", "d1"), ("reason", "maint")]
        ),
        1.0
    );
}

#[test]
fn ready_or_maint_before_the_deadline_cancels_it() {
    let bs: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("c{i}"))).collect();
    let t = Tether::start(&drain_config(&bs));
    assert_eq!(
        admin_post(&t, "/pools/shop/backends/c1/drain?deadline=2s").status,
        200
    );
    assert_eq!(admin_post(&t, "/pools/shop/backends/c1/ready").status, 200);
    // The path of DESIGN.md §16 spelled `/backends/{pool}/{id}/…` works too.
    assert_eq!(
        admin_post(&t, "/backends/shop/c2/drain?deadline=2s").status,
        200
    );
    assert_eq!(status_backend(&t, "shop", "c2")["state"], "drain");
    assert_eq!(admin_post(&t, "/backends/shop/c2/maint").status, 200);
    assert!(status_backend(&t, "shop", "c2")["drain_deadline"].is_null());
    assert_eq!(admin_post(&t, "/backends/shop/c2/ready").status, 200);
    // Well past both deadlines, neither went to maint.
    let until = Instant::now() + Duration::from_millis(2800);
    while Instant::now() < until {
        for id in ["c1", "c2"] {
            let st = status_backend(&t, "shop", id);
            assert_eq!(st["state"], "up", "{id}: {st}");
            assert!(st["drain_deadline"].is_null());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bad deadline is refused and changes nothing.
    let r = admin_post(&t, "/pools/shop/backends/c1/drain?deadline=soon");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        admin_post(&t, "/pools/shop/backends/c1/maint?deadline=1s").status,
        400
    );
    assert_eq!(status_backend(&t, "shop", "c1")["state"], "up");
}

#[test]
fn recent_sessions_count_distinct_sessions_whatever_the_admin_state() {
    let bs: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("r{i}"))).collect();
    let t = Tether::start(&drain_config(&bs));
    let mut cookies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..24 {
        let r = get(&t.url("/"), &[]);
        cookies
            .entry(r.backend().unwrap().to_owned())
            .or_default()
            .push(r.set_cookie("tether_shop").unwrap());
    }
    // Drain r1: its sessions keep coming, each several times.
    assert_eq!(admin_post(&t, "/pools/shop/backends/r1/drain").status, 200);
    for (id, cs) in &cookies {
        for c in cs {
            for _ in 0..2 {
                assert_eq!(&by_cookie(&t, c), id);
            }
        }
    }
    for (id, cs) in &cookies {
        let n = status_backend(&t, "shop", id)["recent_sessions"]
            .as_u64()
            .unwrap();
        let want = cs.len() as u64;
        assert!(
            n.abs_diff(want) <= 1,
            "{id}: {n} recent sessions, {want} served"
        );
    }
    // Hash pools count distinct keys.
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        for _ in 0..2 {
            let b = get(&t.url(&format!("/api?user=u{i}")), &[])
                .backend()
                .unwrap()
                .to_owned();
            *per.entry(b).or_default() += 1;
        }
    }
    for (id, hits) in per {
        let n = status_backend(&t, "sessions", &id)["recent_sessions"]
            .as_u64()
            .unwrap();
        let want = (hits / 2) as u64;
        assert!(
            n.abs_diff(want) <= 1,
            "{id}: {n} recent keys, {want} served"
        );
    }
}
