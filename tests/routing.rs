//! Routing (host exact / wildcard, longest path prefix, 404), forwarding headers, request ids and
//! smooth weighted round-robin — against the real binary and in-process backends.

mod common;

use common::*;

fn config(a: &Backend, b: &Backend, c: &Backend) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"

[[route]]
host = "shop.example.com"
path_prefix = "/"
pool = "a"

[[route]]
host = "*.example.com"
pool = "b"

[[route]]
path_prefix = "/api"
pool = "b"

[[route]]
path_prefix = "/api/v2"
pool = "c"

[[route]]
host = "other.test"
path_prefix = "/only-here"
pool = "c"

[pool.a]
policy = "round_robin"
[[pool.a.backend]]
id = "a"
addr = "{}"

[pool.b]
policy = "round_robin"
[[pool.b.backend]]
id = "b"
addr = "{}"

[pool.c]
policy = "round_robin"
[[pool.c.backend]]
id = "c"
addr = "{}"
"#,
        a.addr(),
        b.addr(),
        c.addr()
    )
}

#[test]
fn host_and_longest_prefix_pick_the_pool_and_unmatched_gets_404() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let t = Tether::start(&config(&a, &b, &c));
    let via = |host: &str, path: &str| {
        let r = get(&t.url(path), &[("Host", host)]);
        (r.status, r.backend().map(str::to_owned))
    };
    assert_eq!(via("shop.example.com", "/x"), (200, Some("a".into())));
    assert_eq!(
        via("SHOP.example.com:8080", "/x"),
        (200, Some("a".into())),
        "host match ignores case and port"
    );
    assert_eq!(
        via("www.example.com", "/x"),
        (200, Some("b".into())),
        "wildcard host"
    );
    assert_eq!(via("a.b.example.com", "/"), (200, Some("b".into())));
    assert_eq!(
        via("example.com", "/api/x"),
        (200, Some("b".into())),
        "*.example.com does not match the apex"
    );
    assert_eq!(
        via("anything", "/api/v2/users"),
        (200, Some("c".into())),
        "longest prefix wins"
    );
    assert_eq!(via("anything", "/api/v1"), (200, Some("b".into())));
    assert_eq!(via("other.test", "/only-here/x"), (200, Some("c".into())));
    let r = get(&t.url("/nothing"), &[("Host", "nowhere.test")]);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.backend(),
        None,
        "a 404 from tether itself never reaches a backend"
    );
    assert_eq!(a.hits() + b.hits() + c.hits(), 8);
    assert_eq!(
        t.metric(
            "tether_requests_total",
            &[
                ("route", ""),
                ("pool", ""),
                ("backend", ""),
                ("code", "4xx")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn forwarding_headers_and_request_id() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let t = Tether::start(&config(&a, &b, &c));
    let r = get(
        &t.url("/api/x?q=1"),
        &[
            ("Host", "svc.test:1234"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("svc.test:1234")
    );
    assert_eq!(r.header("x-seen-path"), Some("/api/x?q=1"));
    let generated = r
        .header("x-request-id")
        .expect("a request id is generated")
        .to_owned();
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some(&*generated));
    let r2 = get(&t.url("/api/x"), &[]);
    assert_ne!(
        r2.header("x-request-id"),
        Some(&*generated),
        "ids are unique"
    );
    let r3 = get(&t.url("/api/x"), &[("X-Request-Id", "abc-123")]);
    assert_eq!(r3.header("x-request-id"), Some("abc-123"));
    assert_eq!(r3.seen_header("x-request-id").as_deref(), Some("abc-123"));
}

#[test]
fn smooth_weighted_round_robin_interleaves() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[route]]
pool = "web"
[pool.web]
policy = "round_robin"
[[pool.web.backend]]
id = "a"
addr = "{}"
weight = 3
[[pool.web.backend]]
id = "b"
addr = "{}"
weight = 2
"#,
        a.addr(),
        b.addr()
    ));
    let seq: Vec<String> = (0..20)
        .map(|_| get(&t.url("/"), &[]).backend().unwrap().to_owned())
        .collect();
    // 3:2 over four periods of five.
    let count_a = seq.iter().filter(|s| *s == "a").count();
    assert_eq!(count_a, 12, "3:2 over 20 requests: {seq:?}");
    // Smooth (a b a b a, repeated), not bursty (a a a b b): never three a's or two b's in a
    // row, wherever the sequence starts. A bursty 3:2 has both in every period.
    let text: String = seq.iter().map(|s| s.as_str()).collect();
    assert!(!text.contains("aaa"), "a burst of a: {seq:?}");
    assert!(!text.contains("bb"), "a burst of b: {seq:?}");
}
