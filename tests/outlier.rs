//! Backend protection (DESIGN.md §13): outlier ejection on consecutive 5xx and on consecutive
//! failures, for a time that grows with repeated ejection, never more than
//! `max_ejected_percent` of a pool; sessions of an ejected backend migrate (reason `ejected`);
//! it returns by itself. Slow start ramps a returning backend's share up.

mod common;

use common::raw::*;
use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A backend that answers 200 (or 500 while `failing`) with `x-backend: name`.
fn switchable(name: &'static str, failing: Arc<AtomicBool>) -> RawBackend {
    RawBackend::start(move |head, r, w| {
        read_body(head, r);
        let status = if failing.load(Ordering::SeqCst) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        write!(
            w,
            "HTTP/1.1 {status}\r\nx-backend: {name}\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        )
        .unwrap();
        true
    })
}

fn state_of(t: &Tether, id: &str) -> String {
    let s = t.status();
    s["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap()
}

fn config(policy: &str, extra: &str, backends: &[(&str, String)]) -> String {
    let mut c = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "outlier-test-secret-0123456789abcd"
[[route]]
pool = "p"
[pool.p]
policy = "{policy}"
retries = 0
{extra}
"#
    );
    for (id, addr) in backends {
        c.push_str(&format!(
            "[[pool.p.backend]]\nid = \"{id}\"\naddr = \"{addr}\"\n"
        ));
    }
    c
}

#[test]
fn consecutive_5xx_eject_for_growing_times_and_the_backend_returns_by_itself() {
    let bad = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicBool::new(false));
    let (a, b, c) = (
        switchable("a", bad.clone()),
        switchable("b", ok.clone()),
        switchable("c", ok.clone()),
    );
    let t = Tether::start(&config(
        "round_robin",
        "[pool.p.outlier]\nconsecutive_5xx = 3\nbase_ejection = \"1s\"\nmax_ejection = \"10s\"\n",
        &[
            ("a", a.addr.to_string()),
            ("b", b.addr.to_string()),
            ("c", c.addr.to_string()),
        ],
    ));
    // Round robin: "a" answers every third request, 500 each time; its third in a row ejects it.
    let mut fives = 0;
    for _ in 0..9 {
        if get(&t.url("/"), &[]).status == 500 {
            fives += 1;
        }
    }
    assert_eq!(fives, 3);
    wait_for("a ejected", Duration::from_secs(3), || {
        state_of(&t, "a") == "ejected"
    });
    let ejected_at = Instant::now();
    assert_eq!(
        t.metric_sum(
            "tether_outlier_ejections_total",
            &[("backend", "a"), ("reason", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        t.metric_sum(
            "tether_backend_state",
            &[("backend", "a"), ("state", "ejected")]
        ),
        1.0
    );
    // While ejected it takes no traffic.
    while ejected_at.elapsed() < Duration::from_millis(600) {
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 200, "an ejected backend takes no traffic");
    }
    // It returns by itself after base_ejection...
    wait_for("a back", Duration::from_secs(3), || {
        state_of(&t, "a") == "up"
    });
    let first = ejected_at.elapsed();
    assert!(
        first < Duration::from_millis(2500),
        "first ejection lasted {first:?}"
    );
    // ...still failing, it is ejected again, now for 2 × base_ejection.
    let mut n = 0;
    while state_of(&t, "a") != "ejected" && n < 60 {
        let _ = get(&t.url("/"), &[]);
        n += 1;
    }
    assert_eq!(state_of(&t, "a"), "ejected");
    let again = Instant::now();
    wait_for("a back again", Duration::from_secs(5), || {
        state_of(&t, "a") == "up"
    });
    let second = again.elapsed();
    assert!(
        second >= Duration::from_millis(1700),
        "the second ejection in a row lasts longer ({second:?})"
    );
    assert_eq!(
        t.metric_sum(
            "tether_outlier_ejections_total",
            &[("backend", "a"), ("reason", "5xx")]
        ),
        2.0
    );
}

#[test]
fn never_more_than_max_ejected_percent_of_the_pool() {
    let bad = Arc::new(AtomicBool::new(true));
    let backends: Vec<RawBackend> = ["a", "b", "c"]
        .into_iter()
        .map(|n| switchable(n, bad.clone()))
        .collect();
    let t = Tether::start(&config(
        "round_robin",
        "[pool.p.outlier]\nconsecutive_5xx = 2\nbase_ejection = \"30s\"\nmax_ejected_percent = 50\n",
        &backends
            .iter()
            .zip(["a", "b", "c"])
            .map(|(b, n)| (n, b.addr.to_string()))
            .collect::<Vec<_>>(),
    ));
    for _ in 0..30 {
        let _ = get(&t.url("/"), &[]);
    }
    // 50 % of 3, rounded down: one backend at most.
    wait_for("one ejected", Duration::from_secs(3), || {
        t.metric_sum("tether_outlier_ejections_total", &[]) >= 1.0
    });
    let ejected = ["a", "b", "c"]
        .iter()
        .filter(|id| state_of(&t, id) == "ejected")
        .count();
    assert_eq!(ejected, 1);
    assert_eq!(t.metric_sum("tether_outlier_ejections_total", &[]), 1.0);
}

#[test]
fn sessions_of_an_ejected_backend_migrate_with_reason_ejected() {
    let failing = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let (a, b) = (
        switchable("a", failing[0].clone()),
        switchable("b", failing[1].clone()),
    );
    let t = Tether::start(&config(
        "cookie",
        "[pool.p.outlier]\nconsecutive_5xx = 2\nbase_ejection = \"30s\"\n",
        &[("a", a.addr.to_string()), ("b", b.addr.to_string())],
    ));
    let first = get(&t.url("/"), &[]);
    let home = first.backend().unwrap().to_owned();
    let cookie = first.set_cookie("tether_p").unwrap();
    let jar = format!("tether_p={cookie}");
    failing[if home == "a" { 0 } else { 1 }].store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(&t.url("/"), &[("cookie", &jar)]).status, 500);
    }
    wait_for("home ejected", Duration::from_secs(3), || {
        state_of(&t, &home) == "ejected"
    });
    let moved = get(&t.url("/"), &[("cookie", &jar)]);
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend().unwrap(), home);
    assert!(
        moved.set_cookie("tether_p").is_some(),
        "the cookie names the new home"
    );
    assert_eq!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[("from", &home), ("reason", "ejected")]
        ),
        1.0
    );
}

