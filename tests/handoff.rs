//! Session hand-off (DESIGN.md §25): the request that moves a session tells its new home where it
//! came from (`Tether-Session-From: id=OLD; reason=R[; addr=IP:PORT]`), with the old backend's
//! address only while it can still answer; drains with `handoff=true`; the header is tether's
//! alone (a client's copy never reaches a backend); two instances say the same thing.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const HEADER: &str = "tether-session-from";

fn config(policy: &str, backends: &[&Backend], extra_pool: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "handoff-test-secret-0123456789"
[[route]]
pool = "shop"
[pool.shop]
{policy}
{extra_pool}
[pool.shop.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
{}"#,
        backend_tables("shop", backends)
    )
}

const COOKIE: &str = "policy = \"cookie\"";
const PINNED_HASH: &str =
    "policy = \"hash\"\n[pool.shop.hash]\nkey = \"header:x-user\"\npin = true";

/// A new session (a different `x-user` each time for hash pools) until one lands on `want`:
/// its cookie header.
fn session_on(t: &Tether, want: &str) -> String {
    for i in 0..200 {
        let user = format!("user-{i}");
        let r = get(&t.url("/"), &[("x-user", &user)]);
        assert_eq!(r.status, 200);
        if r.backend() == Some(want) {
            let c = r.set_cookie("tether_shop").expect("a session cookie");
            return format!("tether_shop={c}");
        }
    }
    panic!("no session landed on {want} in 200 tries");
}

fn with_cookie(cookie: &str) -> [(&str, &str); 2] {
    [("cookie", cookie), ("x-user", "returning")]
}

#[test]
fn a_session_moved_by_failure_names_its_old_backend_without_an_address() {
    for policy in [COOKIE, PINNED_HASH] {
        let b: Vec<Backend> = ["b1", "b2"].iter().map(|n| Backend::start(n)).collect();
        let t = Tether::start(&config(policy, &[&b[0], &b[1]], ""));
        let cookie = session_on(&t, "b1");
        let r = get(&t.url("/"), &with_cookie(&cookie));
        assert_eq!(
            r.seen_header(HEADER),
            None,
            "{policy}: a hit carries nothing"
        );
        b[0].set_health(503);
        wait_for("b1 down", WAIT, || {
            t.status()["pools"][0]["backends"][0]["health"] == "down"
        });
        let r = get(&t.url("/"), &with_cookie(&cookie));
        assert_eq!(r.backend(), Some("b2"));
        assert_eq!(
            r.seen_header(HEADER).as_deref(),
            Some("id=b1; reason=down"),
            "{policy}: the old backend is down: no address to ask"
        );
        // Only the request that moves the session: the next one, with its new cookie, is a hit.
        let moved = format!(
            "tether_shop={}",
            r.set_cookie("tether_shop").expect("re-pinned")
        );
        let r = get(&t.url("/"), &with_cookie(&moved));
        assert_eq!((r.backend(), r.seen_header(HEADER)), (Some("b2"), None));
        assert_eq!(
            t.metric_sum("tether_session_handoffs_total", &[("pool", "shop")]),
            0.0,
            "nothing to hand over from a dead backend"
        );
    }
}

#[test]
fn a_drain_with_handoff_moves_sessions_while_the_old_backend_still_answers() {
    let b: Vec<Backend> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&config(COOKIE, &[&b[0], &b[1], &b[2]], ""));
    let cookies: Vec<String> = (0..4).map(|_| session_on(&t, "b1")).collect();
    for c in &cookies {
        assert_eq!(get(&t.url("/"), &with_cookie(c)).backend(), Some("b1"));
    }
    let r = post(
        &t.admin_url("/pools/shop/backends/b1/drain?deadline=30s&handoff=true"),
        &[],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let reply: serde_json::Value = serde_json::from_str(&r.body).expect("JSON reply");
    assert_eq!(reply["handoff"], true, "{reply}");
    let old = b[0].addr().to_string();
    let mut homes = Vec::new();
    for c in &cookies {
        let r = get(&t.url("/"), &with_cookie(c));
        assert_eq!(r.status, 200);
        let home = r.backend().expect("x-backend").to_owned();
        assert_ne!(home, "b1", "a handed-off session goes to its failover home");
        let from = r.seen_header(HEADER).expect("the hand-off header");
        assert_eq!(from, format!("id=b1; reason=drain; addr={old}"));
        // The new home's code asks the old backend for the session's state: it still answers.
        let state = get(&format!("http://{old}/session-state"), &[]);
        assert_eq!((state.status, state.backend()), (200, Some("b1")));
        let again = format!(
            "tether_shop={}",
            r.set_cookie("tether_shop").expect("re-pinned")
        );
        let r = get(&t.url("/"), &with_cookie(&again));
        assert_eq!(
            (r.backend(), r.seen_header(HEADER)),
            (Some(home.as_str()), None)
        );
        homes.push(home);
    }
    // No new session lands on a draining backend.
    for i in 0..20 {
        let r = get(&t.url("/"), &[("x-user", &format!("new-{i}"))]);
        assert_ne!(r.backend(), Some("b1"));
    }
    wait_for("the hand-offs counted", WAIT, || {
        t.metric_sum(
            "tether_session_handoffs_total",
            &[("pool", "shop"), ("from", "b1")],
        ) == 4.0
    });
    for home in ["b2", "b3"] {
        let n = homes.iter().filter(|h| *h == home).count() as f64;
        assert_eq!(
            t.metric(
                "tether_session_handoffs_total",
                &[("pool", "shop"), ("from", "b1"), ("to", home)]
            )
            .unwrap_or(0.0),
            n
        );
    }
    assert_eq!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[("pool", "shop"), ("from", "b1"), ("reason", "drain")]
        ),
        4.0
    );
    let s = t.status();
    let b1 = &s["pools"][0]["backends"][0];
    assert_eq!(b1["id"], "b1");
    assert_eq!(b1["handoff"], true, "{b1}");
    assert_eq!(b1["handed_off"], 4, "{b1}");
    assert_eq!(b1["still_pinned"], 0, "4 sessions seen, 4 handed off: {b1}");
    assert_eq!(b1["state"], "drain", "{b1}");
}

