//! DNS discovery (DESIGN.md §22) against a real DNS server (dnsmasq on a loopback port, started
//! by each test): scale out and in under load with no failed request, SRV weights and
//! priorities, the resolver killed (the last good set is kept), a name that does not resolve at
//! start, an answer that would move every session (held back by `max_reload_move` until
//! forced), and two instances agreeing on owners and cookies through changes.
//!
//! Backends are in-process servers on 127.0.0.N with one port for all, as DNS answers name them:
//! `dns = "app.test:PORT"` gives the addresses, the port is the pool's.

mod common;

use common::dns::Dns;
use common::*;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A port free on every 127.0.0.N of `hosts`, so each backend listens on its own address with
/// the same port.
fn shared_port(hosts: &[u8]) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        if hosts
            .iter()
            .all(|h| TcpListener::bind(SocketAddr::from(([127, 0, 0, *h], port))).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on 127.0.0.{hosts:?} in 200 tries");
}

fn at(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], port))
}

/// Backends `b<N>` on 127.0.0.N:port for each N in `hosts`.
fn backends(hosts: &[u8], port: u16) -> Vec<Backend> {
    hosts
        .iter()
        .map(|h| Backend::start_on(&format!("b{h}"), at(*h, port)))
        .collect()
}

/// A hosts file naming `name` by each 127.0.0.N of `hosts`.
fn hosts_file(name: &str, hosts: &[u8]) -> String {
    hosts
        .iter()
        .map(|h| format!("127.0.0.{h} {name}\n"))
        .collect()
}

fn id(host: u8, port: u16) -> String {
    at(host, port).to_string()
}

fn config(pool: &str, discover: &str, extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
{extra_server}
[log]
access = true
[affinity]
secret = "discovery-test-secret-0123456789"
[[route]]
pool = "app"
[pool.app]
{pool}
[pool.app.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
[pool.app.discover]
{discover}
"#
    )
}

