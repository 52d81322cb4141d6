//! Observability end to end, on the real binary: the `/metrics` exposition passes `promtool check
//! metrics` and carries every family of DESIGN.md §8 with HELP text; a real Prometheus server
//! scrapes it and sees exact counts; the Grafana dashboard queries only exported families; the
//! systemd unit passes `systemd-analyze verify`; the JSON access log and request ids.
//!
//! Owns: the contract between tether and the tools operators point at it (Prometheus, promtool,
//! Grafana, systemd, log shippers). Must not touch: tether's internals — everything goes through
//! sockets, files and processes, as in production. External tools come from Debian packages that
//! `.ci/run` installs (`prometheus`, `systemd`); a missing tool is a failure, not a silent skip
//! (`systemd-analyze` may be skipped on purpose, loudly, with `TETHER_SKIP_SYSTEMD=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Patience for anything tether or a backend should do "soon" (health flips, log lines).
const PATIENCE: Duration = Duration::from_secs(10);
/// Patience for Prometheus: start-up plus a few 1 s scrapes on a loaded 2-core machine.
const PROM_PATIENCE: Duration = Duration::from_secs(30);

/// Every metric family of DESIGN.md §8's table (the contract, copied here on purpose: a rename
/// in the code must fail this test until the design says so).
const DESIGN_METRICS: [&str; 14] = [
    "tether_requests_total",
    "tether_request_duration_seconds",
    "tether_upstream_connect_failures_total",
    "tether_retries_total",
    "tether_backend_up",
    "tether_backend_state",
    "tether_backend_in_flight",
    "tether_health_checks_total",
    "tether_affinity_total",
    "tether_affinity_migrations_total",
    "tether_config_reloads_total",
    "tether_config_last_reload_successful",
    "tether_config_generation",
    "tether_build_info",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Full path of `tool` on PATH (or in /usr/bin, /usr/sbin, where Debian puts it).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Like [`find_tool`], but panics saying which Debian package `.ci/run` installs for it.
#[track_caller]
fn require_tool(tool: &str, package: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!(
            "`{tool}` is not on PATH: this test needs it and is not skipped. .ci/run installs \
             Debian's `{package}` package (apt-get install {package}); install it to run the \
             test locally."
        )
    })
}

/// A config with two pools: `web` (round-robin, no health checks) under `/web` and `shop`
/// (cookie, active health checks) under `/shop`. Any other path has no route (404).
fn two_pool_config(web: &[&Backend], shop: &[&Backend]) -> String {
    let jwt_key = repo("tests/fixtures/jwt/rsa.pub.pem");
    let mut c = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
grace_period = "1s"

[affinity]
secret = "observability-test-secret-0123456789"

[[route]]
path_prefix = "/web"
pool = "web"

[[route]]
path_prefix = "/shop"
pool = "shop"

# The gateway stages (DESIGN.md §14, §15), so that their families are exported: a limit no test
# request reaches, a Redis limit whose Redis is not there (allowed, counted as a store error),
# a JWT route, and a bounded-load hash pool (§16) on the web backends.
[[route]]
path_prefix = "/web/limited"
pool = "web"
rate_limits = ["generous"]

[[route]]
path_prefix = "/web/fleet"
pool = "web"
rate_limits = ["fleet"]

[[route]]
path_prefix = "/web/api"
pool = "web"
jwt = "users"

[[route]]
path_prefix = "/hashed"
pool = "hashed"

[rate_limit.generous]
rate = 1000000
per = "1s"

[rate_limit.fleet]
rate = 1000000
per = "1s"
store = "redis"
on_store_error = "allow"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = "50ms"

[jwt.users]
key_file = "{jwt_key}"
algorithms = ["RS256"]

[pool.web]
policy = "round_robin"

[pool.shop]
policy = "cookie"

[pool.shop.health]
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

# A cap no test request reaches: the queue's families (DESIGN.md §13) are exported.
[pool.shop.circuit_breaker]
max_in_flight = 100

[pool.hashed]
policy = "hash"
[pool.hashed.hash]
key = "header:X-User"
balance_factor = 1.25

# DNS discovery (DESIGN.md §22) through the system's resolver: `localhost` is in /etc/hosts, so
# its families are exported without a DNS server (tests/discovery.rs runs a real one).
[pool.found]
policy = "round_robin"
[pool.found.discover]
dns = "localhost:{found_port}"
"#,
        jwt_key = jwt_key.display(),
        found_port = web[0].addr().port()
    );
    c.push_str(&backend_tables("web", web));
    c.push_str(&backend_tables("shop", shop));
    c.push_str(&backend_tables("hashed", web));
    c
}