#[test]
fn maint_and_removal_give_the_address_of_a_backend_still_up() {
    let b: Vec<Backend> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&config(COOKIE, &[&b[0], &b[1], &b[2]], ""));
    let on1 = session_on(&t, "b1");
    let on2 = session_on(&t, "b2");
    let r = post(&t.admin_url("/pools/shop/backends/b1/maint"), &[], "");
    assert_eq!(r.status, 200);
    let r = get(&t.url("/"), &with_cookie(&on1));
    assert_eq!(
        r.seen_header(HEADER),
        Some(format!("id=b1; reason=maint; addr={}", b[0].addr()))
    );
    // b2 leaves the pool by a reload while it is still up.
    let generation = t.metric("tether_config_generation", &[]).unwrap_or(0.0);
    t.write_config(&config(COOKIE, &[&b[0], &b[2]], ""));
    t.sighup();
    wait_for("the reload", WAIT, || {
        t.metric("tether_config_generation", &[]).unwrap_or(0.0) > generation
    });
    let r = get(&t.url("/"), &with_cookie(&on2));
    assert_eq!(r.backend(), Some("b3"), "b1 is in maint, b2 gone");
    assert_eq!(
        r.seen_header(HEADER),
        Some(format!("id=b2; reason=removed; addr={}", b[1].addr()))
    );
    assert_eq!(
        t.metric(
            "tether_session_handoffs_total",
            &[("pool", "shop"), ("from", "b2"), ("to", "b3")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_header_is_tethers_alone() {
    let b: Vec<Backend> = ["b1", "b2"].iter().map(|n| Backend::start(n)).collect();
    // Default name, on a sticky pool; a round-robin pool; a custom name; turned off.
    for (policy, extra, name) in [
        (COOKIE, "", Some("tether-session-from")),
        ("policy = \"round_robin\"", "", None),
        (
            COOKIE,
            "[pool.shop.affinity]\nhandoff_header = \"X-Moved-From\"",
            Some("x-moved-from"),
        ),
        (COOKIE, "[pool.shop.affinity]\nhandoff_header = false", None),
    ] {
        let t = Tether::start(&config(policy, &[&b[0], &b[1]], extra));
        let forged = [
            (
                "tether-session-from",
                "id=b9; reason=drain; addr=10.0.0.1:1",
            ),
            ("x-moved-from", "id=b9"),
        ];
        let r = get(&t.url("/"), &forged);
        assert_eq!(r.status, 200);
        assert_eq!(r.seen_header("tether-session-from"), None, "{extra}");
        if name == Some("x-moved-from") {
            assert_eq!(
                r.seen_header("x-moved-from"),
                None,
                "the custom name is stripped too"
            );
        }
        if policy == COOKIE {
            // A move: the header (under its name) or, turned off, nothing.
            let c = format!(
                "tether_shop={}",
                r.set_cookie("tether_shop").expect("cookie")
            );
            let home = r.backend().expect("x-backend").to_owned();
            let r = post(
                &t.admin_url(&format!("/pools/shop/backends/{home}/maint")),
                &[],
                "",
            );
            assert_eq!(r.status, 200);
            let r = get(&t.url("/"), &[("cookie", c.as_str()), forged[0], forged[1]]);
            let value = name.and_then(|n| r.seen_header(n));
            match name {
                Some(_) => assert!(
                    value
                        .as_deref()
                        .is_some_and(|v| v.starts_with(&format!("id={home}; reason=maint; addr="))),
                    "{extra}: {value:?}"
                ),
                None => {
                    assert_eq!(r.seen_header("tether-session-from"), None);
                    // Not tether's header here: a client's x-moved-from is the app's business.
                    assert_eq!(r.seen_header("x-moved-from").as_deref(), Some("id=b9"));
                }
            }
            let _ = post(
                &t.admin_url(&format!("/pools/shop/backends/{home}/ready")),
                &[],
                "",
            );
        }
    }
}

#[test]
fn two_instances_name_the_same_origin() {
    let b: Vec<Backend> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let cfg = config(COOKIE, &[&b[0], &b[1], &b[2]], "");
    let (t1, t2) = (Tether::start(&cfg), Tether::start(&cfg));
    let cookies: Vec<String> = (0..3).map(|_| session_on(&t1, "b1")).collect();
    for t in [&t1, &t2] {
        let r = post(&t.admin_url("/pools/shop/backends/b1/maint"), &[], "");
        assert_eq!(r.status, 200);
    }
    for c in &cookies {
        let (r1, r2) = (
            get(&t1.url("/"), &with_cookie(c)),
            get(&t2.url("/"), &with_cookie(c)),
        );
        assert_eq!(r1.backend(), r2.backend(), "the same failover home");
        let from = r1.seen_header(HEADER).expect("t1's header");
        assert_eq!(Some(from), r2.seen_header(HEADER), "the same origin");
    }
}
