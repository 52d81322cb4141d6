//! The circuit breaker (DESIGN.md §13): at most `max_in_flight` requests per backend — measured
//! at the backend — the others wait in the pool's FIFO queue; a full queue refuses at once and a
//! wait past `queue_timeout` ends, both with 503 and `Retry-After: 1`, counted by reason; a
//! pinned session waits for its own backend while a request without affinity takes a free one;
//! a waiter whose client goes away leaves the queue; a pinned waiter whose backend stops serving
//! (maint, removed by a reload) follows its session's migration at once; waiters survive a
//! reload.

mod common;

use common::h2::{cert_of, H2};
use common::raw::*;
use common::*;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

/// What a [`Gated`] backend saw: requests arrive, count as in flight, and wait at the gate
/// until the test lets them through.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Requests may pass without a permit.
    open: bool,
    permits: usize,
    in_flight: usize,
    max_in_flight: usize,
    /// Request paths in arrival order.
    arrivals: Vec<String>,
}

impl Gate {
    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap().open = false;
    }

    /// Lets `n` waiting (or future) requests through.
    fn release(&self, n: usize) {
        self.state.lock().unwrap().permits += n;
        self.changed.notify_all();
    }

    fn arrivals(&self) -> Vec<String> {
        self.state.lock().unwrap().arrivals.clone()
    }

    fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }

    /// One request: counted, then held until the gate lets it through (10 s at most).
    fn pass(&self, path: &str) {
        let mut s = self.state.lock().unwrap();
        s.arrivals.push(path.to_owned());
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let deadline = Instant::now() + PATIENCE;
        while !s.open && s.permits == 0 && Instant::now() < deadline {
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        if !s.open && s.permits > 0 {
            s.permits -= 1;
        }
        s.in_flight -= 1;
    }
}

/// A backend that holds every request at its gate, then answers 200 with `x-backend: name` and
/// the request path as body.
struct Gated {
    gate: Arc<Gate>,
    raw: RawBackend,
}

impl Gated {
    fn start(name: &'static str) -> Gated {
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        let raw = RawBackend::start(move |head, r, w| {
            read_body(head, r);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            g.pass(&path);
            write!(
                w,
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            )
            .is_ok()
        });
        Gated { gate, raw }
    }
}

fn config(policy: &str, breaker: &str, backends: &[(&str, &Gated)]) -> String {
    let mut c = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "breaker-test-secret-0123456789abcd"
[[route]]
pool = "p"
[pool.p]
policy = "{policy}"
retries = 0
[pool.p.circuit_breaker]
{breaker}
"#
    );
    for (id, b) in backends {
        c.push_str(&format!(
            "[[pool.p.backend]]\nid = \"{id}\"\naddr = \"{}\"\n",
            b.raw.addr
        ));
    }
    c
}

/// A request on its own thread (the client waits as long as tether makes it).
fn spawn_get(t: &Tether, path: &str, headers: &[(&str, &str)]) -> JoinHandle<Result<Resp, String>> {
    let url = t.url(path);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (&**k, &**v)).collect();
        try_get(&url, &h)
    })
}

fn queue_length(t: &Tether) -> f64 {
    t.metric("tether_queue_length", &[("pool", "p")])
        .unwrap_or(0.0)
}

fn wait_queue(t: &Tether, n: usize) {
    wait_for(&format!("{n} waiting in the queue"), PATIENCE, || {
        queue_length(t) == n as f64
    });
}

fn wait_arrivals(g: &Gate, n: usize) {
    wait_for(&format!("{n} requests at the backend"), PATIENCE, || {
        g.arrivals().len() >= n
    });
}

fn ok(h: JoinHandle<Result<Resp, String>>) -> Resp {
    let r = h.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{r:?}");
    r
}

