//! HTTP/2 parity downstream (issue 9.6): over TLS with ALPN `h2`, routing, cookie and hash
//! affinity, failover, request ids, trace context and metrics behave exactly as over HTTP/1.1 —
//! checked by sending the same requests both ways to one tether and comparing what the client
//! and the backends see: each stream walks the same stages on tether's own loop (DESIGN.md §20).

mod common;

use std::time::Duration;

use common::h2::{cert_of, tls_fixture, H2};
use common::*;

struct Setup {
    t: Tether,
    tls: std::net::SocketAddr,
    web: [Backend; 2],
    shop: [Backend; 3],
    hash: [Backend; 3],
}

fn setup() -> Setup {
    let web = [Backend::start("w1"), Backend::start("w2")];
    let shop = [
        Backend::start("s1"),
        Backend::start("s2"),
        Backend::start("s3"),
    ];
    let hash = [
        Backend::start("h1"),
        Backend::start("h2"),
        Backend::start("h3"),
    ];
    let tls_port = free_port();
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 2
grace_period = "1s"
[[server.tls]]
listen = "127.0.0.1:{tls_port}"
certs = [{{ cert = "{cert}", key = "{key}" }}]

[affinity]
secret = "http2-parity-secret-0123456789abcdef"

[[route]]
host = "shop.test"
pool = "shop"

[[route]]
path_prefix = "/hash"
pool = "hash"

[[route]]
path_prefix = "/web"
pool = "web"

[pool.web]
policy = "round_robin"
{web}
[pool.shop]
policy = "cookie"
retries = 2
{shop}
[pool.hash]
policy = "hash"
retries = 2
[pool.hash.hash]
key = "header:X-User"
{hash}"#,
        cert = tls_fixture("cert.pem"),
        key = tls_fixture("key.pem"),
        web = backend_tables("web", &web),
        shop = backend_tables("shop", &shop),
        hash = backend_tables("hash", &hash),
    ));
    let tls = format!("127.0.0.1:{tls_port}").parse().unwrap();
    Setup {
        t,
        tls,
        web,
        shop,
        hash,
    }
}

fn h2(s: &Setup, authority: &str) -> H2 {
    H2::connect(
        s.tls,
        cert_of(&tls_fixture("cert.pem")),
        "localhost",
        authority,
    )
}

#[test]
fn routing_request_ids_trace_context_and_metrics_match_http1() {
    let s = setup();
    let mut c = h2(&s, "localhost");
    // Routing by path and by host (:authority), and the 404 of an unrouted request.
    let r = c.get("/web/x", &[("x-request-id", "h2-id-1")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.backend().unwrap().starts_with('w'));
    assert_eq!(r.header("x-request-id"), Some("h2-id-1"));
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some("h2-id-1"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("localhost")
    );
    let generated = c.get("/web/y", &[]);
    let id = generated
        .header("x-request-id")
        .expect("a generated id")
        .to_owned();
    assert_eq!(generated.seen_header("x-request-id").as_deref(), Some(&*id));
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = c.get("/web/z", &[("traceparent", tp)]);
    let sent = traced.seen_header("traceparent").unwrap();
    assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent != tp);
    assert_eq!(c.get("/nothing-here", &[]).status, 404);
    let mut shop = h2(&s, "shop.test");
    let r = shop.get("/", &[]);
    assert!(r.backend().unwrap().starts_with('s'), "{r:?}");

    // Round robin over one connection's streams alternates like it does over HTTP/1.1.
    let h2_order: Vec<String> = (0..4)
        .map(|_| c.get("/web/", &[]).backend().unwrap().to_owned())
        .collect();
    assert_ne!(h2_order[0], h2_order[1], "{h2_order:?}");
    assert_eq!(h2_order[0], h2_order[2], "{h2_order:?}");
    let h1_order: Vec<String> = (0..4)
        .map(|_| get(&s.t.url("/web/"), &[]).backend().unwrap().to_owned())
        .collect();
    assert_ne!(h1_order[0], h1_order[1], "{h1_order:?}");

    // The same metric families and labels count HTTP/2 requests.
    let web_2xx =
        |t: &Tether| t.metric_sum("tether_requests_total", &[("pool", "web"), ("code", "2xx")]);
    let before = web_2xx(&s.t);
    for _ in 0..5 {
        assert_eq!(c.get("/web/", &[]).status, 200);
    }
    // A request is accounted once its response has been handed to the connection: the client
    // can read it a moment before the count moves.
    wait_for("the five requests counted", Duration::from_secs(5), || {
        web_2xx(&s.t) >= before + 5.0
    });
    assert_eq!(web_2xx(&s.t), before + 5.0);
    let hits: usize = s.web.iter().map(Backend::hits).sum();
    assert_eq!(
        hits,
        3 + 4 + 4 + 5,
        "every request reached one backend once"
    );
}