#[test]
fn consecutive_connection_failures_eject_without_health_checks() {
    let ok = Arc::new(AtomicBool::new(false));
    let live = switchable("live", ok);
    let dead = free_port_outside_ephemeral_range(); // nothing listens here
    let t = Tether::start(&config(
        "round_robin",
        "[pool.p.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
        &[
            ("live", live.addr.to_string()),
            ("dead", format!("127.0.0.1:{dead}")),
        ],
    ));
    for _ in 0..6 {
        let _ = try_get(&t.url("/"), &[]);
    }
    wait_for("dead ejected", Duration::from_secs(3), || {
        state_of(&t, "dead") == "ejected"
    });
    assert_eq!(
        t.metric_sum(
            "tether_outlier_ejections_total",
            &[("backend", "dead"), ("reason", "failures")]
        ),
        1.0
    );
    for _ in 0..10 {
        assert_eq!(get(&t.url("/"), &[]).status, 200);
    }
}

#[test]
fn slow_start_ramps_a_returning_backend_up() {
    let ok = Arc::new(AtomicBool::new(false));
    let (a, b) = (switchable("a", ok.clone()), switchable("b", ok.clone()));
    let t = Tether::start(&config(
        "round_robin",
        "slow_start = \"3s\"\n",
        &[("a", a.addr.to_string()), ("b", b.addr.to_string())],
    ));
    let post = |action: &str| {
        post(
            &t.admin_url(&format!("/pools/p/backends/b/{action}")),
            &[],
            "",
        )
    };
    assert_eq!(post("maint").status, 200);
    assert_eq!(post("ready").status, 200);
    let weight = || {
        t.status()["pools"][0]["backends"][1]["effective_weight"]
            .as_f64()
            .unwrap()
    };
    let w0 = weight();
    assert!(w0 < 0.5, "starts near 10 % of its weight ({w0})");
    let to_b = (0..40)
        .filter(|_| get(&t.url("/"), &[]).backend() == Some("b"))
        .count();
    assert!(
        to_b <= 12,
        "b gets a small share while ramping up ({to_b} of 40)"
    );
    wait_for("full weight", Duration::from_secs(6), || weight() == 1.0);
    // Full weight: plain alternation again.
    std::thread::sleep(Duration::from_millis(600));
    let to_b = (0..20)
        .filter(|_| get(&t.url("/"), &[]).backend() == Some("b"))
        .count();
    assert_eq!(to_b, 10);
}
