//! Faults between tether and its backends, injected by the relay of `tests/common/fault.rs`:
//! a backend that dies mid-response, one that accepts and never answers, one that refuses
//! connections under load, and a pool whose backends are all down. Also the safe-retry rules of
//! DESIGN.md §13 that depend on them.

mod common;

use common::fault::{Fault, FaultRelay};
use common::raw::*;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A backend answering every request with a 64 KiB Content-Length body.
fn big_answers() -> RawBackend {
    RawBackend::start(|head, r, w| {
        read_body(head, r);
        let body = vec![b'x'; 64 * 1024];
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        w.write_all(&body).unwrap();
        true
    })
}

fn pool_of(addrs: &[(&str, String)], extra: &str) -> String {
    let mut c = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[route]]
pool = "p"
[pool.p]
policy = "round_robin"
{extra}
"#
    );
    for (id, addr) in addrs {
        c.push_str(&format!(
            "[[pool.p.backend]]\nid = \"{id}\"\naddr = \"{addr}\"\n"
        ));
    }
    c
}

#[test]
fn a_backend_killed_mid_response_gives_a_truncated_response_never_a_clean_one() {
    let b = big_answers();
    let relay = FaultRelay::start(b.addr, Fault::ResetAfter(10_000));
    let t = Tether::start(&pool_of(&[("b", relay.addr.to_string())], "retries = 0"));
    let (mut s, mut r) = client(&t);
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head(&mut r).expect("the response head arrived before the reset");
    assert_eq!(status(&head), 200);
    let length: usize = header_of(&head, "content-length").unwrap().parse().unwrap();
    let mut got = Vec::new();
    let _ = r.read_to_end(&mut got);
    assert!(
        got.len() < length,
        "the client sees the response cut short ({} of {length} bytes), then the close",
        got.len()
    );
}

#[test]
fn a_backend_that_never_answers_gets_504_after_read_timeout_then_ejection() {
    let b = big_answers();
    let relay = FaultRelay::start(b.addr, Fault::Blackhole);
    let t = Tether::start(&pool_of(
        &[("mute", relay.addr.to_string())],
        "retries = 0\nread_timeout = \"500ms\"\n[pool.p.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\nmax_ejected_percent = 100",
    ));
    for _ in 0..2 {
        let start = Instant::now();
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 504);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "504 after read_timeout ({took:?})"
        );
    }
    // One backend is the whole pool: the guard keeps it in (at least one backend stays).
    assert_eq!(t.metric_sum("tether_outlier_ejections_total", &[]), 0.0);

    // With a second, healthy backend the silent one is ejected.
    let ok = big_answers();
    let t = Tether::start(&pool_of(
        &[("mute", relay.addr.to_string()), ("ok", ok.addr.to_string())],
        "retries = 0\nread_timeout = \"500ms\"\n[pool.p.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\nmax_ejected_percent = 50",
    ));
    let mut timeouts = 0;
    for _ in 0..4 {
        if get(&t.url("/"), &[]).status == 504 {
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 2);
    wait_for("ejection", Duration::from_secs(3), || {
        t.metric_sum(
            "tether_outlier_ejections_total",
            &[("backend", "mute"), ("reason", "failures")],
        ) == 1.0
    });
    for _ in 0..6 {
        assert_eq!(get(&t.url("/"), &[]).status, 200);
    }
}

#[test]
fn added_latency_is_relayed_within_read_timeout() {
    let b = big_answers();
    let relay = FaultRelay::start(b.addr, Fault::Latency(Duration::from_millis(150)));
    let t = Tether::start(&pool_of(
        &[("slow", relay.addr.to_string())],
        "read_timeout = \"2s\"",
    ));
    let start = Instant::now();
    let r = get(&t.url("/"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 * 1024);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[test]
fn a_backend_refusing_connections_under_load_costs_no_idempotent_request() {
    let ok = big_answers();
    let refused = free_port_outside_ephemeral_range(); // nothing listens: every connect is refused
    let t = Tether::start(&pool_of(
        &[
            ("ok", ok.addr.to_string()),
            ("refused", format!("127.0.0.1:{refused}")),
        ],
        "retries = 1",
    ));
    let url = t.url("/load");
    let failures: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..50)
                        .filter(|_| try_get(&url, &[]).map_or(true, |r| r.status != 200))
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(failures, 0, "every GET was answered by the healthy backend");
    assert!(
        t.metric_sum(
            "tether_upstream_connect_failures_total",
            &[("backend", "refused")]
        ) >= 1.0
    );
}

#[test]
fn all_backends_down_answer_503_at_once_with_retry_after() {
    let (a, b) = (
        free_port_outside_ephemeral_range(),
        free_port_outside_ephemeral_range(),
    );
    let t = Tether::start(&pool_of(
        &[("a", format!("127.0.0.1:{a}")), ("b", format!("127.0.0.1:{b}"))],
        "[pool.p.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfall = 1\nrise = 1",
    ));
    wait_for("both down", Duration::from_secs(5), || {
        t.metric_sum("tether_backend_up", &[]) == 0.0
    });
    for _ in 0..5 {
        let start = Instant::now();
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 503);
        assert!(r.header("retry-after").is_some());
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "at once ({:?})",
            start.elapsed()
        );
    }
}

#[test]
fn when_retries_run_out_on_refused_connections_the_answer_says_when_to_retry() {
    let (a, b) = (
        free_port_outside_ephemeral_range(),
        free_port_outside_ephemeral_range(),
    );
    let t = Tether::start(&pool_of(
        &[
            ("a", format!("127.0.0.1:{a}")),
            ("b", format!("127.0.0.1:{b}")),
        ],
        "retries = 3",
    ));
    let r = get(&t.url("/"), &[]);
    // Both refused: no backend is left to try.
    assert_eq!(r.status, 503);
    assert!(
        r.header("retry-after").is_some(),
        "{:?}",
        r.headers_all("retry-after")
    );
}
