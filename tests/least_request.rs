//! `policy = "least_request"` (weighted power of two choices over in-flight counts) on the real
//! binary: a slow backend, which keeps requests in flight longer, gets fewer of them.

mod common;

use std::time::Duration;

use common::*;

fn config(backends: &[&Backend], extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 2
grace_period = "1s"

[[route]]
pool = "p"

[pool.p]
policy = "least_request"
{extra}
{}"#,
        backend_tables("p", backends)
    )
}

#[test]
fn a_slow_backend_gets_fewer_requests() {
    let (fast, slow) = (Backend::start("fast"), Backend::start("slow"));
    slow.set_delay(Duration::from_millis(150));
    let t = Tether::start(&config(&[&fast, &slow], ""));
    // 8 clients, 25 requests each, all at once: whoever has fewer in flight gets the next one.
    let url = t.url("/");
    let answered: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| {
                            let r = get(&url, &[]);
                            assert_eq!(r.status, 200);
                            r.backend().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let slow_n = answered.iter().filter(|b| *b == "slow").count();
    let fast_n = answered.len() - slow_n;
    assert_eq!(answered.len(), 200);
    // Round robin would split 100/100; least-request keeps the slow one at its few in flight.
    assert!(
        slow_n * 4 < fast_n,
        "slow backend got {slow_n}, fast got {fast_n}"
    );
    assert!(
        slow_n > 0,
        "the slow backend still takes its share when idle"
    );
    assert_eq!(t.status()["pools"][0]["policy"], "least_request");
}

#[test]
fn idle_backends_share_by_weight_and_failover_works() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = free_port_outside_ephemeral_range();
    let t = Tether::start(&format!(
        "{}[[pool.p.backend]]\nid = \"dead\"\naddr = \"127.0.0.1:{dead}\"\n",
        config(&[&a, &b], "retries = 2")
    ));
    // Sequential requests: nothing is ever in flight, so every pair is a tie and the first
    // drawn wins — an even spread; the dead backend's connect failures fail over.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let r = get(&t.url("/"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
        *seen.entry(r.backend().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert!(seen.get("a").copied().unwrap_or(0) >= 10, "{seen:?}");
    assert!(seen.get("b").copied().unwrap_or(0) >= 10, "{seen:?}");
}
