//! Statelessness: two tether processes with the same configuration (and cookie secret) send every
//! cookie and every hash key to the same backend — before and after a backend fails — with no
//! shared store.

mod common;

use common::*;
use std::time::Duration;

fn config(bs: &[Backend]) -> String {
    let mut s = String::from(
        r#"
[server]
listen = ["{LISTEN}"]
admin = "{ADMIN}"
grace_period = "1s"
[affinity]
secret = "shared-secret-of-the-fleet-0123"
[[route]]
path_prefix = "/"
pool = "shop"
[[route]]
path_prefix = "/api"
pool = "sessions"
[pool.shop]
policy = "cookie"
[pool.shop.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "query:user"
[pool.sessions.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
"#,
    );
    for pool in ["shop", "sessions"] {
        s.push_str(&backend_tables(pool, bs));
    }
    s
}

#[test]
fn two_instances_agree_on_every_session_before_and_after_a_failure() {
    let bs: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("n{i}"))).collect();
    let cfg = config(&bs);
    let a = Tether::start(&cfg);
    let b = Tether::start(&cfg);

    // Sessions issued by instance A.
    let cookies: Vec<String> = (0..40)
        .map(|_| get(&a.url("/"), &[]).set_cookie("tether_shop").unwrap())
        .collect();
    let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let by_cookie = |t: &Tether, c: &str| {
        get(&t.url("/"), &[("Cookie", &format!("tether_shop={c}"))])
            .backend()
            .unwrap()
            .to_owned()
    };
    let by_user = |t: &Tether, u: &str| {
        get(&t.url(&format!("/api?user={u}")), &[])
            .backend()
            .unwrap()
            .to_owned()
    };
    let snapshot = |t: &Tether| -> (Vec<String>, Vec<String>) {
        (
            cookies.iter().map(|c| by_cookie(t, c)).collect(),
            users.iter().map(|u| by_user(t, u)).collect(),
        )
    };
    let before = snapshot(&a);
    assert_eq!(before, snapshot(&b), "same config, same decisions");

    // n2 fails; both instances see it through their own health checks.
    bs[1].set_health(500);
    for t in [&a, &b] {
        wait_for("n2 down", Duration::from_secs(10), || {
            t.metric("tether_backend_up", &[("pool", "shop"), ("backend", "n2")]) == Some(0.0)
                && t.metric(
                    "tether_backend_up",
                    &[("pool", "sessions"), ("backend", "n2")],
                ) == Some(0.0)
        });
    }
    let after_a = snapshot(&a);
    let after_b = snapshot(&b);
    assert_eq!(after_a, after_b, "both instances pick the same new homes");
    assert!(before.0.contains(&"n2".to_string()) && before.1.contains(&"n2".to_string()));
    for (old, new) in before
        .0
        .iter()
        .zip(&after_a.0)
        .chain(before.1.iter().zip(&after_a.1))
    {
        if old == "n2" {
            assert_ne!(new, "n2");
        } else {
            assert_eq!(old, new, "sessions of healthy backends do not move");
        }
    }
}