#[test]
fn the_cap_holds_at_the_backend_and_waiters_get_in_in_arrival_order() {
    let b = Gated::start("a");
    let t = Tether::start(&config(
        "round_robin",
        "max_in_flight = 2\nqueue_timeout = \"4s\"",
        &[("a", &b)],
    ));
    let first: Vec<_> = (0..2)
        .map(|i| spawn_get(&t, &format!("/first{i}"), &[]))
        .collect();
    wait_arrivals(&b.gate, 2);
    // Each waiter joins after the previous one is in line, so their order is known.
    let mut waiters = Vec::new();
    for i in 0..4 {
        waiters.push(spawn_get(&t, &format!("/q{i}"), &[]));
        wait_queue(&t, i + 1);
    }
    assert_eq!(b.gate.arrivals().len(), 2, "nothing passed the cap");
    assert_eq!(
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "a")]),
        Some(0.0),
        "round-robin waiters are not pinned to a backend"
    );
    // /status shows the breaker: its limits, the queue and the slots the backend holds.
    let st = t.status();
    let pool = &st["pools"][0];
    assert_eq!(pool["circuit_breaker"]["max_in_flight"], 2, "{pool}");
    assert_eq!(pool["circuit_breaker"]["queue_timeout"], "4s", "{pool}");
    assert_eq!(pool["circuit_breaker"]["queue_length"], 4, "{pool}");
    assert_eq!(pool["backends"][0]["breaker_in_flight"], 2, "{pool}");
    // One request done at a time: the oldest waiter takes its slot.
    for i in 0..4 {
        b.gate.release(1);
        wait_arrivals(&b.gate, 3 + i);
        assert_eq!(b.gate.arrivals()[2 + i], format!("/q{i}"), "FIFO");
        wait_queue(&t, 3 - i);
    }
    b.gate.open();
    for h in first.into_iter().chain(waiters) {
        ok(h);
    }
    assert_eq!(
        b.gate.max_in_flight(),
        2,
        "the backend never saw more than max_in_flight"
    );
    assert_eq!(
        t.metric_sum("tether_queue_rejections_total", &[("pool", "p")]),
        0.0
    );
}

#[test]
fn a_full_queue_refuses_at_once_and_a_long_wait_times_out() {
    let b = Gated::start("a");
    let t = Tether::start(&config(
        "round_robin",
        "max_in_flight = 1\nmax_queue = 1\nqueue_timeout = \"1500ms\"",
        &[("a", &b)],
    ));
    let held = spawn_get(&t, "/held", &[]);
    wait_arrivals(&b.gate, 1);
    let waiter = spawn_get(&t, "/waiter", &[]);
    wait_queue(&t, 1);

    let started = Instant::now();
    let r = get(&t.url("/overflow"), &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "refused at once, not after waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(
        t.metric(
            "tether_queue_rejections_total",
            &[("pool", "p"), ("reason", "full")]
        ),
        Some(1.0)
    );

    // The waiter was never let in: it times out.
    let r = waiter.join().unwrap().unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(
        t.metric(
            "tether_queue_rejections_total",
            &[("pool", "p"), ("reason", "timeout")]
        ),
        Some(1.0)
    );
    wait_queue(&t, 0);
    assert_eq!(
        b.gate.arrivals(),
        vec!["/held"],
        "neither refusal reached the backend"
    );
    b.gate.open();
    ok(held);
    assert_eq!(get(&t.url("/after"), &[]).status, 200, "no slot leaked");
    assert_eq!(
        t.metric_sum(
            "tether_requests_total",
            &[("pool", "p"), ("backend", ""), ("code", "5xx")]
        ),
        2.0,
        "both refusals counted as answered without a backend"
    );
}