/// Sends traffic that makes every metric family of DESIGN.md §8 have at least one series: round
/// robin and cookie requests, a request with no route (404), a tampered cookie, and a session
/// migration (the pinned backend put into maintenance through the admin API).
fn exercise_every_family(t: &Tether) {
    for _ in 0..4 {
        let r = get(&t.url("/web/page"), &[]);
        assert_eq!(r.status, 200, "GET /web/page: {r:?}");
    }
    let r = get(&t.url("/nowhere"), &[]);
    assert_eq!(r.status, 404, "a path without a route: {r:?}");

    // The gateway stages: a limit that allows, a Redis limit whose store is down (allowed by
    // on_store_error = "allow"), a JWT route without a token (401), a hashed request.
    assert_eq!(get(&t.url("/web/limited"), &[]).status, 200);
    assert_eq!(get(&t.url("/web/fleet"), &[]).status, 200);
    let r = get(&t.url("/web/api"), &[]);
    assert_eq!(r.status, 401, "a JWT route without a token: {r:?}");
    assert_eq!(get(&t.url("/hashed/x"), &[("X-User", "u1")]).status, 200);

    // A new session, a hit, a tampered cookie.
    let first = get(&t.url("/shop/cart"), &[]);
    assert_eq!(first.status, 200, "GET /shop/cart: {first:?}");
    let cookie = first
        .set_cookie("tether_shop")
        .unwrap_or_else(|| panic!("cookie pool sets tether_shop: {first:?}"));
    let home = first.backend().expect("x-backend").to_string();
    let cookie_header = format!("tether_shop={cookie}");
    let hit = get(&t.url("/shop/cart"), &[("Cookie", &cookie_header)]);
    assert_eq!(hit.backend(), Some(home.as_str()), "affinity hit: {hit:?}");
    let r = get(&t.url("/shop/cart"), &[("Cookie", "tether_shop=tampered")]);
    assert_eq!(
        r.status, 200,
        "a tampered cookie is treated as absent: {r:?}"
    );

    // A migration: the session's home goes into maintenance.
    let r = post(
        &t.admin_url(&format!("/pools/shop/backends/{home}/maint")),
        &[],
        "",
    );
    assert_eq!(r.status, 200, "POST maint: {r:?}");
    let moved = get(&t.url("/shop/cart"), &[("Cookie", &cookie_header)]);
    assert_eq!(moved.status, 200, "migrated request: {moved:?}");
    assert_ne!(
        moved.backend(),
        Some(home.as_str()),
        "a session whose home is in maint moves: {moved:?}"
    );
    assert!(
        t.metric_sum(
            "tether_affinity_migrations_total",
            &[("pool", "shop"), ("from", &home), ("reason", "maint")]
        ) >= 1.0,
        "migration counted:\n{}",
        t.metrics()
    );

    // At least one active health check has run.
    wait_for("a health check counted", PATIENCE, || {
        t.metric_sum("tether_health_checks_total", &[("pool", "shop")]) >= 1.0
    });
}

/// Metric family names with a `# HELP` line, and their `# TYPE`.
fn help_and_types(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name), Some(_)) => {
                help.insert(name.to_string());
            }
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                types.insert(name.to_string(), kind.to_string());
            }
            _ => {}
        }
    }
    (help, types)
}

// ----- 1. promtool -----

#[test]
fn promtool_accepts_live_metrics() {
    let promtool = require_tool("promtool", "prometheus");
    let (w1, w2) = (Backend::start("web-1"), Backend::start("web-2"));
    let (s1, s2) = (Backend::start("shop-1"), Backend::start("shop-2"));
    let t = Tether::start(&two_pool_config(&[&w1, &w2], &[&s1, &s2]));
    exercise_every_family(&t);

    let text = t.metrics();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write metrics to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\nstdout:\n{}\nstderr:\n{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );

    let (help, _) = help_and_types(&text);
    let missing: Vec<_> = DESIGN_METRICS
        .iter()
        .filter(|m| !help.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "families of DESIGN.md §8 without a `# HELP` line: {missing:?}\n--- metrics ---\n{text}"
    );
    // The request that matched no route is counted with empty route, pool and backend.
    assert_eq!(
        prom_value(
            &text,
            "tether_requests_total",
            &[
                ("route", ""),
                ("pool", ""),
                ("backend", ""),
                ("code", "4xx")
            ]
        ),
        Some(1.0),
        "unrouted 404 counted:\n{text}"
    );
}

// ----- 2. a real Prometheus -----

