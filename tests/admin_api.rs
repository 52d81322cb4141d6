//! The admin API end to end (DESIGN.md §8), on the real binary: `/status`, `POST /reload`
//! (success and failure), `POST /pools/{pool}/backends/{id}/{drain|maint|ready}`, the bearer
//! token, metric series of removed backends, and `tether check` refusing an admin listener off
//! loopback without a token.
//!
//! Owns: the admin API contract as an operator (or an orchestration script) sees it. Must not
//! touch: tether's internals — only HTTP on the admin and proxy listeners, files and exit codes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Patience for anything that should happen "soon" (reloads, health flips).
const PATIENCE: Duration = Duration::from_secs(10);

/// `[server]` with the harness placeholders plus `extra` lines.
fn server(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{{LISTEN}}\"]\nadmin = \"{{ADMIN}}\"\nthreads = 1\n\
         grace_period = \"1s\"\n{extra}\n"
    )
}

/// One round-robin pool `web` on `/`, with active health checks, over `backends`.
fn web_config(server_extra: &str, backends: &[&Backend]) -> String {
    let mut c = server(server_extra);
    c.push_str(
        r#"
[[route]]
pool = "web"

[pool.web]
policy = "round_robin"

[pool.web.health]
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
"#,
    );
    c.push_str(&backend_tables("web", backends));
    c
}

/// `POST` an admin path with optional extra headers.
#[track_caller]
fn admin_post(t: &Tether, path: &str, headers: &[(&str, &str)]) -> Resp {
    post(&t.admin_url(path), headers, "")
}

#[track_caller]
fn json(r: &Resp) -> Value {
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): status {} body {:?}", r.status, r.body))
}

/// The `/status` entry of backend `id` in `pool`.
#[track_caller]
fn backend_status(status: &Value, pool: &str, id: &str) -> Value {
    let pool_v = status["pools"]
        .as_array()
        .expect("pools[]")
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool:?} in /status: {status:#}"));
    pool_v["backends"]
        .as_array()
        .expect("backends[]")
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {id:?} in pool {pool:?} in /status: {status:#}"))
}

/// Backend ids of `pool` in `/status`, in order.
fn backend_ids(status: &Value, pool: &str) -> Vec<String> {
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == pool)
        .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| b["id"].as_str().unwrap_or("").to_string())
        .collect()
}

// ----- 6. /status and reload -----

