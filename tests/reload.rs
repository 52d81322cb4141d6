//! Hot reload end to end: zero failed requests under a continuous stream while backends are
//! added, removed and re-weighted (and one invalid file is refused), state carried over by id,
//! socket-level changes refused, the file watcher, and sessions of removed backends.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn config(pool_policy: &str, backends: &[(&Backend, u32)], extra_server: &str) -> String {
    let mut s = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
{extra_server}
[affinity]
secret = "reload-test-secret-0123456789"
[[route]]
pool = "web"
[pool.web]
policy = "{pool_policy}"
[pool.web.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1
"#
    );
    for (b, w) in backends {
        s.push_str(&format!(
            "[[pool.web.backend]]\nid = \"{}\"\naddr = \"{}\"\nweight = {w}\n",
            b.name(),
            b.addr()
        ));
    }
    s
}

fn generation(t: &Tether) -> f64 {
    t.metric("tether_config_generation", &[]).unwrap_or(0.0)
}

fn reload_ok(t: &Tether, cfg: &str) {
    let before = generation(t);
    t.write_config(cfg);
    t.sighup();
    wait_for("the reload to take effect", WAIT, || generation(t) > before);
    assert_eq!(
        t.metric("tether_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn reloads_under_load_lose_no_request() {
    let b: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let t = Tether::start(&config("round_robin", &[(&b[0], 1), (&b[1], 1)], ""));
    let url = t.url("/");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                // Bounded: at most 100k requests or until told to stop.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match try_get(&url, &[]) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            errors.push(format!("status {}", r.status));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            errors.push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                errors
            })
        })
        .collect();
    let progress = |n: usize| {
        let target = ok.load(Ordering::Relaxed) + n;
        wait_for("requests to flow", WAIT, || {
            ok.load(Ordering::Relaxed) >= target
        });
    };
    progress(50);
    for round in 0..3 {
        // Add b3, then b4; re-weight; remove b1; an invalid file in between changes nothing.
        reload_ok(
            &t,
            &config("round_robin", &[(&b[0], 1), (&b[1], 1), (&b[2], 2)], ""),
        );
        progress(50);
        reload_ok(
            &t,
            &config(
                "round_robin",
                &[(&b[0], 3), (&b[1], 1), (&b[2], 1), (&b[3], 1)],
                "",
            ),
        );
        progress(50);
        let failures = t
            .metric("tether_config_reloads_total", &[("result", "failure")])
            .unwrap();
        t.write_config("[server]\nlisten = [\"{LISTEN}\"]\nthis is not toml");
        t.sighup();
        wait_for("the invalid reload to be counted", WAIT, || {
            t.metric("tether_config_reloads_total", &[("result", "failure")]) > Some(failures)
        });
        assert_eq!(
            t.metric("tether_config_last_reload_successful", &[]),
            Some(0.0)
        );
        progress(50);
        reload_ok(
            &t,
            &config("round_robin", &[(&b[1], 1), (&b[2], 1), (&b[3], 2)], ""),
        );
        progress(50);
        if round < 2 {
            reload_ok(&t, &config("round_robin", &[(&b[0], 1), (&b[1], 1)], ""));
            progress(50);
        }
    }
    let b1_hits = b[0].hits();
    progress(100);
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 500);
    assert!(
        b[2].hits() > 0 && b[3].hits() > 0,
        "new backends receive traffic"
    );
    assert_eq!(
        b[0].hits(),
        b1_hits,
        "a removed backend gets no new requests"
    );
    // Series of the removed backend are gone.
    assert_eq!(
        t.metric("tether_backend_up", &[("pool", "web"), ("backend", "b1")]),
        None
    );
}

#[test]
fn health_and_admin_state_survive_reload_and_socket_changes_are_refused() {
    let b: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let all = [(&b[0], 1), (&b[1], 1), (&b[2], 1)];
    let t = Tether::start(&config("cookie", &all, ""));
    assert_eq!(
        post(&t.admin_url("/pools/web/backends/b1/drain"), &[], "").status,
        200
    );
    b[1].set_health(500);
    wait_for("b2 down", WAIT, || {
        t.metric("tether_backend_up", &[("pool", "web"), ("backend", "b2")]) == Some(0.0)
    });

    // An unrelated change (weights of b3): states are kept by id.
    reload_ok(
        &t,
        &config("cookie", &[(&b[0], 1), (&b[1], 1), (&b[2], 5)], ""),
    );
    let st = t.status();
    let backends = st["pools"][0]["backends"].as_array().unwrap();
    let find = |id: &str| backends.iter().find(|x| x["id"] == id).unwrap().clone();
    assert_eq!(find("b1")["state"], "drain");
    assert_eq!(find("b2")["state"], "down");
    assert_eq!(find("b3")["weight"], 5);

    // Listener and thread changes need new sockets: refused, the old config keeps serving.
    let gen = generation(&t);
    for extra in ["threads = 3", "listen = [\"127.0.0.1:1\"]"] {
        let cfg = config("cookie", &all, extra).replace(
            "listen = [\"{LISTEN}\"]\n",
            if extra.starts_with("listen") {
                ""
            } else {
                "listen = [\"{LISTEN}\"]\n"
            },
        );
        t.write_config(&cfg);
        let r = post(&t.admin_url("/reload"), &[], "");
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.body.contains("restart"), "{}", r.body);
        assert_eq!(generation(&t), gen);
        assert_eq!(get(&t.url("/"), &[]).status, 200);
    }
    assert!(t.stderr().contains("reload refused"));
}

#[test]
fn watcher_reloads_on_file_change_and_removed_backends_sessions_migrate() {
    let b: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    // Debug logs of the reloader show each look of the watcher at an unchanged file.
    let t = Tether::start_with(
        &config(
            "cookie",
            &[(&b[0], 1), (&b[1], 1), (&b[2], 1)],
            "watch = true",
        ),
        &[],
        &[("RUST_LOG", "info,tether::control::reload=debug")],
    );
    // A session on some backend.
    let r = get(&t.url("/"), &[]);
    let cookie = r.set_cookie("tether_web").unwrap();
    let home = r.backend().unwrap().to_owned();
    let rest: Vec<(&Backend, u32)> = b
        .iter()
        .filter(|x| x.name() != home)
        .map(|x| (x, 1))
        .collect();
    let gen = generation(&t);
    t.write_config(&config("cookie", &rest, "watch = true"));
    wait_for("the watcher to reload", WAIT, || generation(&t) > gen);
    let moved = get(&t.url("/"), &[("Cookie", &format!("tether_web={cookie}"))]);
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), Some(&*home));
    assert!(moved.set_cookie("tether_web").is_some());
    let to = moved.backend().unwrap();
    assert_eq!(
        t.metric(
            "tether_affinity_migrations_total",
            &[
                ("pool", "web"),
                ("from", &home),
                ("to", to),
                ("reason", "removed")
            ]
        ),
        Some(1.0)
    );
    // Unchanged content is not reloaded again (deduplicated by content hash): wait until the
    // watcher has looked at the rewritten file twice (the second look began after the write),
    // then nothing must have changed.
    let gen = generation(&t);
    let looks = |t: &Tether| t.stderr().matches("configuration file unchanged").count();
    let before = looks(&t);
    t.write_config(&config("cookie", &rest, "watch = true"));
    wait_for("two watcher looks at the rewritten file", WAIT, || {
        looks(&t) >= before + 2
    });
    assert_eq!(generation(&t), gen);
}