/// The ids of the pool's backends as `/status` shows them, with their `source`.
fn status_backends(t: &Tether, pool: &str) -> Vec<(String, String)> {
    let s = t.status();
    let p = s["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .cloned()
        .unwrap_or_default();
    let mut v: Vec<(String, String)> = p["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    (
                        b["id"].as_str().unwrap_or("").to_owned(),
                        b["source"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn discovery_status(t: &Tether, pool: &str) -> serde_json::Value {
    let s = t.status();
    s["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .map(|p| p["discovery"].clone())
        .unwrap_or_default()
}

fn ids_of(t: &Tether, pool: &str) -> Vec<String> {
    status_backends(t, pool)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Requests from `threads` clients until stopped: (ok, failures with their reason).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: String, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (url, stop, ok) = (url.clone(), stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    // Bounded: at most 200k requests or until told to stop.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match try_get(&url, &[]) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.push(format!("status {}: {}", r.status, r.body)),
                            Err(e) => failures.push(e),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; (ok, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn scale_out_and_in_under_load_loses_no_request() {
    let port = shared_port(&[2, 3, 4]);
    let b = backends(&[2, 3, 4], port);
    let dns = Dns::start(&hosts_file("app.test", &[2, 3]), &[]);
    let t = Tether::start(&config(
        "policy = \"cookie\"\nslow_start = \"2s\"",
        &format!(
            "dns = \"app.test:{port}\"\ninterval = \"1s\"\nresolvers = [\"{}\"]",
            dns.addr()
        ),
        "",
    ));
    // The first snapshot already has the answer: ids are IP:PORT, source dns.
    assert_eq!(
        status_backends(&t, "app"),
        vec![(id(2, port), "dns".into()), (id(3, port), "dns".into())]
    );
    assert_eq!(
        t.metric("tether_discovery_backends", &[("pool", "app")]),
        Some(2.0)
    );
    // A session pinned to 127.0.0.2, to follow when that address leaves.
    let mut cookie = None;
    for _ in 0..20 {
        let r = get(&t.url("/"), &[]);
        if r.backend() == Some("b2") {
            cookie = r.set_cookie("tether_app");
            break;
        }
    }
    let cookie = cookie.expect("a session on b2 within 20 new sessions");

    let load = Load::start(t.url("/"), 3);
    wait_for("load running", WAIT, || load.ok() > 100);

    // Scale out: 127.0.0.4 joins; it gets health checks and slow start, then traffic.
    dns.set_hosts(&hosts_file("app.test", &[2, 3, 4]));
    wait_for("the new address in the pool", WAIT, || {
        ids_of(&t, "app") == sorted(vec![id(2, port), id(3, port), id(4, port)])
    });
    let s = t.status();
    let joined = s["pools"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["id"] == id(4, port)).cloned())
        .expect("the new backend in /status");
    assert_eq!(joined["slow_start"], true, "{joined}");
    wait_for("the new backend serving", WAIT, || b[2].hits() > 20);
    assert!(b[2].health_hits() > 0, "the new backend is health-checked");
    assert_eq!(
        t.metric("tether_discovery_backends", &[("pool", "app")]),
        Some(3.0)
    );

    // A slow request in flight on b2 while its address leaves: it finishes.
    b[0].set_delay(Duration::from_millis(1500));
    let slow_url = t.url("/slow");
    let slow_cookie = format!("tether_app={cookie}");
    let slow = std::thread::spawn(move || try_get(&slow_url, &[("cookie", &slow_cookie)]));
    wait_for("the slow request at b2", WAIT, || b[0].in_flight() > 0);

    // Scale in: 127.0.0.2 leaves the answer.
    dns.set_hosts(&hosts_file("app.test", &[3, 4]));
    wait_for("the address gone from the pool", WAIT, || {
        ids_of(&t, "app") == sorted(vec![id(3, port), id(4, port)])
    });
    let r = slow
        .join()
        .expect("slow request thread")
        .expect("slow request");
    assert_eq!(
        (r.status, r.backend()),
        (200, Some("b2")),
        "in flight finishes"
    );
    b[0].set_delay(Duration::ZERO);
    let hits_after_removal = b[0].hits();
    let before = load.ok();
    wait_for("more load after the removal", WAIT, || {
        load.ok() > before + 200
    });
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        b[0].hits(),
        hits_after_removal,
        "no new request reached the removed address"
    );

    // The session pinned to the removed address moves, reason `removed`.
    let r = get(&t.url("/"), &[("cookie", &format!("tether_app={cookie}"))]);
    assert_eq!(r.status, 200);
    assert_ne!(r.backend(), Some("b2"));
    let to = id(if r.backend() == Some("b3") { 3 } else { 4 }, port);
    wait_for("the migration counted", WAIT, || {
        t.metric(
            "tether_affinity_migrations_total",
            &[
                ("pool", "app"),
                ("from", &id(2, port)),
                ("to", &to),
                ("reason", "removed"),
            ],
        ) == Some(1.0)
    });
    assert!(
        t.stderr().contains(&format!("from=\"{}\"", id(2, port))),
        "the access log names where the session came from"
    );
    assert!(
        t.metric(
            "tether_discovery_resolutions_total",
            &[("pool", "app"), ("result", "changed")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    wait_for("a resolution with the same answer", WAIT, || {
        t.metric(
            "tether_discovery_resolutions_total",
            &[("pool", "app"), ("result", "unchanged")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    let d = discovery_status(&t, "app");
    assert_eq!(d["dns"], format!("app.test:{port}"), "{d}");
    assert_eq!(d["backends"], 2, "{d}");
    assert!(d["last_resolution"]["time"].is_string(), "{d}");
    assert_eq!(d["last_resolution"]["answers"], 2, "{d}");
    // The address gone from DNS may now be shut down: nothing reaches it anyway.
    b[0].stop();
    for _ in 0..20 {
        assert_eq!(get(&t.url("/"), &[]).status, 200);
    }
}

#[test]
fn srv_weights_and_priorities_are_honoured() {
    let port = shared_port(&[2, 3, 4, 5]);
    let b = backends(&[2, 3, 4, 5], port);
    let hosts = "127.0.0.2 b2.app.test\n127.0.0.3 b3.app.test\n127.0.0.4 b4.app.test\n127.0.0.5 b5.app.test\n";
    let srv: Vec<String> = [(2, 0, 10), (3, 0, 20), (4, 0, 30), (5, 1, 10)]
        .iter()
        .map(|(h, prio, w)| {
            format!("--srv-host=_http._tcp.app.test,b{h}.app.test,{port},{prio},{w}")
        })
        .collect();
    let srv: Vec<&str> = srv.iter().map(String::as_str).collect();
    let dns = Dns::start(hosts, &srv);
    // A static backend beside the discovered ones.
    let extra = Backend::start("static");
    let t = Tether::start(&format!(
        "{}[[pool.app.backend]]\nid = \"static\"\naddr = \"{}\"\nweight = 20\n",
        config(
            "policy = \"round_robin\"",
            &format!(
                "srv = \"_http._tcp.app.test\"\nresolvers = [\"{}\"]",
                dns.addr()
            ),
            "",
        ),
        extra.addr()
    ));
    let listed = status_backends(&t, "app");
    assert!(
        listed.contains(&("static".into(), "static".into())),
        "{listed:?}"
    );
    assert!(listed.contains(&(id(5, port), "dns".into())), "{listed:?}");
    let s = t.status();
    let prio: Vec<(String, i64, i64)> = s["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["source"] == "dns")
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["priority"].as_i64().unwrap(),
                b["weight"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(prio.contains(&(id(4, port), 0, 30)), "{prio:?}");
    assert!(prio.contains(&(id(5, port), 1, 10)), "{prio:?}");

    // Weights 10:20:30 (and the static 20) within ±10 %; priority 1 takes nothing.
    let n = 800;
    let mut count = std::collections::HashMap::<String, usize>::new();
    for _ in 0..n {
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 200);
        *count
            .entry(r.backend().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    for (name, w) in [("b2", 10.0), ("b3", 20.0), ("b4", 30.0), ("static", 20.0)] {
        let want = n as f64 * w / 80.0;
        let got = *count.get(name).unwrap_or(&0) as f64;
        assert!(
            (got - want).abs() <= want * 0.1,
            "{name}: {got} of {n}, want {want} ±10 % ({count:?})"
        );
    }
    assert_eq!(b[3].hits(), 0, "the priority-1 target stands by");

    // The whole priority-0 group down (the static backend has priority 0 too): priority 1 serves.
    for x in &b[..3] {
        x.set_health(503);
    }
    extra.set_health(503);
    wait_for("the standby group taking traffic", WAIT, || {
        get(&t.url("/"), &[]).backend() == Some("b5")
    });
    // One of the preferred group back: the standby is left again.
    b[1].set_health(200);
    wait_for("the preferred group back", WAIT, || {
        get(&t.url("/"), &[]).backend() == Some("b3")
    });
    let hits = b[3].hits();
    for _ in 0..20 {
        assert_eq!(get(&t.url("/"), &[]).backend(), Some("b3"));
    }
    assert_eq!(b[3].hits(), hits);
}

#[test]
fn a_dead_resolver_keeps_the_last_good_set() {
    let port = shared_port(&[2, 3]);
    let b = backends(&[2, 3], port);
    // A TXT record keeps the name known when its addresses are gone: an empty answer (NODATA).
    let mut dns = Dns::start(
        &hosts_file("app.test", &[2, 3]),
        &["--txt-record=app.test,here"],
    );
    let t = Tether::start(&config(
        "policy = \"round_robin\"",
        &format!(
            "dns = \"app.test:{port}\"\ninterval = \"1s\"\nresolvers = [\"{}\"]",
            dns.addr()
        ),
        "",
    ));
    assert_eq!(ids_of(&t, "app"), vec![id(2, port), id(3, port)]);
    dns.stop();
    wait_for("a failed resolution", Duration::from_secs(40), || {
        t.metric(
            "tether_discovery_resolutions_total",
            &[("pool", "app"), ("result", "error")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        ids_of(&t, "app"),
        vec![id(2, port), id(3, port)],
        "last good set kept"
    );
    let d = discovery_status(&t, "app");
    assert_eq!(d["last_resolution"]["result"], "error", "{d}");
    assert_eq!(d["backends"], 2, "{d}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 200);
        seen.insert(r.backend().unwrap_or("").to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Logged once per change of state, not once per failed resolution.
    wait_for(
        "a second failed resolution",
        Duration::from_secs(40),
        || {
            t.metric(
                "tether_discovery_resolutions_total",
                &[("pool", "app"), ("result", "error")],
            )
            .unwrap_or(0.0)
                >= 2.0
        },
    );
    assert_eq!(
        t.stderr().matches("keeping the last good set").count(),
        1,
        "{}",
        t.stderr()
    );

    // An empty answer is kept out too.
    dns.restart();
    dns.set_hosts("127.0.0.9 other.test\n");
    wait_for("an empty answer", WAIT, || {
        t.metric(
            "tether_discovery_resolutions_total",
            &[("pool", "app"), ("result", "empty")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        discovery_status(&t, "app")["last_resolution"]["result"],
        "empty"
    );
    assert_eq!(
        ids_of(&t, "app"),
        vec![id(2, port), id(3, port)],
        "never emptied by its resolver"
    );
    // And a good answer applies again.
    dns.set_hosts(&hosts_file("app.test", &[3]));
    wait_for("the new answer applied", WAIT, || {
        ids_of(&t, "app") == vec![id(3, port)]
    });
    assert!(t.stderr().contains("resolves again"), "{}", t.stderr());
    drop(b);
}

#[test]
fn a_name_that_does_not_resolve_at_start_leaves_only_its_pool_empty() {
    let port = shared_port(&[2]);
    let b = backends(&[2], port);
    let dns = Dns::start("", &[]);
    let other = Backend::start("other");
    let cfg = format!(
        "{}[[route]]\npath_prefix = \"/other\"\npool = \"other\"\n[pool.other]\npolicy = \"round_robin\"\n[[pool.other.backend]]\nid = \"o1\"\naddr = \"{}\"\n",
        config(
            "policy = \"round_robin\"",
            &format!(
                "dns = \"app.test:{port}\"\ninterval = \"1s\"\nresolvers = [\"{}\"]",
                dns.addr()
            ),
            "",
        ),
        other.addr()
    );
    // `tether check` warns (exit 0) that the name did not resolve.
    let mut check = Tether::spawn_raw(&cfg, &["check", "-c", "{CONFIG}"]);
    let status = check.wait_exit(WAIT).expect("check exits");
    assert!(status.success(), "{}", check.stderr());
    assert!(
        check
            .stderr()
            .contains("warning: pool.app.discover: dns app.test:")
            && check.stderr().contains("did not resolve"),
        "{}",
        check.stderr()
    );
    let t = Tether::start(&cfg);
    let r = get(&t.url("/"), &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.header("retry-after").is_some(),
        "{:?}",
        r.headers_all("retry-after")
    );
    assert_eq!(get(&t.url("/other"), &[]).backend(), Some("other"));
    // The name appears: the pool fills.
    dns.set_hosts(&hosts_file("app.test", &[2]));
    wait_for("the pool filled", WAIT, || {
        get(&t.url("/"), &[]).backend() == Some("b2")
    });
    drop(b);
}

#[test]
fn an_answer_moving_too_many_sessions_is_held_until_forced() {
    let port = shared_port(&[2, 3, 4, 5]);
    let b = backends(&[2, 3, 4, 5], port);
    let dns = Dns::start(&hosts_file("app.test", &[2, 3]), &[]);
    let t = Tether::start(&config(
        "policy = \"cookie\"",
        &format!(
            "dns = \"app.test:{port}\"\ninterval = \"1s\"\nresolvers = [\"{}\"]",
            dns.addr()
        ),
        "max_reload_move = 0.4",
    ));
    // Every record changed: every session would move.
    dns.set_hosts(&hosts_file("app.test", &[4, 5]));
    wait_for("the answer held back", WAIT, || {
        t.metric(
            "tether_discovery_resolutions_total",
            &[("pool", "app"), ("result", "held")],
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(
        ids_of(&t, "app"),
        vec![id(2, port), id(3, port)],
        "still the old set"
    );
    let d = discovery_status(&t, "app");
    assert_eq!(d["last_resolution"]["result"], "held", "{d}");
    assert_eq!(
        d["held"],
        serde_json::json!([id(4, port), id(5, port)]),
        "{d}"
    );
    let err = t.stderr();
    assert_eq!(err.matches("is held back").count(), 1, "logged once: {err}");
    assert!(err.contains("100.0% of cookie sessions migrate"), "{err}");
    for _ in 0..10 {
        let r = get(&t.url("/"), &[]);
        assert!(
            matches!(r.backend(), Some("b2" | "b3")),
            "{:?}",
            r.backend()
        );
    }
    // The answer going back to the set in service clears the held one…
    dns.set_hosts(&hosts_file("app.test", &[2, 3]));
    wait_for("the held answer dropped", WAIT, || {
        discovery_status(&t, "app")["held"].is_null()
    });
    assert_eq!(
        discovery_status(&t, "app")["last_resolution"]["result"],
        "unchanged"
    );
    // …and the mistake coming again is held again (and logged again: a new state).
    dns.set_hosts(&hosts_file("app.test", &[4, 5]));
    wait_for("held again", WAIT, || {
        !discovery_status(&t, "app")["held"].is_null()
    });
    assert_eq!(t.stderr().matches("is held back").count(), 2);
    // Forced: the held answer goes in.
    let r = post(&t.admin_url("/reload?force=true"), &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the held answer in service", WAIT, || {
        ids_of(&t, "app") == vec![id(4, port), id(5, port)]
    });
    assert!(discovery_status(&t, "app")["held"].is_null());
    for _ in 0..10 {
        let r = get(&t.url("/"), &[]);
        assert!(
            matches!(r.backend(), Some("b4" | "b5")),
            "{:?}",
            r.backend()
        );
    }
    // One more address: a small move, applied without force.
    dns.set_hosts(&hosts_file("app.test", &[3, 4, 5]));
    wait_for("a small change applied", WAIT, || {
        ids_of(&t, "app").len() == 3
    });
    drop(b);
}

#[test]
fn two_instances_agree_through_changes() {
    let port = shared_port(&[2, 3, 4, 5]);
    let b = backends(&[2, 3, 4, 5], port);
    let dns = Dns::start(&hosts_file("app.test", &[2, 3, 4]), &[]);
    let cfg = config(
        "policy = \"hash\"\n[pool.app.hash]\nkey = \"header:x-user\"\npin = true",
        &format!(
            "dns = \"app.test:{port}\"\ninterval = \"1s\"\nresolvers = [\"{}\"]",
            dns.addr()
        ),
        "",
    );
    let t1 = Tether::start(&cfg);
    let t2 = Tether::start(&cfg);
    let owners = |t: &Tether| -> Vec<String> {
        (0..100)
            .map(|k| {
                let r = get(&t.url("/"), &[("x-user", &format!("user-{k}"))]);
                assert_eq!(r.status, 200);
                r.backend().unwrap_or("").to_owned()
            })
            .collect()
    };
    let agree = |what: &str| {
        let (o1, o2) = (owners(&t1), owners(&t2));
        let same = o1.iter().zip(&o2).filter(|(a, b)| a == b).count();
        assert_eq!(same, 100, "{what}: {same}/100 keys agree");
        o1
    };
    let first = agree("at start");
    // A cookie issued by one instance is honoured by the other.
    let r = get(&t1.url("/"), &[("x-user", "user-7")]);
    let c = r.set_cookie("tether_app").expect("pinned cookie");
    let r2 = get(
        &t2.url("/"),
        &[("x-user", "user-7"), ("cookie", &format!("tether_app={c}"))],
    );
    assert_eq!(r2.backend(), r.backend());
    assert_eq!(
        r2.set_cookie("tether_app"),
        None,
        "a hit sets no new cookie"
    );

    // An address added…
    dns.set_hosts(&hosts_file("app.test", &[2, 3, 4, 5]));
    let want = sorted((2..=5).map(|h| id(h, port)).collect());
    wait_for("both instances see the new address", WAIT, || {
        ids_of(&t1, "app") == want && ids_of(&t2, "app") == want
    });
    let grown = agree("after an address was added");
    assert!(
        grown.iter().any(|o| o == "b5"),
        "the new address owns some keys"
    );
    let moved = first.iter().zip(&grown).filter(|(a, b)| a != b).count();
    assert!(
        moved < 50,
        "consistent hashing: {moved}/100 keys moved for one of four"
    );
    // …and one removed.
    dns.set_hosts(&hosts_file("app.test", &[3, 4, 5]));
    let want = sorted((3..=5).map(|h| id(h, port)).collect());
    wait_for("both instances lose the address", WAIT, || {
        ids_of(&t1, "app") == want && ids_of(&t2, "app") == want
    });
    let shrunk = agree("after an address was removed");
    assert!(!shrunk.iter().any(|o| o == "b2"));
    drop(b);
}