#[test]
fn status_shape_and_reload_success_and_failure() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let t = Tether::start(&web_config("", &[&a, &b]));

    let s = t.status();
    assert_eq!(s["generation"], 1, "first generation is 1: {s:#}");
    let path = s["config"]["path"].as_str().expect("config.path");
    assert_eq!(
        std::fs::canonicalize(path).ok(),
        std::fs::canonicalize(t.config_path()).ok(),
        "config.path names the running file: {s:#}"
    );
    let hash1 = s["config"]["hash"]
        .as_str()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| panic!("config.hash is a non-empty string: {s:#}"))
        .to_string();
    assert_eq!(s["config"]["last_reload_successful"], true, "{s:#}");
    let routes = s["routes"].as_array().expect("routes[]");
    assert_eq!(routes.len(), 1, "{s:#}");
    assert_eq!(routes[0]["name"], "/", "default route name: {s:#}");
    assert_eq!(routes[0]["pool"], "web", "{s:#}");
    let pools = s["pools"].as_array().expect("pools[]");
    assert_eq!(pools.len(), 1, "{s:#}");
    assert_eq!(pools[0]["name"], "web");
    assert_eq!(pools[0]["policy"], "round_robin");
    assert_eq!(backend_ids(&s, "web"), ["a", "b"]);
    for be in [&a, &b] {
        let v = backend_status(&s, "web", be.name());
        assert_eq!(v["addr"], be.addr().to_string(), "{v}");
        assert_eq!(v["weight"], 1, "{v}");
        assert_eq!(v["health"], "up", "{v}");
        assert_eq!(v["admin"], "ready", "{v}");
        assert_eq!(v["state"], "up", "{v}");
        assert_eq!(v["in_flight"], 0, "{v}");
    }
    assert_eq!(t.metric("tether_config_generation", &[]), Some(1.0));

    // Success: a backend added.
    t.write_config(&web_config("", &[&a, &b, &c]));
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 200, "POST /reload: {}", r.body);
    let body = json(&r);
    assert_eq!(body["result"], "success", "{body:#}");
    assert_eq!(body["generation"], 2, "{body:#}");
    let s = t.status();
    assert_eq!(s["generation"], 2, "{s:#}");
    assert_eq!(backend_ids(&s, "web"), ["a", "b", "c"]);
    assert_eq!(backend_status(&s, "web", "c")["addr"], c.addr().to_string());
    assert_ne!(s["config"]["hash"], hash1, "a new file, a new hash: {s:#}");
    assert_eq!(s["config"]["last_reload_successful"], true, "{s:#}");
    let m = t.metrics();
    assert_eq!(prom_value(&m, "tether_config_generation", &[]), Some(2.0));
    assert_eq!(
        prom_value(&m, "tether_config_reloads_total", &[("result", "success")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        prom_value(&m, "tether_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let failures_before =
        prom_value(&m, "tether_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0);
    // The new backend takes traffic.
    wait_for("backend c serves", PATIENCE, || {
        get(&t.url("/x"), &[]).backend() == Some("c")
    });

    // Failure: an out-of-range value. Named by key path; nothing changes.
    let bad = web_config("", &[&a, &b, &c]).replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nretries = 99",
    );
    t.write_config(&bad);
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 422, "POST /reload of a bad file: {}", r.body);
    let body = json(&r);
    assert_eq!(body["result"], "failure", "{body:#}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors[]: {body:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("pool.web.retries")),
        "an error names the key pool.web.retries: {errors:?}"
    );
    let m = t.metrics();
    assert_eq!(
        prom_value(&m, "tether_config_last_reload_successful", &[]),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        prom_value(&m, "tether_config_reloads_total", &[("result", "failure")]),
        Some(failures_before + 1.0),
        "{m}"
    );
    assert_eq!(prom_value(&m, "tether_config_generation", &[]), Some(2.0));
    let s = t.status();
    assert_eq!(
        s["generation"], 2,
        "a failed reload keeps the generation: {s:#}"
    );
    assert_eq!(s["config"]["last_reload_successful"], false, "{s:#}");
    assert_eq!(backend_ids(&s, "web"), ["a", "b", "c"]);
    // The old config still serves, over all three backends.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = get(&t.url("/still"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.backend().unwrap_or("").to_string());
    }
    assert_eq!(seen.len(), 3, "round-robin over a, b, c: {seen:?}");

    // A syntactically broken file fails the same way.
    t.write_config("[server\nlisten = ");
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 422, "POST /reload of a broken file: {}", r.body);
    assert_eq!(json(&r)["result"], "failure");
    assert_eq!(
        t.metric("tether_config_reloads_total", &[("result", "failure")]),
        Some(failures_before + 2.0)
    );
    assert_eq!(t.status()["generation"], 2);

    // A good file again recovers the gauge.
    t.write_config(&web_config("", &[&a, &b]));
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["generation"], 3);
    assert_eq!(
        t.metric("tether_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(backend_ids(&t.status(), "web"), ["a", "b"]);
}

// ----- 7. drain / maint / ready -----

#[track_caller]
fn assert_state(t: &Tether, id: &str, admin: &str, state: &str) {
    let v = backend_status(&t.status(), "web", id);
    assert_eq!(v["admin"], admin, "{id}: {v}");
    assert_eq!(v["state"], state, "{id}: {v}");
    let m = t.metrics();
    for s in ["up", "down", "drain", "maint"] {
        let want = if s == state { 1.0 } else { 0.0 };
        assert_eq!(
            prom_value(
                &m,
                "tether_backend_state",
                &[("pool", "web"), ("backend", id), ("state", s)]
            ),
            Some(want),
            "tether_backend_state{{backend={id},state={s}}}:\n{m}"
        );
    }
}

#[test]
fn drain_maint_ready_change_status_and_metrics() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let t = Tether::start(&web_config("", &[&a, &b]));
    assert_state(&t, "a", "ready", "up");

    let r = admin_post(&t, "/pools/web/backends/a/drain", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = json(&r);
    assert_eq!(body["admin"], "drain", "{body:#}");
    assert_state(&t, "a", "drain", "drain");
    assert_state(&t, "b", "ready", "up");
    // Round-robin has no sessions to keep: a draining backend gets no new requests.
    for _ in 0..4 {
        assert_eq!(get(&t.url("/"), &[]).backend(), Some("b"));
    }

    let r = admin_post(&t, "/pools/web/backends/a/maint", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["admin"], "maint");
    assert_state(&t, "a", "maint", "maint");
    for _ in 0..4 {
        assert_eq!(get(&t.url("/"), &[]).backend(), Some("b"));
    }

    let r = admin_post(&t, "/pools/web/backends/a/ready", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["admin"], "ready");
    assert_state(&t, "a", "ready", "up");
    wait_for("a takes traffic again", PATIENCE, || {
        get(&t.url("/"), &[]).backend() == Some("a")
    });

    // Admin state survives a reload (kept by id).
    admin_post(&t, "/pools/web/backends/b/drain", &[]);
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_state(&t, "b", "drain", "drain");

    // Unknown pool, backend or action: 404 with a message naming it; nothing changes.
    for (path, names) in [
        ("/pools/nope/backends/a/drain", "nope"),
        ("/pools/web/backends/zz/drain", "zz"),
        ("/pools/web/backends/a/explode", "explode"),
    ] {
        let r = admin_post(&t, path, &[]);
        assert_eq!(r.status, 404, "POST {path}: {}", r.body);
        assert!(
            r.body.contains(names),
            "POST {path}: the 404 message names {names:?}: {:?}",
            r.body
        );
    }
    assert_state(&t, "a", "ready", "up");
    assert_state(&t, "b", "drain", "drain");
}

/// A web page of another origin cannot drive the admin API through the operator's browser
/// (cross-site request forgery): its POSTs are refused with 403 and change nothing, while the
/// status page's own origin and scripts without an `Origin` still work.
#[test]
fn cross_site_posts_are_refused() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let t = Tether::start(&web_config("", &[&a, &b]));
    let admin = t.admin().to_string();
    let own = format!("http://{admin}");
    let rebound_host = format!("evil.example:{}", t.admin().port());
    let rebound_origin = format!("http://{rebound_host}");
    for (what, headers) in [
        ("another origin", vec![("Origin", "http://evil.example")]),
        ("an opaque origin", vec![("Origin", "null")]),
        (
            "a cross-site fetch",
            vec![("Origin", own.as_str()), ("Sec-Fetch-Site", "cross-site")],
        ),
        (
            "a rebound DNS name",
            vec![
                ("Host", rebound_host.as_str()),
                ("Origin", rebound_origin.as_str()),
            ],
        ),
    ] {
        let r = admin_post(&t, "/pools/web/backends/a/maint", &headers);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        let r = admin_post(&t, "/reload", &headers);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert_state(&t, "a", "ready", "up");
    }
    // The status page's own origin (what its buttons send), and a script's plain POST.
    let r = admin_post(
        &t,
        "/pools/web/backends/a/maint",
        &[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_state(&t, "a", "maint", "maint");
    let r = admin_post(&t, "/pools/web/backends/a/ready", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_state(&t, "a", "ready", "up");
    // Reads stay open to any page's scripts' requests (they carry no state change).
    assert_eq!(
        get(
            &t.admin_url("/status"),
            &[("Origin", "http://evil.example")]
        )
        .status,
        200
    );
}

// ----- 8. bearer token -----

#[test]
fn admin_token_guards_posts_only() {
    let token = "s3cret-token-for-tests";
    let secrets = tempfile::Builder::new()
        .prefix("tether-token-")
        .tempdir()
        .expect("temp dir");
    let token_file = secrets.path().join("admin.token");
    // Surrounding whitespace is trimmed (a trailing newline from `echo` must not matter).
    std::fs::write(&token_file, format!("{token}\n")).expect("write token file");
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let t = Tether::start(&web_config(
        &format!("admin_token_file = \"{}\"", token_file.display()),
        &[&a, &b],
    ));

    let right = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let denied: [&[(&str, &str)]; 4] = [
        &[],
        &[("Authorization", wrong.as_str())],
        &[("Authorization", token)],
        &[("Authorization", "Bearer ")],
    ];
    for headers in denied {
        let r = admin_post(&t, "/pools/web/backends/a/drain", headers);
        assert_eq!(r.status, 401, "POST drain with {headers:?}: {}", r.body);
        let r = admin_post(&t, "/reload", headers);
        assert_eq!(r.status, 401, "POST /reload with {headers:?}: {}", r.body);
    }
    let s = t.status();
    assert_eq!(backend_status(&s, "web", "a")["admin"], "ready", "{s:#}");
    assert_eq!(s["generation"], 1, "no reload happened: {s:#}");
    assert_eq!(
        t.metric_sum("tether_config_reloads_total", &[]),
        0.0,
        "no reload attempted"
    );

    // GETs need no token.
    for path in ["/healthz", "/status", "/metrics"] {
        let r = get(&t.admin_url(path), &[]);
        assert_eq!(r.status, 200, "GET {path} without a token: {}", r.body);
    }

    let auth = [("Authorization", right.as_str())];
    let r = admin_post(&t, "/pools/web/backends/a/drain", &auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(backend_status(&t.status(), "web", "a")["admin"], "drain");
    let r = admin_post(&t, "/reload", &auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(t.status()["generation"], 2);
    let r = admin_post(&t, "/pools/web/backends/a/ready", &auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(backend_status(&t.status(), "web", "a")["admin"], "ready");
}

// ----- 9. removed backends' series -----

/// Every sample in `text` with a label (any name) equal to `id`, among the labels that name a
/// backend.
fn series_naming(text: &str, id: &str) -> Vec<Sample> {
    parse_prometheus(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|s| {
            s.labels
                .iter()
                .any(|(n, v)| matches!(n.as_str(), "backend" | "from" | "to") && v == id)
        })
        .collect()
}

#[test]
fn removed_backends_series_disappear_after_reload() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let (s1, s2) = (Backend::start("s1"), Backend::start("s2"));
    let config = |web: &[&Backend], shop: &[&Backend]| {
        let mut cfg = web_config("", web);
        cfg.push_str(
            r#"
[affinity]
secret = "admin-api-test-secret-0123456789"

[[route]]
path_prefix = "/shop"
pool = "shop"

[pool.shop]
policy = "cookie"

[pool.shop.health]
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
"#,
        );
        cfg.push_str(&backend_tables("shop", shop));
        cfg
    };
    let t = Tether::start(&config(&[&a, &b, &c], &[&s1, &s2]));

    // Traffic to every web backend, and one shop session migrated away from its home.
    wait_for("c served a request", PATIENCE, || {
        get(&t.url("/w"), &[]).backend() == Some("c")
    });
    let first = get(&t.url("/shop/x"), &[]);
    let home = first.backend().expect("x-backend").to_string();
    let cookie = format!(
        "tether_shop={}",
        first.set_cookie("tether_shop").expect("affinity cookie")
    );
    let r = admin_post(&t, &format!("/pools/shop/backends/{home}/maint"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let moved = get(&t.url("/shop/x"), &[("Cookie", &cookie)]);
    let new_home = moved.backend().expect("x-backend").to_string();
    assert_ne!(new_home, home, "{moved:?}");
    wait_for("health checks of c counted", PATIENCE, || {
        t.metric_sum("tether_health_checks_total", &[("backend", "c")]) >= 1.0
    });

    let before = t.metrics();
    let c_series: Vec<String> = series_naming(&before, "c")
        .into_iter()
        .map(|s| s.name)
        .collect();
    for family in [
        "tether_requests_total",
        "tether_backend_up",
        "tether_backend_state",
        "tether_backend_in_flight",
        "tether_health_checks_total",
    ] {
        assert!(
            c_series.iter().any(|n| n == family),
            "before the reload, {family} has a series for c:\n{before}"
        );
    }
    assert!(
        !series_naming(&before, &home)
            .iter()
            .filter(|s| s.name == "tether_affinity_migrations_total")
            .collect::<Vec<_>>()
            .is_empty(),
        "before the reload, a migration from {home}:\n{before}"
    );
    let a_requests = prom_sum(
        &before,
        "tether_requests_total",
        &[("pool", "web"), ("backend", "a")],
    );
    assert!(a_requests >= 1.0, "{before}");

    // Remove c from web and the migrated session's old home from shop.
    let shop_left: Vec<&Backend> = [&s1, &s2]
        .into_iter()
        .filter(|be| be.name() != home)
        .collect();
    t.write_config(&config(&[&a, &b], &shop_left));
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.body);

    let after = t.metrics();
    let left_c = series_naming(&after, "c");
    assert!(
        left_c.is_empty(),
        "series of removed backend c remain: {left_c:#?}"
    );
    let left_home = series_naming(&after, &home);
    assert!(
        left_home.is_empty(),
        "series of removed backend {home} remain: {left_home:#?}"
    );
    // Unchanged backends keep their series and counts.
    assert_eq!(
        prom_sum(
            &after,
            "tether_requests_total",
            &[("pool", "web"), ("backend", "a")]
        ),
        a_requests,
        "a's request count survives the reload:\n{after}"
    );
    assert_eq!(
        prom_value(
            &after,
            "tether_backend_up",
            &[("pool", "web"), ("backend", "b")]
        ),
        Some(1.0)
    );
    assert!(
        !series_naming(&after, &new_home).is_empty(),
        "{new_home} still has series:\n{after}"
    );

    // Removing the whole pool (and its route) removes every series labelled with it.
    t.write_config(&web_config("", &[&a, &b]));
    let r = admin_post(&t, "/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let after = t.metrics();
    let shop: Vec<Sample> = parse_prometheus(&after)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|s| s.label("pool") == Some("shop") || s.label("route") == Some("/shop"))
        .collect();
    assert!(
        shop.is_empty(),
        "series of removed pool shop remain: {shop:#?}"
    );
    assert!(
        prom_sum(&after, "tether_requests_total", &[("pool", "web")]) >= a_requests,
        "{after}"
    );
}

// ----- 10. `tether check`: admin off loopback -----

/// A minimal valid config with `admin` set to `admin` and `extra` in `[server]`.
fn check_config(admin: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{{LISTEN}}\"]\nadmin = \"{admin}\"\ngrace_period = \"1s\"\n\
         {extra}\n\n[[route]]\npool = \"web\"\n\n[pool.web]\npolicy = \"round_robin\"\n\n\
         [[pool.web.backend]]\nid = \"a\"\naddr = \"127.0.0.1:9\"\n"
    )
}

#[test]
fn check_refuses_admin_off_loopback_without_token() {
    let mut p = Tether::spawn_raw(
        &check_config("0.0.0.0:9901", ""),
        &["check", "-c", "{CONFIG}"],
    );
    let status = p.expect_exit(Duration::from_secs(30));
    let stderr = p.stderr();
    assert_eq!(
        status.code(),
        Some(1),
        "tether check exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("admin_token_file"),
        "the error mentions admin_token_file:\n{stderr}"
    );
    assert!(
        stderr.contains("server.admin"),
        "the error names the key server.admin:\n{stderr}"
    );

    // The same address with a token file is fine.
    let secrets = tempfile::Builder::new()
        .prefix("tether-token-")
        .tempdir()
        .expect("temp dir");
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, "t0ken\n").expect("write token");
    let mut p = Tether::spawn_raw(
        &check_config(
            "0.0.0.0:9901",
            &format!("admin_token_file = \"{}\"", token_file.display()),
        ),
        &["check", "-c", "{CONFIG}"],
    );
    let status = p.expect_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "with a token file the config is valid; stderr:\n{}",
        p.stderr()
    );
}