#[test]
fn cookie_affinity_is_shared_between_http1_and_http2_and_fails_over_the_same() {
    let s = setup();
    let mut c = h2(&s, "shop.test");
    let first = c.get("/", &[]);
    assert_eq!(first.status, 200);
    let home = first.backend().unwrap().to_owned();
    let cookie = first.set_cookie("tether_shop").expect("Set-Cookie over h2");
    let jar = format!("tether_shop={cookie}");
    // The session sticks over HTTP/2, and the same cookie sticks over HTTP/1.1.
    for _ in 0..5 {
        let r = c.get("/", &[("cookie", &jar)]);
        assert_eq!(r.backend(), Some(&*home));
        assert!(
            r.set_cookie("tether_shop").is_none(),
            "a hit sets no cookie"
        );
        assert_eq!(
            r.seen_header("cookie"),
            None,
            "the affinity cookie is stripped"
        );
    }
    let h1 = get(&s.t.url("/"), &[("host", "shop.test"), ("cookie", &jar)]);
    assert_eq!(h1.backend(), Some(&*home));
    // An HTTP/1.1-issued cookie sticks over HTTP/2.
    let h1_first = get(&s.t.url("/"), &[("host", "shop.test")]);
    let h1_home = h1_first.backend().unwrap().to_owned();
    let h1_jar = format!(
        "tether_shop={}",
        h1_first.set_cookie("tether_shop").unwrap()
    );
    assert_eq!(
        c.get("/", &[("cookie", &h1_jar)]).backend(),
        Some(&*h1_home)
    );

    // Failover: the home dies; over HTTP/2 the session moves with a new cookie, counted, and
    // HTTP/1.1 with the old cookie lands on the very same new home.
    s.shop.iter().find(|b| b.name() == home).unwrap().stop();
    let moved = c.get("/", &[("cookie", &jar)]);
    assert_eq!(moved.status, 200, "{moved:?}");
    let new_home = moved.backend().unwrap().to_owned();
    assert_ne!(new_home, home);
    assert!(
        moved.set_cookie("tether_shop").is_some(),
        "re-issued over h2"
    );
    let h1_moved = get(&s.t.url("/"), &[("host", "shop.test"), ("cookie", &jar)]);
    assert_eq!(h1_moved.backend(), Some(&*new_home));
    assert!(
        s.t.metric_sum(
            "tether_affinity_migrations_total",
            &[("pool", "shop"), ("from", &home), ("to", &new_home)]
        ) >= 1.0
    );
}

#[test]
fn hash_affinity_and_its_failover_agree_between_http1_and_http2() {
    let s = setup();
    let mut c = h2(&s, "localhost");
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let owner_h2 = |c: &mut H2, u: &str| {
        let r = c.get("/hash/", &[("x-user", u)]);
        assert_eq!(r.status, 200, "{r:?}");
        r.backend().unwrap().to_owned()
    };
    let owner_h1 = |u: &str| {
        get(&s.t.url("/hash/"), &[("x-user", u)])
            .backend()
            .unwrap()
            .to_owned()
    };
    let owners: Vec<String> = users.iter().map(|u| owner_h2(&mut c, u)).collect();
    for (u, o) in users.iter().zip(&owners) {
        assert_eq!(&owner_h1(u), o, "{u}");
        assert_eq!(&owner_h2(&mut c, u), o, "{u}");
    }
    let distinct: std::collections::BTreeSet<_> = owners.iter().collect();
    assert!(distinct.len() >= 2, "keys spread: {owners:?}");
    // Kill the owner of user-0: its keys fail over to the same backend on both protocols.
    let victim = owners[0].clone();
    s.hash.iter().find(|b| b.name() == victim).unwrap().stop();
    for (u, o) in users.iter().zip(&owners) {
        let (a, b) = (owner_h2(&mut c, u), owner_h1(u));
        assert_eq!(a, b, "{u}");
        if *o != victim {
            assert_eq!(&a, o, "keys of live backends stay ({u})");
        } else {
            assert_ne!(a, victim);
        }
    }
}