#[test]
fn without_a_queue_a_full_backend_refuses_at_once() {
    let b = Gated::start("a");
    let t = Tether::start(&config(
        "round_robin",
        "max_in_flight = 1\nmax_queue = 0",
        &[("a", &b)],
    ));
    let held = spawn_get(&t, "/held", &[]);
    wait_arrivals(&b.gate, 1);
    let r = get(&t.url("/refused"), &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    b.gate.open();
    ok(held);
    assert_eq!(b.gate.arrivals(), vec!["/held"]);
}

/// A session cookie whose home is the backend answering as `want` (new sessions are spread
/// round-robin, so a few tries find one).
fn session_on(t: &Tether, want: &str) -> String {
    for _ in 0..20 {
        let r = get(&t.url("/login"), &[]);
        if r.backend() == Some(want) {
            let c = r.set_cookie("tether_p").expect("a session cookie");
            return format!("tether_p={c}");
        }
    }
    panic!("no session landed on {want}");
}

#[test]
fn a_pinned_session_waits_for_its_backend_while_others_take_a_free_one() {
    let (a, b) = (Gated::start("a"), Gated::start("b"));
    let t = Tether::start(&config(
        "cookie",
        "max_in_flight = 1\nqueue_timeout = \"4s\"",
        &[("a", &a), ("b", &b)],
    ));
    a.gate.open();
    b.gate.open();
    let cookie = session_on(&t, "a");
    a.gate.close();
    b.gate.close();
    let before = a.gate.arrivals().len();

    let held = spawn_get(&t, "/held", &[("Cookie", &cookie)]);
    wait_arrivals(&a.gate, before + 1);
    let pinned = spawn_get(&t, "/pinned", &[("Cookie", &cookie)]);
    wait_queue(&t, 1);
    assert_eq!(
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "a")]),
        Some(1.0),
        "the waiter is pinned to a:\n{}",
        t.metrics()
    );
    assert_eq!(
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "b")]),
        Some(0.0)
    );

    // A request without affinity does not wait: b is free.
    let b_before = b.gate.arrivals().len();
    let fresh = spawn_get(&t, "/fresh", &[]);
    wait_arrivals(&b.gate, b_before + 1);
    assert_eq!(b.gate.arrivals().last().map(String::as_str), Some("/fresh"));
    b.gate.open();
    let r = ok(fresh);
    assert_eq!(r.backend(), Some("b"));
    assert_eq!(queue_length(&t), 1.0, "the pinned one still waits for a");
    assert_eq!(a.gate.in_flight(), 1);

    a.gate.open();
    ok(held);
    let r = ok(pinned);
    assert_eq!(r.backend(), Some("a"), "affinity kept: {r:?}");
    assert_eq!(a.gate.max_in_flight(), 1);
    assert_eq!(
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "a")]),
        Some(0.0)
    );
}

#[test]
fn a_pinned_waiter_follows_its_session_when_the_backend_goes_into_maint() {
    let (a, b) = (Gated::start("a"), Gated::start("b"));
    let t = Tether::start(&config(
        "cookie",
        "max_in_flight = 1\nqueue_timeout = \"4s\"",
        &[("a", &a), ("b", &b)],
    ));
    a.gate.open();
    b.gate.open();
    let cookie = session_on(&t, "a");
    a.gate.close();
    let before = a.gate.arrivals().len();
    let held = spawn_get(&t, "/held", &[("Cookie", &cookie)]);
    wait_arrivals(&a.gate, before + 1);
    let pinned = spawn_get(&t, "/pinned", &[("Cookie", &cookie)]);
    wait_queue(&t, 1);

    let started = Instant::now();
    let r = post(&t.admin_url("/pools/p/backends/a/maint"), &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    let r = ok(pinned);
    assert_eq!(r.backend(), Some("b"), "migrated instead of waiting: {r:?}");
    assert!(
        r.set_cookie("tether_p").is_some(),
        "the cookie names the new home"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "re-picked at once, not at queue_timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[
                ("pool", "p"),
                ("from", "a"),
                ("to", "b"),
                ("reason", "maint")
            ]
        ),
        1.0
    );
    wait_queue(&t, 0);
    a.gate.open();
    ok(held);
}

