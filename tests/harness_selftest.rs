//! Self-test of the integration-test harness (`tests/common`): the parts that do not need the
//! tether binary — polling, ports, in-process backends, the HTTP client's `Resp` helpers and the
//! Prometheus text parser. Tests that run tether live in their own files.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const PATIENCE: Duration = Duration::from_secs(5);

fn url(b: &Backend, path: &str) -> String {
    format!("http://{}{path}", b.addr())
}

// ----- polling and ports -----

#[test]
fn eventually_returns_true_as_soon_as_the_condition_holds() {
    let mut calls = 0;
    assert!(eventually(PATIENCE, || {
        calls += 1;
        calls == 3
    }));
    assert_eq!(calls, 3);
}

#[test]
fn eventually_gives_up_at_the_deadline() {
    let started = Instant::now();
    let mut calls = 0;
    assert!(!eventually(Duration::from_millis(100), || {
        calls += 1;
        false
    }));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // Polled every 20 ms: a handful of calls, not a busy loop.
    assert!((2..=10).contains(&calls), "{calls} calls");
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for: the impossible")]
fn wait_for_panics_with_what_it_waited_for() {
    wait_for("the impossible", Duration::from_millis(50), || false);
}

#[test]
fn free_port_is_bindable_on_loopback() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("free port can be bound");
}

// ----- backends -----

