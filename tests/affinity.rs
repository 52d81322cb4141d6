//! Session affinity end to end: signed cookies (attributes, opacity, tampering), failover when
//! the pinned backend is down / in maint / refuses connections, no flap-back after recovery,
//! drain, hash pools (keys, fallback, pin) and the fast 503 when nothing is eligible.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SECRET: &str = "test-secret-0123456789abcdefghij";
const WAIT: Duration = Duration::from_secs(10);

/// base64url without padding, as tether encodes cookies.
fn base64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {s}"),
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn backends(n: usize) -> Vec<Backend> {
    (1..=n).map(|i| Backend::start(&format!("s{i}"))).collect()
}

/// A cookie pool "shop" with fast health checks, plus whatever `extra` adds to the pool table.
fn cookie_config(bs: &[Backend], extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "{SECRET}"
[[route]]
pool = "shop"
[pool.shop]
policy = "cookie"
retries = 2
{extra}
[pool.shop.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
{}
"#,
        backend_tables("shop", bs)
    )
}

fn state_of(t: &Tether, pool: &str, id: &str) -> String {
    let s = t.status();
    s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .and_then(|p| {
            p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == id)
        })
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn wait_state(t: &Tether, pool: &str, id: &str, state: &str) {
    wait_for(&format!("{pool}/{id} to be {state}"), WAIT, || {
        state_of(t, pool, id) == state
    });
}

fn with_cookie(t: &Tether, name: &str, value: &str) -> Resp {
    get(
        &t.url("/cart"),
        &[("Cookie", &format!("other=1; {name}={value}"))],
    )
}

#[test]
fn cookie_pins_sessions_with_opaque_signed_values() {
    // Ids long enough that random cookie bytes cannot spell one by chance.
    let bs: Vec<Backend> = ["shop-one", "shop-two", "shop-three"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&cookie_config(
        &bs,
        "[pool.shop.cookie]\nname = \"sid\"\nmax_age = \"1h\"\nsecure = true\nsame_site = \"Strict\"\ndomain = \"example.com\"\npath = \"/\"\ncache_private = true",
    ));
    let first = get(&t.url("/cart"), &[]);
    assert_eq!(first.status, 200);
    let line = first
        .set_cookie_line("sid")
        .expect("a new session gets a cookie");
    for attr in [
        "Path=/",
        "Max-Age=3600",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Domain=example.com",
    ] {
        assert!(line.contains(attr), "{attr} missing in {line}");
    }
    assert_eq!(
        first.header("cache-control"),
        Some("private"),
        "cache_private: a response that sets the cookie is not for shared caches"
    );
    let value = first.set_cookie("sid").unwrap();
    let home = first.backend().unwrap().to_owned();
    for b in &bs {
        // Neither as text nor inside the decoded bytes.
        assert!(!value.contains(b.name()), "cookie names no backend id");
        let decoded = base64url_decode(&value);
        assert!(
            !decoded
                .windows(b.name().len())
                .any(|w| w == b.name().as_bytes()),
            "cookie names no backend id"
        );
        assert!(
            !value.contains(&b.addr().port().to_string()),
            "cookie reveals no address"
        );
    }
    for _ in 0..10 {
        let r = with_cookie(&t, "sid", &value);
        assert_eq!(r.backend(), Some(&*home));
        assert_eq!(
            r.set_cookie("sid"),
            None,
            "a hit does not re-set the cookie"
        );
    }
    assert_eq!(affinity_count(&t, "hit", 10.0), Some(10.0));
    assert_eq!(affinity_count(&t, "new", 1.0), Some(1.0));

    // Tampered, truncated and garbage cookies are treated as absent: a new session, counted.
    let mut tampered = value.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        tampered.as_str(),
        &value[..value.len() - 2],
        "garbage",
        "x%00y",
    ] {
        let r = with_cookie(&t, "sid", bad);
        assert_eq!(
            r.status, 200,
            "a bad cookie is never an error to the client"
        );
        assert!(
            r.set_cookie("sid").is_some(),
            "a bad cookie gets a fresh one"
        );
    }
    assert_eq!(affinity_count(&t, "invalid", 4.0), Some(4.0));
}

