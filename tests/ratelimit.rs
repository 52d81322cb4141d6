//! Rate limiting with local buckets (DESIGN.md §14), as a client sees it: a burst is allowed
//! exactly, then `429` with `Retry-After` and the `RateLimit-*` headers, refilled at the rate;
//! every key spec; requests without the key are not limited; several limits on a route (the
//! first refusal answers); a refused request never reaches a backend; buckets survive a reload
//! that does not change their limit.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn config(backend: &Backend, routes: &str, limits: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
{routes}
[pool.web]
policy = "round_robin"
{}
{limits}
"#,
        backend_tables("web", &[backend])
    )
}

fn user(name: &str) -> [(&str, &str); 1] {
    [("x-user", name)]
}

/// A 429 of a limit with this burst whose `Retry-After` is `retry_after` whole seconds (for a
/// limit of one token a minute: 55–60, whatever time the test itself took).
#[track_caller]
fn assert_refused(r: &Resp, burst: &str, retry_after: &str) {
    assert_eq!(r.status, 429, "refused: {r:?}");
    let secs = |h: &str| -> u64 {
        r.header(h)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{h}: {r:?}"))
    };
    let retry = secs("retry-after");
    match retry_after {
        "60" => assert!((55..=60).contains(&retry), "{r:?}"),
        want => assert_eq!(retry.to_string(), want, "{r:?}"),
    }
    assert_eq!(secs("ratelimit-reset"), retry, "{r:?}");
    assert_eq!(r.header("ratelimit-limit"), Some(burst), "{r:?}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"), "{r:?}");
    assert!(r.backend().is_none(), "answered by tether, not a backend");
    assert!(r.header("x-request-id").is_some());
}

#[track_caller]
fn assert_allowed(r: &Resp) {
    assert_eq!(r.status, 200, "allowed: {r:?}");
    assert_eq!(r.backend(), Some("web-1"));
    for h in [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert!(
            r.header(h).is_none(),
            "an allowed response carries no {h}: {r:?}"
        );
    }
}