#[test]
fn backend_answers_with_its_name_and_echoes_the_request() {
    let b = Backend::start("alpha");
    assert_eq!(b.name(), "alpha");
    assert!(b.addr().ip().is_loopback());
    assert_ne!(b.addr().port(), 0);

    let r = get(
        &url(&b, "/some/path?q=1&r=two"),
        &[("X-Custom", "v1"), ("Cookie", "a=b")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "alpha");
    assert_eq!(r.backend(), Some("alpha"));
    assert_eq!(r.header("X-BACKEND"), Some("alpha"), "case-insensitive");
    assert_eq!(r.header("x-seen-path"), Some("/some/path?q=1&r=two"));
    assert_eq!(r.header("x-seen-method"), Some("GET"));

    let seen = r.seen_headers().expect("x-seen-headers");
    assert!(seen.is_object());
    assert_eq!(seen["x-custom"], "v1", "{seen}");
    assert_eq!(seen["cookie"], "a=b", "{seen}");
    assert_eq!(seen["host"], b.addr().to_string(), "{seen}");
    assert_eq!(r.seen_header("X-Custom").as_deref(), Some("v1"));
    let raw = r.header("x-seen-headers").unwrap();
    assert!(!raw.contains(": ") && !raw.contains('\n'), "compact: {raw}");

    assert_eq!(b.hits(), 1);
    assert_eq!(b.health_hits(), 0);
    get(&url(&b, "/"), &[]);
    assert_eq!(b.hits(), 2);
}

#[test]
fn backend_joins_repeated_request_headers() {
    let b = Backend::start("multi");
    let r = get(&url(&b, "/"), &[("x-dup", "one"), ("x-dup", "two")]);
    assert_eq!(r.seen_header("x-dup").as_deref(), Some("one, two"));
}

#[test]
fn backend_counts_post_bodies() {
    let b = Backend::start("poster");
    let r = post(
        &url(&b, "/submit"),
        &[("content-type", "text/plain")],
        "hello body",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "poster");
    assert_eq!(r.header("x-seen-method"), Some("POST"));
    assert_eq!(r.header("x-seen-body-len"), Some("10"));
    assert_eq!(b.hits(), 1);
}

#[test]
fn health_path_answers_the_configured_status_and_counts_apart() {
    let b = Backend::start("h");
    let r = get(&url(&b, "/healthz"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("h"));
    b.set_health(503);
    assert_eq!(get(&url(&b, "/healthz"), &[]).status, 503);
    b.set_health(204);
    assert_eq!(get(&url(&b, "/healthz?probe=1"), &[]).status, 204);
    assert_eq!(b.health_hits(), 3);
    assert_eq!(b.hits(), 0);
    // Non-health paths are unaffected by the health status.
    assert_eq!(get(&url(&b, "/"), &[]).status, 200);
    assert_eq!(b.hits(), 1);
}

#[test]
fn stop_refuses_connections_and_restart_reuses_the_port() {
    let b = Backend::start("flappy");
    let addr = b.addr();
    assert_eq!(get(&url(&b, "/"), &[]).status, 200);

    b.stop();
    assert!(!b.is_running());
    assert!(try_get(&url(&b, "/"), &[]).is_err());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    b.stop(); // idempotent

    b.restart();
    assert!(b.is_running());
    assert_eq!(b.addr(), addr);
    let r = get(&url(&b, "/again"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("flappy"));
    assert_eq!(b.hits(), 2, "counters survive a restart");
    b.restart(); // no-op while running
    assert_eq!(get(&url(&b, "/"), &[]).status, 200);
}

#[test]
fn stop_closes_open_keep_alive_connections() {
    let b = Backend::start("ka");
    let mut conn = TcpStream::connect(b.addr()).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /first HTTP/1.1\r\nHost: ka\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("ka"), "whole response in one read: {head}");

    b.stop();
    // The idle keep-alive connection is closed by the server: EOF (or a reset), never a hang.
    match conn.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "unexpected data after stop: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

#[test]
fn delay_holds_responses_and_in_flight_is_observable() {
    let b = Backend::start("slow");
    let delay = Duration::from_millis(400);
    b.set_delay(delay);
    let u = url(&b, "/slow");
    let started = Instant::now();
    let client = std::thread::spawn(move || get(&u, &[]));

    wait_for("the request to reach the backend", PATIENCE, || {
        b.in_flight() == 1
    });
    assert_eq!(b.hits(), 1, "counted on arrival");
    let r = client.join().unwrap();
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(r.body, "slow");
    wait_for("in-flight back to 0", PATIENCE, || b.in_flight() == 0);

    // Health checks are never delayed.
    let started = Instant::now();
    assert_eq!(get(&url(&b, "/healthz"), &[]).status, 200);
    assert!(started.elapsed() < delay, "{:?}", started.elapsed());

    b.set_delay(Duration::ZERO);
    let started = Instant::now();
    get(&url(&b, "/"), &[]);
    assert!(started.elapsed() < delay, "{:?}", started.elapsed());
}

#[test]
fn stop_aborts_in_flight_requests() {
    let b = Backend::start("cut");
    b.set_delay(Duration::from_secs(30));
    let u = url(&b, "/");
    let client = std::thread::spawn(move || try_get(&u, &[]));
    wait_for("request in flight", PATIENCE, || b.in_flight() == 1);
    let started = Instant::now();
    b.stop();
    assert!(started.elapsed() < PATIENCE);
    assert!(client.join().unwrap().is_err(), "the client sees the cut");
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn dropping_a_backend_stops_it() {
    let b = Backend::start("gone");
    let addr = b.addr();
    drop(b);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn client_does_not_follow_redirects_or_fail_on_error_statuses() {
    let b = Backend::start("x");
    b.set_health(302);
    let r = get(&url(&b, "/healthz"), &[]);
    assert_eq!(r.status, 302);
    b.set_health(500);
    assert_eq!(get(&url(&b, "/healthz"), &[]).status, 500);
}

#[test]
fn client_sends_a_custom_host_header() {
    let b = Backend::start("vhost");
    let r = get(&url(&b, "/"), &[("Host", "shop.example.com")]);
    assert_eq!(r.seen_header("host").as_deref(), Some("shop.example.com"));
}

// ----- Resp helpers -----

fn resp_with(headers: &[(&str, &str)]) -> Resp {
    Resp {
        status: 200,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: String::new(),
    }
}

#[test]
fn resp_header_lookups_are_case_insensitive() {
    let r = resp_with(&[("x-a", "1"), ("X-A", "2"), ("x-b", "3")]);
    assert_eq!(r.header("X-a"), Some("1"));
    assert_eq!(r.headers_all("x-A"), vec!["1", "2"]);
    assert!(r.headers_all("x-missing").is_empty());
    assert_eq!(r.header("x-missing"), None);
    assert_eq!(r.backend(), None);
}

#[test]
fn set_cookie_finds_the_named_cookie() {
    let r = resp_with(&[
        ("set-cookie", "other=zzz; Path=/"),
        (
            "set-cookie",
            "tether_web=abc.def=; Path=/; HttpOnly; SameSite=Lax",
        ),
        ("set-cookie", "tether_web2=nope"),
        ("set-cookie", "bare"),
    ]);
    assert_eq!(r.set_cookie("tether_web").as_deref(), Some("abc.def="));
    assert_eq!(
        r.set_cookie_line("tether_web").as_deref(),
        Some("tether_web=abc.def=; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(r.set_cookie("other").as_deref(), Some("zzz"));
    assert_eq!(r.set_cookie("tether"), None);
    assert_eq!(r.set_cookie("bare"), None);
    assert_eq!(r.set_cookie("missing"), None);

    // The last one wins, as in a browser.
    let r = resp_with(&[("Set-Cookie", "s=1"), ("Set-Cookie", "s=2; Max-Age=0")]);
    assert_eq!(r.set_cookie("s").as_deref(), Some("2"));
}

// ----- Prometheus text format -----

const SAMPLE: &str = r#"# HELP tether_requests_total Requests proxied.
# TYPE tether_requests_total counter
tether_requests_total{route="r0",pool="web",backend="a",code="2xx"} 7
tether_requests_total{code="5xx",backend="a",pool="web",route="r0"} 2
tether_requests_total{route="r0",pool="web",backend="b",code="2xx"} 5
tether_requests_total{route="r1",pool="api",backend="c",code="2xx"} 1e3
# HELP tether_request_duration_seconds Request duration.
# TYPE tether_request_duration_seconds histogram
tether_request_duration_seconds_bucket{pool="web",le="0.005"} 3
tether_request_duration_seconds_bucket{pool="web",le="0.5"} 12
tether_request_duration_seconds_bucket{pool="web",le="+Inf"} 14
tether_request_duration_seconds_sum{pool="web"} 0.25
tether_request_duration_seconds_count{pool="web"} 14

# TYPE tether_config_generation gauge
tether_config_generation 3
tether_config_last_reload_successful 1 1712345678000
weird{path="a\"quoted\" \\back\\slash\nnewline",x="}{,="} -4.5
spacey { a = "1" , b="2", } +Inf
not_a_number NaN
"#;

#[test]
fn parses_samples_with_escapes_histograms_and_special_values() {
    let samples = parse_prometheus(SAMPLE).expect("valid exposition");
    assert_eq!(samples.len(), 14);

    let weird = samples.iter().find(|s| s.name == "weird").unwrap();
    assert_eq!(
        weird.label("path"),
        Some("a\"quoted\" \\back\\slash\nnewline")
    );
    assert_eq!(weird.label("x"), Some("}{,="));
    assert_eq!(weird.value, -4.5);

    let spacey = samples.iter().find(|s| s.name == "spacey").unwrap();
    assert_eq!(
        spacey.labels,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(spacey.value, f64::INFINITY);
    assert!(prom_value(SAMPLE, "not_a_number", &[]).unwrap().is_nan());
}

#[test]
fn prom_value_matches_the_exact_label_set_in_any_order() {
    let v = |name, labels: &[(&str, &str)]| prom_value(SAMPLE, name, labels);
    assert_eq!(v("tether_config_generation", &[]), Some(3.0));
    assert_eq!(
        v("tether_config_last_reload_successful", &[]),
        Some(1.0),
        "timestamp ignored"
    );
    assert_eq!(
        v(
            "tether_requests_total",
            &[
                ("pool", "web"),
                ("backend", "a"),
                ("code", "5xx"),
                ("route", "r0")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        v(
            "tether_requests_total",
            &[
                ("code", "2xx"),
                ("route", "r1"),
                ("backend", "c"),
                ("pool", "api")
            ]
        ),
        Some(1000.0)
    );
    // A subset of the labels is not a match for the single-sample lookup.
    assert_eq!(
        v(
            "tether_requests_total",
            &[("pool", "web"), ("backend", "a")]
        ),
        None
    );
    assert_eq!(
        v(
            "tether_request_duration_seconds_bucket",
            &[("le", "+Inf"), ("pool", "web")]
        ),
        Some(14.0)
    );
    assert_eq!(
        v("tether_request_duration_seconds_count", &[("pool", "web")]),
        Some(14.0)
    );
    assert_eq!(
        v("tether_request_duration_seconds_sum", &[("pool", "web")]),
        Some(0.25)
    );
    assert_eq!(
        v(
            "weird",
            &[
                ("x", "}{,="),
                ("path", "a\"quoted\" \\back\\slash\nnewline")
            ]
        ),
        Some(-4.5)
    );
    // Name prefixes do not match: the histogram's base name has no sample of its own.
    assert_eq!(
        v("tether_request_duration_seconds", &[("pool", "web")]),
        None
    );
    assert_eq!(v("tether_missing", &[]), None);
}

#[test]
fn prom_sum_adds_every_sample_that_has_the_labels() {
    let s = |name, labels: &[(&str, &str)]| prom_sum(SAMPLE, name, labels);
    assert_eq!(s("tether_requests_total", &[]), 1014.0);
    assert_eq!(s("tether_requests_total", &[("pool", "web")]), 14.0);
    assert_eq!(
        s(
            "tether_requests_total",
            &[("pool", "web"), ("backend", "a")]
        ),
        9.0
    );
    assert_eq!(s("tether_requests_total", &[("code", "2xx")]), 1012.0);
    assert_eq!(s("tether_requests_total", &[("pool", "nope")]), 0.0);
    assert_eq!(s("tether_missing", &[]), 0.0);
}

#[test]
fn malformed_expositions_are_errors_naming_the_line() {
    for bad in [
        "m{a=\"1\" 2",
        "m{a=1} 2",
        "m{a=\"unterminated} 2",
        "m{=\"x\"} 2",
        "m",
        "m abc",
        "m 1 notatimestamp",
        "m 1 2 3",
        "9m 1",
        "m{a=\"1\" b=\"2\"} 1",
    ] {
        let text = format!("# HELP m ok\nok 1\n{bad}\n");
        let err = parse_prometheus(&text).expect_err(bad);
        assert!(err.contains("line 3"), "{bad}: {err}");
    }
}