#[test]
fn session_moves_when_its_backend_fails_and_does_not_flap_back() {
    let bs = backends(3);
    let t = Tether::start(&cookie_config(&bs, ""));
    let r = get(&t.url("/cart"), &[]);
    let cookie = r.set_cookie("tether_shop").unwrap();
    let home = r.backend().unwrap().to_owned();
    let hb = bs.iter().find(|b| b.name() == home).unwrap();

    hb.set_health(500);
    wait_state(&t, "shop", &home, "down");
    let moved = with_cookie(&t, "tether_shop", &cookie);
    assert_eq!(moved.status, 200);
    let new_home = moved.backend().unwrap().to_owned();
    assert_ne!(new_home, home);
    let new_cookie = moved
        .set_cookie("tether_shop")
        .expect("the cookie is rewritten");
    assert_ne!(new_cookie, cookie);
    assert_eq!(
        t.metric(
            "tether_affinity_migrations_total",
            &[
                ("pool", "shop"),
                ("from", &home),
                ("to", &new_home),
                ("reason", "down")
            ]
        ),
        Some(1.0)
    );
    // Deterministic: the old cookie keeps landing on the same new home while the backend is down.
    for _ in 0..5 {
        assert_eq!(
            with_cookie(&t, "tether_shop", &cookie).backend(),
            Some(&*new_home)
        );
    }

    hb.set_health(200);
    wait_state(&t, "shop", &home, "up");
    for _ in 0..10 {
        let r = with_cookie(&t, "tether_shop", &new_cookie);
        assert_eq!(r.backend(), Some(&*new_home), "no flap-back after recovery");
    }
}

