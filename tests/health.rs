//! Health checking details: expected statuses, passive marking from connection failures, and
//! fail-open pools.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn config(bs: &[Backend], health: &str, pool_extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[route]]
pool = "web"
[pool.web]
policy = "round_robin"
{pool_extra}
[pool.web.health]
path = "/healthz"
{health}
{}
"#,
        backend_tables("web", bs)
    )
}

fn up(t: &Tether, id: &str) -> Option<f64> {
    t.metric("tether_backend_up", &[("pool", "web"), ("backend", id)])
}

#[test]
fn expected_statuses_decide_health_and_results_are_counted() {
    let bs = vec![Backend::start("a"), Backend::start("b")];
    bs[1].set_health(204);
    let t = Tether::start(&config(
        &bs,
        "interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\nexpect = [204]",
        "",
    ));
    // a answers 200, which is not in `expect`: down after `fall` checks; b (204) stays up.
    wait_for("a down", WAIT, || up(&t, "a") == Some(0.0));
    assert_eq!(up(&t, "b"), Some(1.0));
    assert!(
        t.metric_sum(
            "tether_health_checks_total",
            &[("backend", "a"), ("result", "failure")]
        ) >= 2.0
    );
    assert!(
        t.metric_sum(
            "tether_health_checks_total",
            &[("backend", "b"), ("result", "success")]
        ) >= 1.0
    );
    for _ in 0..6 {
        assert_eq!(get(&t.url("/"), &[]).backend(), Some("b"));
    }
    // rise = 1: one good check brings it back.
    bs[0].set_health(204);
    wait_for("a up", WAIT, || up(&t, "a") == Some(1.0));
}

#[test]
fn connection_failures_mark_a_backend_down_at_once() {
    let bs = vec![Backend::start("a")];
    // The active check runs at start and then only every hour: anything that happens in
    // between is the passive marking.
    let t = Tether::start(&config(
        &bs,
        "interval = \"1h\"\ntimeout = \"1s\"\nrise = 1\nfall = 2",
        "retries = 0",
    ));
    wait_for("a checked once", WAIT, || {
        t.metric_sum("tether_health_checks_total", &[("backend", "a")]) >= 1.0
    });
    assert_eq!(get(&t.url("/"), &[]).status, 200);
    bs[0].stop();
    assert_eq!(get(&t.url("/"), &[]).status, 502);
    assert_eq!(up(&t, "a"), Some(1.0), "one failure is not `fall`");
    assert_eq!(get(&t.url("/"), &[]).status, 502);
    // `fall` consecutive connection failures: down without waiting for an active check (the
    // next is an hour away). The gauge follows the pool's routing view, which the control
    // thread rebuilds right after the request that marked it (not on the request's thread):
    // once it says down, no request is routed there.
    wait_for("`fall` connection failures mark a down", WAIT, || {
        up(&t, "a") == Some(0.0)
    });
    let r = get(&t.url("/"), &[]);
    assert_eq!(r.status, 503, "no eligible backend left");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        t.metric_sum(
            "tether_upstream_connect_failures_total",
            &[("backend", "a")]
        ),
        2.0
    );
}

#[test]
fn fail_open_keeps_serving_when_nothing_is_healthy() {
    let bs = vec![Backend::start("a"), Backend::start("b")];
    let t = Tether::start(&config(
        &bs,
        "interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\nhost = \"app.internal\"",
        "fail_open = true",
    ));
    for b in &bs {
        b.set_health(500);
    }
    wait_for("both down", WAIT, || {
        up(&t, "a") == Some(0.0) && up(&t, "b") == Some(0.0)
    });
    // fail_open: with nothing healthy, traffic still goes to every backend instead of a 503.
    let seen: std::collections::BTreeSet<String> = (0..6)
        .map(|_| {
            let r = get(&t.url("/"), &[]);
            assert_eq!(r.status, 200);
            r.backend().unwrap().to_owned()
        })
        .collect();
    assert_eq!(seen.len(), 2);
}

#[test]
fn health_checks_send_the_configured_host_and_path() {
    use common::raw::*;
    use std::io::Write;
    let b = RawBackend::start(|head, r, w| {
        read_body(head, r);
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        false
    });
    let _t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[route]]
pool = "web"
[pool.web]
policy = "round_robin"
[pool.web.health]
path = "/check?deep=1"
interval = "100ms"
timeout = "100ms"
host = "app.internal"
[[pool.web.backend]]
id = "a"
addr = "{}"
"#,
        b.addr
    ));
    wait_for("a health check", WAIT, || !b.heads().is_empty());
    let head = b.heads().remove(0);
    assert!(head.starts_with("GET /check?deep=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        header_of(&head, "host").as_deref(),
        Some("app.internal"),
        "{head}"
    );
}