#[test]
fn a_client_that_goes_away_leaves_the_queue_and_leaks_no_slot() {
    let b = Gated::start("a");
    let t = Tether::start(&config(
        "round_robin",
        "max_in_flight = 1\nqueue_timeout = \"8s\"",
        &[("a", &b)],
    ));
    let held = spawn_get(&t, "/held", &[]);
    wait_arrivals(&b.gate, 1);
    let (mut s, _r) = client(&t);
    s.write_all(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_queue(&t, 1);
    let started = Instant::now();
    drop(s);
    drop(_r);
    wait_queue(&t, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "left when the client closed, not at queue_timeout"
    );
    let waiter = spawn_get(&t, "/next", &[]);
    wait_queue(&t, 1);
    b.gate.open();
    ok(held);
    let r = ok(waiter);
    assert_eq!(r.body, "/next");
    assert_eq!(
        b.gate.arrivals(),
        vec!["/held", "/next"],
        "the gone one never reached it"
    );
    assert_eq!(get(&t.url("/after"), &[]).status, 200, "no slot leaked");
    assert_eq!(
        t.metric_sum("tether_queue_rejections_total", &[("pool", "p")]),
        0.0,
        "a client that left is not a refusal"
    );
    assert_client_closed(&t, "/gone");
}

/// The request to `path` whose client went away is logged as 499 `client_closed` and counted as
/// a 4xx, never a 5xx (nginx's convention: the client's doing, not a server error).
#[track_caller]
fn assert_client_closed(t: &Tether, path: &str) {
    let wanted = format!("path={path} ");
    let mut line = None;
    wait_for("the gone request's access line", PATIENCE, || {
        line = t
            .stderr()
            .lines()
            .find(|l| l.contains("access:") && l.contains(&wanted))
            .map(str::to_owned);
        line.is_some()
    });
    let line = line.unwrap();
    assert!(
        line.contains("status=499") && line.contains("error=\"client_closed\""),
        "{line}"
    );
    assert_eq!(
        t.metric_sum("tether_requests_total", &[("pool", "p"), ("code", "4xx")]),
        1.0,
        "{}",
        t.metrics()
    );
    assert_eq!(
        t.metric_sum("tether_requests_total", &[("pool", "p"), ("code", "5xx")]),
        0.0
    );
}

#[test]
fn waiters_survive_a_reload_and_a_removed_backend_sends_its_waiters_on() {
    let (a, b) = (Gated::start("a"), Gated::start("b"));
    let two = config(
        "cookie",
        "max_in_flight = 1\nqueue_timeout = \"4s\"",
        &[("a", &a), ("b", &b)],
    );
    let t = Tether::start(&two);
    a.gate.open();
    b.gate.open();
    let on_a = session_on(&t, "a");
    let on_b = session_on(&t, "b");
    a.gate.close();
    b.gate.close();
    let (a0, b0) = (a.gate.arrivals().len(), b.gate.arrivals().len());
    let held_a = spawn_get(&t, "/held-a", &[("Cookie", &on_a)]);
    let held_b = spawn_get(&t, "/held-b", &[("Cookie", &on_b)]);
    wait_arrivals(&a.gate, a0 + 1);
    wait_arrivals(&b.gate, b0 + 1);
    let waits_a = spawn_get(&t, "/waits-a", &[("Cookie", &on_a)]);
    wait_queue(&t, 1);
    let waits_b = spawn_get(&t, "/waits-b", &[("Cookie", &on_b)]);
    wait_queue(&t, 2);

    // A reload that keeps the pool but drops backend a (and raises nothing else).
    let generation = t.metric("tether_config_generation", &[]).unwrap();
    t.write_config(&config(
        "cookie",
        "max_in_flight = 1\nqueue_timeout = \"4s\"",
        &[("b", &b)],
    ));
    t.sighup();
    wait_for("the reload", PATIENCE, || {
        t.metric("tether_config_generation", &[]) == Some(generation + 1.0)
    });
    // a's waiter re-picks at once: its session's new home is b, where it queues behind b's
    // own waiter (both keep their places).
    assert_eq!(
        queue_length(&t),
        2.0,
        "nobody dropped out:\n{}",
        t.metrics()
    );
    wait_for("a's waiter now waits for b", PATIENCE, || {
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "b")]) == Some(2.0)
    });
    assert_eq!(
        t.metric("tether_backend_queued", &[("pool", "p"), ("backend", "a")]),
        None,
        "the removed backend's series is gone"
    );
    b.gate.open();
    ok(held_b);
    let first = ok(waits_a);
    let second = ok(waits_b);
    assert_eq!(first.backend(), Some("b"));
    assert_eq!(second.backend(), Some("b"));
    wait_queue(&t, 0);
    assert_eq!(
        b.gate.arrivals()[b0..],
        ["/held-b", "/waits-a", "/waits-b"],
        "the older waiter (a's, re-picked) went first"
    );
    assert_eq!(b.gate.max_in_flight(), 1, "the cap held across the reload");
    a.gate.open();
    ok(held_a);
    // The slot of the removed backend's last request did not go to anyone, and b's are free.
    assert_eq!(get(&t.url("/after"), &[("Cookie", &on_b)]).status, 200);
    assert_eq!(
        t.metric_sum("tether_queue_rejections_total", &[("pool", "p")]),
        0.0
    );
}