#[test]
fn maint_migrates_sessions_and_drain_keeps_them() {
    let bs = backends(3);
    let t = Tether::start(&cookie_config(&bs, ""));
    // Sessions on every backend.
    let mut sessions: Vec<(String, String)> = Vec::new();
    for _ in 0..60 {
        let r = get(&t.url("/"), &[]);
        sessions.push((
            r.set_cookie("tether_shop").unwrap(),
            r.backend().unwrap().to_owned(),
        ));
    }
    let admin = |id: &str, action: &str| {
        let r = post(
            &t.admin_url(&format!("/pools/shop/backends/{id}/{action}")),
            &[],
            "",
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };

    admin("s1", "drain");
    wait_state(&t, "shop", "s1", "drain");
    for (c, home) in &sessions {
        assert_eq!(
            with_cookie(&t, "tether_shop", c).backend(),
            Some(home.as_str()),
            "drain keeps existing sessions"
        );
    }
    for _ in 0..30 {
        assert_ne!(
            get(&t.url("/"), &[]).backend(),
            Some("s1"),
            "drain takes no new sessions"
        );
    }

    admin("s1", "maint");
    wait_state(&t, "shop", "s1", "maint");
    let on_s1: Vec<&(String, String)> = sessions.iter().filter(|(_, h)| h == "s1").collect();
    assert!(!on_s1.is_empty());
    let mut rewritten = Vec::new();
    for (c, _) in &on_s1 {
        let r = with_cookie(&t, "tether_shop", c);
        assert_ne!(r.backend(), Some("s1"), "maint takes no traffic");
        rewritten.push((
            r.set_cookie("tether_shop").unwrap(),
            r.backend().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[("pool", "shop"), ("from", "s1"), ("reason", "maint")]
        ),
        on_s1.len() as f64
    );
    for (c, home) in sessions.iter().filter(|(_, h)| h != "s1") {
        assert_eq!(
            with_cookie(&t, "tether_shop", c).backend(),
            Some(home.as_str()),
            "other sessions stay"
        );
    }
    admin("s1", "ready");
    wait_state(&t, "shop", "s1", "up");
    for (c, home) in &rewritten {
        assert_eq!(
            with_cookie(&t, "tether_shop", c).backend(),
            Some(home.as_str()),
            "moved sessions stay moved"
        );
    }
}

#[test]
fn refused_connection_is_retried_and_the_session_moves() {
    let bs = backends(3);
    // Slow health checks: the refusal is seen by the proxy first.
    let config = cookie_config(&bs, "")
        .replace("interval = \"100ms\"", "interval = \"30s\"")
        .replace("timeout = \"100ms\"", "timeout = \"1s\"");
    let t = Tether::start(&config);
    let r = get(&t.url("/"), &[]);
    let cookie = r.set_cookie("tether_shop").unwrap();
    let home = r.backend().unwrap().to_owned();
    let hb = bs.iter().find(|b| b.name() == home).unwrap();
    hb.stop();

    let moved = with_cookie(&t, "tether_shop", &cookie);
    assert_eq!(
        moved.status, 200,
        "a refused connection is retried on another backend"
    );
    let new_home = moved.backend().unwrap().to_owned();
    assert_ne!(new_home, home);
    let new_cookie = moved
        .set_cookie("tether_shop")
        .expect("cookie rewritten to the new home");
    assert_eq!(
        t.metric(
            "tether_affinity_migrations_total",
            &[
                ("pool", "shop"),
                ("from", &home),
                ("to", &new_home),
                ("reason", "connect_error")
            ]
        ),
        Some(1.0)
    );
    assert!(t.metric_sum("tether_retries_total", &[("pool", "shop")]) >= 1.0);
    assert!(
        t.metric_sum(
            "tether_upstream_connect_failures_total",
            &[("backend", &home)]
        ) >= 1.0
    );
    hb.restart();
    for _ in 0..5 {
        assert_eq!(
            with_cookie(&t, "tether_shop", &new_cookie).backend(),
            Some(&*new_home)
        );
    }
}

#[test]
fn all_backends_down_gives_a_quick_503_with_retry_after() {
    let bs = backends(2);
    let t = Tether::start(&cookie_config(&bs, ""));
    for b in &bs {
        b.set_health(503);
    }
    for b in &bs {
        wait_state(&t, "shop", b.name(), "down");
    }
    let started = Instant::now();
    let r = get(&t.url("/"), &[]);
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 comes at once, no hanging"
    );
    let hits: usize = bs.iter().map(|b| b.hits()).sum();
    assert_eq!(hits, 0);
    assert_eq!(
        t.metric("tether_backend_up", &[("pool", "shop"), ("backend", "s1")]),
        Some(0.0)
    );
}

fn hash_config(bs: &[Backend], pin: bool, key: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "{SECRET}"
[[route]]
pool = "sessions"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "{key}"
pin = {pin}
[pool.sessions.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
{}
"#,
        backend_tables("sessions", bs)
    )
}

#[test]
fn hash_keys_are_consistent_fall_back_and_fail_over() {
    let bs = backends(3);
    let t = Tether::start(&hash_config(&bs, false, "header:X-User"));
    let owner = |user: &str| {
        get(&t.url("/"), &[("X-User", user)])
            .backend()
            .unwrap()
            .to_owned()
    };
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = users.iter().map(|u| owner(u)).collect();
    for (u, b) in users.iter().zip(&before) {
        assert_eq!(&owner(u), b, "same key, same backend");
    }
    let distinct: std::collections::BTreeSet<&String> = before.iter().collect();
    assert_eq!(distinct.len(), 3, "keys spread over all backends");
    // No key: round-robin fallback reaches every backend.
    let seen: std::collections::BTreeSet<String> = (0..9)
        .map(|_| get(&t.url("/"), &[]).backend().unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 3);

    bs[0].set_health(500);
    wait_state(&t, "sessions", "s1", "down");
    for (u, b) in users.iter().zip(&before) {
        let now = owner(u);
        if b == "s1" {
            assert_ne!(now, "s1");
        } else {
            assert_eq!(&now, b, "only the failed backend's keys move");
        }
    }
}

#[test]
fn pinned_hash_sessions_stay_after_recovery() {
    let bs = backends(3);
    let t = Tether::start(&hash_config(&bs, true, "cookie:JSESSIONID"));
    let jsid = |i: usize| format!("JSESSIONID=session-{i}");
    // Find a session whose owner is s1.
    let (i, first) = (0..200)
        .map(|i| (i, get(&t.url("/"), &[("Cookie", &jsid(i))])))
        .find(|(_, r)| r.backend() == Some("s1"))
        .expect("some key hashes to s1");
    let pin = first
        .set_cookie("tether_sessions")
        .expect("pin sets the affinity cookie");
    let both = format!("{}; tether_sessions={pin}", jsid(i));
    bs[0].set_health(500);
    wait_state(&t, "sessions", "s1", "down");
    let moved = get(&t.url("/"), &[("Cookie", &both)]);
    assert_eq!(
        moved.seen_header("cookie"),
        Some(jsid(i)),
        "the hash key cookie reaches the backend"
    );
    let new_home = moved.backend().unwrap().to_owned();
    assert_ne!(new_home, "s1");
    let new_pin = moved.set_cookie("tether_sessions").expect("pin rewritten");
    bs[0].set_health(200);
    wait_state(&t, "sessions", "s1", "up");
    let after = format!("{}; tether_sessions={new_pin}", jsid(i));
    for _ in 0..5 {
        assert_eq!(
            get(&t.url("/"), &[("Cookie", &after)]).backend(),
            Some(&*new_home),
            "pinned: no flap-back"
        );
    }
    // Without the pin cookie the plain hash goes home again.
    assert_eq!(
        get(&t.url("/"), &[("Cookie", &jsid(i))]).backend(),
        Some("s1")
    );
}

/// `tether_affinity_total{pool="shop",outcome}` once it has reached `want` (within 5 s): a
/// request is accounted after its response is written, so the client can read the response
/// a moment before the count moves. Returns the value then read, for an exact assertion.
fn affinity_count(t: &Tether, outcome: &str, want: f64) -> Option<f64> {
    let read = || {
        t.metric(
            "tether_affinity_total",
            &[("pool", "shop"), ("outcome", outcome)],
        )
    };
    eventually(Duration::from_secs(5), || read() >= Some(want));
    read()
}