fn results(t: &Tether, limit: &str, result: &str) -> f64 {
    t.metric(
        "tether_rate_limit_total",
        &[("limit", limit), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_burst_is_allowed_exactly_then_refused_and_refilled_at_the_rate() {
    let b = Backend::start("web-1");
    let t = Tether::start(&config(
        &b,
        "[[route]]\npool = \"web\"\nrate_limits = [\"per_user\"]\n",
        "[rate_limit.per_user]\nkey = \"header:X-User\"\nrate = 2\nper = \"1s\"\nburst = 3\n",
    ));
    let url = t.url("/api");
    let start = Instant::now();
    for _ in 0..3 {
        assert_allowed(&get(&url, &user("alice")));
    }
    let r = get(&url, &user("alice"));
    assert_refused(&r, "3", "1");
    assert_eq!(r.body, "rate limit exceeded\n");
    assert_eq!(b.hits(), 3, "the refused request never reached the backend");
    // Another user has a bucket of their own.
    assert_allowed(&get(&url, &user("bob")));

    // One token comes back 500 ms after the burst began (2 per second); a refused request takes
    // none, so polling does not delay it.
    wait_for("a token to come back", WAIT, || {
        get(&url, &user("alice")).status == 200
    });
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "refilled after {:?}, before 1/rate",
        start.elapsed()
    );
    // Exactly one.
    assert_refused(&get(&url, &user("alice")), "3", "1");
    assert_eq!(b.hits(), 5);
    assert_eq!(results(&t, "per_user", "allowed"), 5.0);
    assert!(results(&t, "per_user", "limited") >= 2.0);
    assert_eq!(results(&t, "per_user", "no_key"), 0.0);
    // The refusals are counted as tether's own 4xx answers of the route.
    assert!(
        t.metric_sum(
            "tether_requests_total",
            &[("pool", "web"), ("backend", ""), ("code", "4xx")]
        ) >= 2.0
    );
}

/// `GET path` over a connection from `source` (an address of 127.0.0.0/8): the status.
fn get_from(source: IpAddr, to: SocketAddr, path: &str) -> u16 {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source, 0).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn every_key_spec_limits_by_its_key_and_keyless_requests_pass() {
    let b = Backend::start("web-1");
    let mut routes = String::new();
    let mut limits = String::new();
    for (name, prefix, key) in [
        ("by_header", "/h/", "header:X-User"),
        ("by_cookie", "/c/", "cookie:sid"),
        ("by_query", "/q/", "query:user"),
        ("by_ip", "/ip/", "source_ip"),
        ("by_path", "/p/", "path"),
        ("by_default", "/d/", ""),
    ] {
        routes.push_str(&format!(
            "[[route]]\npath_prefix = \"{prefix}\"\npool = \"web\"\nrate_limits = [\"{name}\"]\n"
        ));
        limits.push_str(&format!("[rate_limit.{name}]\nrate = 1\nper = \"60s\"\n"));
        if !key.is_empty() {
            limits.push_str(&format!("key = \"{key}\"\n"));
        }
    }
    let t = Tether::start(&config(&b, &routes, &limits));
    let u = |p: &str| t.url(p);

    // header:X-User — the name in any case.
    assert_allowed(&get(&u("/h/x"), &[("X-User", "a")]));
    assert_refused(&get(&u("/h/x"), &[("x-user", "a")]), "1", "60");
    assert_allowed(&get(&u("/h/x"), &[("x-user", "b")]));
    // cookie:sid — among other cookies.
    assert_allowed(&get(&u("/c/x"), &[("cookie", "theme=dark; sid=s1")]));
    assert_refused(&get(&u("/c/x"), &[("cookie", "sid=s1")]), "1", "60");
    assert_allowed(&get(&u("/c/x"), &[("cookie", "sid=s2; theme=dark")]));
    // query:user
    assert_allowed(&get(&u("/q/x?user=u1&x=1"), &[]));
    assert_refused(&get(&u("/q/y?x=2&user=u1"), &[]), "1", "60");
    assert_allowed(&get(&u("/q/x?user=u2"), &[]));
    // path — the whole path, not the prefix.
    assert_allowed(&get(&u("/p/one"), &[]));
    assert_refused(&get(&u("/p/one"), &[]), "1", "60");
    assert_allowed(&get(&u("/p/two"), &[]));
    // source_ip, and the default key (source_ip too): by the client's address.
    let (a, b2): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    for prefix in ["/ip/", "/d/"] {
        assert_eq!(get_from(a, t.listen(), prefix), 200);
        assert_eq!(get_from(a, t.listen(), prefix), 429);
        assert_eq!(
            get_from(b2, t.listen(), prefix),
            200,
            "{prefix}: another address"
        );
        assert_eq!(get_from(b2, t.listen(), prefix), 429);
    }
    // Requests without the key (or with an empty one) are not limited by that limit.
    for _ in 0..3 {
        assert_allowed(&get(&u("/h/x"), &[]));
        assert_allowed(&get(&u("/h/x"), &[("x-user", "")]));
        assert_allowed(&get(&u("/c/x"), &[("cookie", "theme=dark")]));
        assert_allowed(&get(&u("/q/x?other=1"), &[]));
    }
    assert_eq!(results(&t, "by_header", "no_key"), 6.0);
    assert_eq!(results(&t, "by_cookie", "no_key"), 3.0);
    assert_eq!(results(&t, "by_query", "no_key"), 3.0);
    for l in ["by_header", "by_cookie", "by_query", "by_path"] {
        assert_eq!(results(&t, l, "allowed"), 2.0, "{l}");
        assert_eq!(results(&t, l, "limited"), 1.0, "{l}");
    }
    for l in ["by_ip", "by_default"] {
        assert_eq!(results(&t, l, "allowed"), 2.0, "{l}");
        assert_eq!(results(&t, l, "limited"), 2.0, "{l}");
    }
    // Nothing refused reached the backend: 2 allowed per key route, 2 per address route, 12
    // keyless.
    assert_eq!(b.hits(), 4 * 2 + 2 * 2 + 12);
    let text = t.metrics();
    assert!(text.contains("# HELP tether_rate_limit_total "), "{text}");
}

#[test]
fn the_first_limit_that_refuses_answers() {
    let b = Backend::start("web-1");
    let t = Tether::start(&config(
        &b,
        "[[route]]\npool = \"web\"\nrate_limits = [\"per_user\", \"per_tenant\"]\n",
        "[rate_limit.per_user]\nkey = \"header:X-User\"\nrate = 1\nper = \"60s\"\nburst = 2\n\
         [rate_limit.per_tenant]\nkey = \"header:X-Tenant\"\nrate = 1\nper = \"60s\"\nburst = 3\n",
    ));
    let url = t.url("/");
    let req = |u: &'static str| get(&url, &[("x-user", u), ("x-tenant", "acme")]);
    assert_allowed(&req("alice"));
    assert_allowed(&req("alice"));
    // alice's own limit refuses first (and the tenant's budget is not touched by it).
    assert_refused(&req("alice"), "2", "60");
    assert_allowed(&req("bob"));
    // bob's own limit allows, the tenant's (3, used by alice twice and bob once) refuses.
    assert_refused(&req("bob"), "3", "60");
    assert_eq!(results(&t, "per_user", "limited"), 1.0);
    assert_eq!(results(&t, "per_tenant", "limited"), 1.0);
    assert_eq!(results(&t, "per_tenant", "allowed"), 3.0);
    // A request without a tenant is limited by the user limit alone.
    assert_allowed(&get(&url, &user("carol")));
    assert_eq!(results(&t, "per_tenant", "no_key"), 1.0);
    assert_eq!(b.hits(), 4);
    // A refused POST: its body never reaches the backend either.
    let r = post(&url, &user("alice"), "payload");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(b.hits(), 4);
}

#[test]
fn buckets_survive_a_reload_that_leaves_their_limit_unchanged() {
    let b = Backend::start("web-1");
    let limit = |burst: u32| {
        format!("[rate_limit.per_user]\nkey = \"header:X-User\"\nrate = 1\nper = \"60s\"\nburst = {burst}\n")
    };
    let route = "[[route]]\npool = \"web\"\nrate_limits = [\"per_user\"]\n";
    let t = Tether::start(&config(&b, route, &limit(2)));
    let url = t.url("/");
    assert_allowed(&get(&url, &user("alice")));
    assert_allowed(&get(&url, &user("alice")));
    assert_refused(&get(&url, &user("alice")), "2", "60");

    let reload = |cfg: &str| {
        let before = t.metric("tether_config_generation", &[]).unwrap_or(0.0);
        t.write_config(cfg);
        t.sighup();
        wait_for("the reload", WAIT, || {
            t.metric("tether_config_generation", &[]).unwrap_or(0.0) > before
        });
        assert_eq!(
            t.metric("tether_config_last_reload_successful", &[]),
            Some(1.0)
        );
    };
    // An unrelated change (a new pool and route): alice's budget is still spent.
    let other = Backend::start("other-1");
    let extra = format!(
        "[[route]]\npath_prefix = \"/other/\"\npool = \"other\"\n[pool.other]\npolicy = \"round_robin\"\n{}",
        backend_tables("other", &[&other])
    );
    reload(&config(&b, &format!("{route}{extra}"), &limit(2)));
    assert_refused(&get(&url, &user("alice")), "2", "60");
    assert_eq!(
        get(&t.url("/other/x"), &user("alice")).backend(),
        Some("other-1")
    );
    // The counters go on.
    assert_eq!(results(&t, "per_user", "limited"), 2.0);

    // A changed limit starts with full buckets of its new size.
    reload(&config(&b, &format!("{route}{extra}"), &limit(3)));
    for _ in 0..3 {
        assert_allowed(&get(&url, &user("alice")));
    }
    assert_refused(&get(&url, &user("alice")), "3", "60");

    // A limit no longer configured: its series go, and the route is not limited any more.
    reload(&config(&b, "[[route]]\npool = \"web\"\n", ""));
    assert_allowed(&get(&url, &user("alice")));
    assert_eq!(
        t.metric(
            "tether_rate_limit_total",
            &[("limit", "per_user"), ("result", "allowed")]
        ),
        None
    );
}