/// A Prometheus server the test started; killed (and reaped) on drop, even on panic.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus scraping `target` every second; waits (bounded) until `/-/ready` is 200.
    /// Retries with a fresh port when the first one was taken in the meantime.
    fn start(target: SocketAddr) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        for attempt in 1..=3 {
            let dir = tempfile::Builder::new()
                .prefix("tether-prometheus-")
                .tempdir()
                .expect("create prometheus temp dir");
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: tether\n    scrape_interval: 1s\n    \
                     metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n"
                ),
            )
            .expect("write prometheus.yml");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut prom = Prometheus { child, addr, dir };
            let mut exited = None;
            let ready = eventually(PROM_PATIENCE, || {
                if let Ok(Some(status)) = prom.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                try_get(&prom.url("/-/ready"), &[]).is_ok_and(|r| r.status == 200)
            });
            let log = prom.log();
            if let Some(status) = exited {
                if attempt < 3 && log.contains("address already in use") {
                    continue;
                }
                panic!("prometheus exited during start with {status}:\n{log}");
            }
            assert!(
                ready,
                "prometheus not ready within {PROM_PATIENCE:?}:\n{log}"
            );
            return prom;
        }
        unreachable!("the last attempt returns or panics")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Instant query through the HTTP API: `(labels, value)` per series; `Err` on any failure
    /// (for polling).
    fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let url = self.url(&format!("/api/v1/query?query={}", url_encode(promql)));
        let r = try_get(&url, &[])?;
        if r.status != 200 {
            return Err(format!("{url}: {} {}", r.status, r.body));
        }
        let v: serde_json::Value =
            serde_json::from_str(&r.body).map_err(|e| format!("{url}: {e}: {}", r.body))?;
        if v["status"] != "success" || v["data"]["resultType"] != "vector" {
            return Err(format!("{url}: {}", r.body));
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        result
            .into_iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("bad sample {s}"))?;
                Ok((s["metric"].clone(), value))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters (for a query parameter).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn url_encode_escapes_promql() {
    assert_eq!(
        url_encode(r#"sum(x{a="b c"})"#),
        "sum%28x%7Ba%3D%22b%20c%22%7D%29"
    );
}

#[test]
fn real_prometheus_scrape() {
    const N: usize = 7;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
grace_period = "1s"

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

[[pool.web.backend]]
id = "a"
addr = "{}"

[[pool.web.backend]]
id = "b"
addr = "{}"
"#,
        a.addr(),
        b.addr()
    ));

    // b is stopped and health-checked down before any request, so all N go to a.
    b.stop();
    wait_for("tether marks b down", PATIENCE, || {
        t.metric("tether_backend_up", &[("pool", "web"), ("backend", "b")]) == Some(0.0)
    });
    let prom = Prometheus::start(t.admin());
    for i in 0..N {
        let r = get(&t.url(&format!("/req/{i}")), &[]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend(), Some("a"), "request {i}: {r:?}");
    }
    assert_eq!(a.hits(), N, "backend a got exactly the N requests");

    let mut last = Err("no query yet".to_string());
    let counted = eventually(PROM_PATIENCE, || {
        last = prom.query("sum(tether_requests_total)");
        matches!(&last, Ok(v) if v.len() == 1 && v[0].1 == N as f64)
    });
    assert!(
        counted,
        "Prometheus never saw sum(tether_requests_total) == {N}; last answer: {last:?}\n\
         --- tether /metrics ---\n{}",
        t.metrics()
    );

    let mut up = BTreeMap::new();
    let both = eventually(PROM_PATIENCE, || {
        up = prom
            .query(r#"tether_backend_up{job="tether",pool="web"}"#)
            .unwrap_or_default()
            .into_iter()
            .map(|(labels, v)| (labels["backend"].as_str().unwrap_or("").to_string(), v))
            .collect();
        up.get("a") == Some(&1.0) && up.get("b") == Some(&0.0)
    });
    assert!(
        both,
        "tether_backend_up in Prometheus: {up:?} (want a=1, b=0)"
    );

    // Prometheus's own view of the target: up, and a 2xx-only count of exactly N.
    let target_up = prom.query(r#"up{job="tether"}"#).expect("query up");
    assert_eq!(target_up.len(), 1, "one scrape target: {target_up:?}");
    assert_eq!(target_up[0].1, 1.0, "scrape target healthy: {target_up:?}");
    let ok = prom
        .query(r#"sum(tether_requests_total{code="2xx",backend="a"})"#)
        .expect("query 2xx");
    assert_eq!(ok.first().map(|s| s.1), Some(N as f64), "{ok:?}");
}

// ----- 3. the Grafana dashboard -----

/// Every string under an `expr` key (panel targets, nested rows) and every templating variable
/// query (`query`/`definition`), anywhere in the dashboard.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(child, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

/// Identifiers starting with `tether_` in a PromQL expression.
fn tether_identifiers(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    for (i, _) in expr.match_indices("tether_") {
        if expr[..i].chars().next_back().is_some_and(is_ident) {
            continue; // inside a longer identifier
        }
        let end = expr[i..]
            .find(|c: char| !is_ident(c))
            .map_or(expr.len(), |e| i + e);
        found.push(expr[i..end].to_string());
    }
    found
}

#[test]
fn tether_identifiers_finds_metric_names() {
    assert_eq!(
        tether_identifiers(
            r#"sum(rate(tether_a_bucket{x="tether_not"}[1m])) / my_tether_b + tether_c"#
        ),
        ["tether_a_bucket", "tether_not", "tether_c"]
    );
}

#[test]
fn dashboard_uses_only_exported_metrics() {
    let path = repo("conf/grafana/tether.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dash: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.trim().is_empty()),
        "dashboard has a title"
    );
    let panels = dash["panels"].as_array().expect("dashboard has `panels`");
    assert!(!panels.is_empty(), "dashboard has panels");

    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    let used: BTreeSet<String> = queries.iter().flat_map(|q| tether_identifiers(q)).collect();
    assert!(
        used.len() >= 5,
        "found too few tether_ metrics in the dashboard's queries: {used:?}\n{queries:#?}"
    );

    let (w1, w2) = (Backend::start("web-1"), Backend::start("web-2"));
    let (s1, s2) = (Backend::start("shop-1"), Backend::start("shop-2"));
    let t = Tether::start(&two_pool_config(&[&w1, &w2], &[&s1, &s2]));
    exercise_every_family(&t);
    let metrics = t.metrics();
    let (help, types) = help_and_types(&metrics);

    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| {
            // A histogram's series: NAME_bucket, NAME_sum, NAME_count.
            let histogram_series = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .any(|f| types.get(f).map(String::as_str) == Some("histogram"));
            !help.contains(*name) && !histogram_series
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics tether does not export: {unknown:?}\n\
         exported families: {help:?}"
    );
}

// ----- 4. systemd -----

#[test]
fn systemd_unit_verifies() {
    let unit_src = repo("systemd/tether.service");
    let unit = std::fs::read_to_string(&unit_src)
        .unwrap_or_else(|e| panic!("read {}: {e}", unit_src.display()));
    for needle in [
        "Type=notify",
        "ExecReload=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            unit.lines().any(|l| l.trim().starts_with(needle)),
            "systemd/tether.service lacks `{needle}`"
        );
    }
    assert!(
        unit.lines().any(|l| {
            let l = l.trim();
            l.starts_with("ExecStartPre=") && l.split_whitespace().any(|w| w == "check")
        }),
        "systemd/tether.service lacks `ExecStartPre=... tether check ...`"
    );

    // A missing tool fails the test (`.ci/run` installs Debian's `systemd` package); a host
    // that cannot have it says so explicitly with TETHER_SKIP_SYSTEMD=1, and the skip is loud.
    let Some(analyze) = find_tool("systemd-analyze") else {
        assert!(
            std::env::var_os("TETHER_SKIP_SYSTEMD").is_some(),
            "systemd-analyze not found: install Debian's `systemd` package (as .ci/run does), \
             or set TETHER_SKIP_SYSTEMD=1 to skip `systemd-analyze verify` on purpose"
        );
        eprintln!("SKIPPED: systemd-analyze verify (TETHER_SKIP_SYSTEMD is set)");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("tether-systemd-")
        .tempdir()
        .expect("temp dir");
    let unit_path = dir.path().join("tether.service");
    assert!(
        unit.lines()
            .filter(|l| l.starts_with("ExecStart"))
            .all(|l| l.contains("=/usr/bin/tether ")),
        "the unit runs /usr/bin/tether, where the Debian package installs it"
    );
    std::fs::write(
        &unit_path,
        unit.replace("/usr/bin/tether", env!("CARGO_BIN_EXE_tether")),
    )
    .expect("write unit");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", analyze.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    // systemd only warns (exit 0) about unknown keys and unparsable values, and ignores them:
    // a silently dropped hardening line must fail here.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tether.service"))
        .filter(|l| {
            ["Unknown", "Invalid", "Failed to parse", "ignoring"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains about the unit:\n{stderr}"
    );
}

// ----- 5. JSON access log and request ids -----

/// JSON objects on the complete lines of `stderr` (a last line still being written is left
/// out); panics naming any line that is not one.
#[track_caller]
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    let complete = &stderr[..stderr.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("with [log] format = \"json\", stderr line is not a JSON object: {l:?}"),
        })
        .collect()
}

/// The access-log line for `request_id`, once it is on stderr.
fn access_line(t: &Tether, request_id: &str) -> serde_json::Value {
    let mut found = None;
    let logged = eventually(PATIENCE, || {
        found = json_lines(&t.stderr())
            .into_iter()
            .find(|v| v["target"] == "access" && v["request_id"] == request_id);
        found.is_some()
    });
    assert!(
        logged,
        "no access-log line with request_id {request_id:?} on stderr:\n{}",
        t.stderr()
    );
    found.expect("found")
}

#[track_caller]
fn assert_access_fields(line: &serde_json::Value, want: &[(&str, serde_json::Value)]) {
    for field in [
        "request_id",
        "client",
        "method",
        "host",
        "path",
        "status",
        "route",
        "pool",
        "backend",
        "affinity",
        "from",
        "upstream_ms",
        "total_ms",
        "timestamp",
        "level",
        "target",
    ] {
        assert!(
            line.get(field).is_some(),
            "access-log line lacks `{field}`: {line}"
        );
    }
    for (field, value) in want {
        let got = &line[*field];
        // A number may be logged as a number or a string; both are fine for a log shipper.
        let same = got == value || (value.is_number() && got.as_str() == Some(&value.to_string()));
        assert!(same, "access-log `{field}` = {got}, want {value}: {line}");
    }
    for field in ["upstream_ms", "total_ms"] {
        assert!(
            line[field].as_f64().is_some_and(|ms| ms >= 0.0),
            "`{field}` is a non-negative number: {line}"
        );
    }
}

#[test]
fn access_log_json_and_request_id() {
    use serde_json::json;
    let a = Backend::start("a");
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
grace_period = "1s"

[log]
format = "json"
level = "info"
access = true

[[route]]
path_prefix = "/app"
pool = "web"

[pool.web]
policy = "round_robin"

[[pool.web.backend]]
id = "a"
addr = "{}"
"#,
        a.addr()
    ));
    let host = "shop.example.test";

    // A client-supplied id travels to the backend and back.
    let r = get(
        &t.url("/app/one?x=1"),
        &[("X-Request-Id", "test-123"), ("Host", host)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("test-123"), "{r:?}");
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some("test-123"));
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.seen_header("x-forwarded-host").as_deref(), Some(host));

    // Without one, tether generates one, forwards it and returns the same.
    let r2 = get(&t.url("/app/two"), &[]);
    assert_eq!(r2.status, 200, "{r2:?}");
    let generated = r2
        .header("x-request-id")
        .unwrap_or_else(|| panic!("a generated x-request-id in the response: {r2:?}"))
        .to_string();
    assert!(!generated.trim().is_empty(), "{r2:?}");
    assert_ne!(generated, "test-123");
    assert_eq!(
        r2.seen_header("x-request-id").as_deref(),
        Some(generated.as_str()),
        "the backend saw the generated id"
    );
    // Each request gets its own id.
    let r3 = get(&t.url("/app/three"), &[]);
    assert_ne!(
        r3.header("x-request-id"),
        Some(generated.as_str()),
        "{r3:?}"
    );

    // A locally answered request (no route) carries an id too.
    let r404 = get(&t.url("/elsewhere"), &[("X-Request-Id", "test-404")]);
    assert_eq!(r404.status, 404);
    assert_eq!(r404.header("x-request-id"), Some("test-404"), "{r404:?}");

    let line = access_line(&t, "test-123");
    assert_access_fields(
        &line,
        &[
            ("target", json!("access")),
            ("level", json!("INFO")),
            ("client", json!("127.0.0.1")),
            ("method", json!("GET")),
            ("host", json!(host)),
            ("path", json!("/app/one?x=1")),
            ("status", json!(200)),
            ("route", json!("/app")),
            ("pool", json!("web")),
            ("backend", json!("a")),
            ("from", json!("")),
        ],
    );
    let line = access_line(&t, &generated);
    assert_access_fields(
        &line,
        &[
            ("path", json!("/app/two")),
            ("status", json!(200)),
            ("backend", json!("a")),
        ],
    );
    let line = access_line(&t, "test-404");
    assert_access_fields(
        &line,
        &[
            ("status", json!(404)),
            ("route", json!("")),
            ("pool", json!("")),
            ("backend", json!("")),
        ],
    );
    // Every line so far, access or not, is a JSON object with a timestamp, level and target.
    for v in json_lines(&t.stderr()) {
        for field in ["timestamp", "level", "target"] {
            assert!(v.get(field).is_some(), "log line lacks `{field}`: {v}");
        }
    }
}