#[test]
fn after_a_connect_failure_the_request_waits_for_a_slot_on_the_next_backend() {
    let a = Gated::start("a");
    let dead = format!("127.0.0.1:{}", free_port_outside_ephemeral_range());
    let cfg = config(
        "round_robin",
        "max_in_flight = 1\nqueue_timeout = \"4s\"",
        &[("a", &a)],
    )
    .replace("retries = 0", "retries = 1")
        + &format!("[[pool.p.backend]]\nid = \"dead\"\naddr = \"{dead}\"\n");
    let t = Tether::start(&cfg);
    // Whichever backend round robin picks, the request ends on a (directly, or after dead
    // refused the connection).
    let held = spawn_get(&t, "/held", &[]);
    wait_arrivals(&a.gate, 1);
    // The next one fails over to a too, finds it full and waits there (the slot it had on
    // dead was given back).
    let next = spawn_get(&t, "/next", &[]);
    wait_for("a connect failure on dead", PATIENCE, || {
        t.metric_sum(
            "tether_upstream_connect_failures_total",
            &[("pool", "p"), ("backend", "dead")],
        ) >= 1.0
            && queue_length(&t) == 1.0
    });
    assert_eq!(a.gate.arrivals(), vec!["/held"]);
    a.gate.open();
    ok(held);
    let r = ok(next);
    assert_eq!(r.backend(), Some("a"));
    assert_eq!(a.gate.max_in_flight(), 1, "the failover respected a's cap");
    wait_queue(&t, 0);
}

#[test]
fn over_http2_requests_wait_in_the_same_queue_and_a_reset_stream_leaves_it() {
    let fixture = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
            .display()
            .to_string()
    };
    let b = Gated::start("a");
    let tls = free_port();
    let cfg = config(
        "round_robin",
        "max_in_flight = 1\nqueue_timeout = \"8s\"",
        &[("a", &b)],
    )
    .replace(
        "grace_period = \"1s\"\n",
        &format!(
            "grace_period = \"1s\"\n[[server.tls]]\nlisten = \"127.0.0.1:{tls}\"\n\
             certs = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            fixture("cert.pem"),
            fixture("key.pem")
        ),
    );
    let t = Tether::start(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    let cert = cert_of(&fixture("cert.pem"));
    let connect = move |cert| H2::connect(addr, cert, "localhost", "localhost");
    let c1 = cert.clone();
    let held = std::thread::spawn(move || connect(c1).get("/held", &[]));
    wait_arrivals(&b.gate, 1);
    let c2 = cert.clone();
    let waiter = std::thread::spawn(move || connect(c2).get("/waits", &[]));
    wait_queue(&t, 1);
    let c3 = cert.clone();
    let cancelled = std::thread::spawn(move || {
        connect(c3).get_then_cancel("/cancelled", Duration::from_secs(1))
    });
    wait_queue(&t, 2);
    cancelled.join().unwrap();
    let reset = Instant::now();
    wait_queue(&t, 1);
    assert!(
        reset.elapsed() < Duration::from_secs(4),
        "left when the stream was reset, not at queue_timeout: {:?}",
        reset.elapsed()
    );
    assert_eq!(
        t.metric_sum("tether_queue_rejections_total", &[("pool", "p")]),
        0.0
    );
    b.gate.open();
    assert_eq!(held.join().unwrap().status, 200);
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        b.gate.arrivals(),
        vec!["/held", "/waits"],
        "the reset stream never reached it"
    );
    assert_eq!(b.gate.max_in_flight(), 1);
    wait_queue(&t, 0);
    assert_client_closed(&t, "/cancelled");
}
