//! Unit tests of validation: every rule of `validate/` with the error (key path, value, line) it
//! reports.

use super::*;
use crate::config::{JwtKeys, TokenFrom};

const BASE: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[route]]
pool = "web"

[pool.web]
policy = "round_robin"
[[pool.web.backend]]
id = "web-1"
addr = "10.0.0.11:8080"
"#;

fn ok(text: &str) -> Config {
    match parse(text, None) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<String> {
    match parse(text, None) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts some error contains every one of `needles`.
#[track_caller]
fn has(errors: &[String], needles: &[&str]) {
    assert!(
        errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
        "no error contains {needles:?}; errors:\n{}",
        errors.join("\n")
    );
}

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

#[test]
fn minimal_config_and_defaults() {
    let c = ok(BASE);
    assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.server.threads.get(), 2);
    assert_eq!(c.server.admin, Some(DEFAULT_ADMIN));
    assert_eq!(c.server.admin_token, None);
    assert!(!c.server.watch);
    assert_eq!(c.server.grace_period, Duration::from_secs(30));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert!(c.log.access);
    assert!(c.affinity.secrets.is_empty());
    let pool = &c.pools[0];
    assert_eq!(pool.name, "web");
    assert_eq!(pool.policy, Policy::RoundRobin);
    assert_eq!(pool.retries, 1);
    assert_eq!(pool.connect_timeout, Duration::from_secs(3));
    assert_eq!(pool.read_timeout, Duration::from_secs(60));
    assert!(!pool.fail_open);
    assert_eq!(pool.cookie.name, "tether_web");
    assert_eq!(pool.cookie.same_site, Some(SameSite::Lax));
    assert!(pool.cookie.http_only);
    assert!(!pool.cookie.secure);
    assert_eq!(pool.cookie.path, "/");
    assert!(pool.hash.is_none() && pool.health.is_none());
    assert_eq!(pool.backends[0].weight, 1);
    assert_eq!(c.routes[0].path_prefix, "/");
    assert_eq!(c.routes[0].pool, 0);
    assert_eq!(c.routes[0].host, None);
    assert_eq!(c.source.hash, content_hash(BASE.as_bytes()));
    assert_eq!(c.source.hash.len(), 64);
}

#[test]
fn default_runtime_paths_are_named_after_the_config() {
    let c = ok(BASE);
    let inline = &content_hash(b"inline")[..12];
    let pid = c.server.pid_file.file_name().unwrap().to_str().unwrap();
    let sock = c.server.upgrade_sock.file_name().unwrap().to_str().unwrap();
    assert_eq!(pid, format!("tether-{inline}.pid"));
    assert_eq!(sock, format!("tether-{inline}.sock"));
    let c = parse(BASE, Some(Path::new("/nonexistent/a.toml"))).unwrap();
    let expected = &content_hash(b"/nonexistent/a.toml")[..12];
    assert!(c
        .server
        .pid_file
        .ends_with(format!("tether-{expected}.pid")));
    let c = ok(&BASE.replace(
        "[server]\n",
        "[server]\npid_file = \"/run/x.pid\"\nupgrade_sock = \"/run/x.sock\"\n",
    ));
    assert_eq!(c.server.pid_file, Path::new("/run/x.pid"));
    assert_eq!(c.server.upgrade_sock, Path::new("/run/x.sock"));
}

#[test]
fn pools_sorted_routes_in_file_order() {
    let c = ok(&with(
        r#"
[[route]]
path_prefix = "/b"
pool = "b"
[[route]]
host = "*.Example.COM"
pool = "a"
[pool.b]
policy = "round_robin"
[[pool.b.backend]]
id = "b1"
addr = "10.0.0.1:80"
[pool.a]
policy = "round_robin"
[[pool.a.backend]]
id = "a1"
addr = "10.0.0.2:80"
"#,
    ));
    let names: Vec<_> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "web"]);
    assert_eq!(c.routes.len(), 3);
    assert_eq!(c.routes[0].pool, 2);
    assert_eq!(c.routes[1].pool, 1);
    assert_eq!(c.routes[1].path_prefix, "/b");
    assert_eq!(c.routes[2].pool, 0);
    assert_eq!(
        c.routes[2].host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
}

#[test]
fn syntax_error_has_line() {
    let e = errs("[server]\nlisten = [\"a\"\nthreads = 2\n");
    assert!(e[0].starts_with("line "), "{e:?}");
}

#[test]
fn type_error_names_key_and_line() {
    let e = errs(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nretries = \"many\"",
    ));
    has(
        &e,
        &["pool.web.retries = \"many\" (line 10)", "invalid type"],
    );
}

#[test]
fn every_unknown_key_is_reported() {
    let e = errs(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nhelth = 1\nretrys = 2\nzzzzzzzz = 3",
    ));
    has(
        &e,
        &["pool.web.helth (line 10): unknown key; did you mean \"health\"?"],
    );
    has(
        &e,
        &["pool.web.retrys (line 11)", "did you mean \"retries\"?"],
    );
    has(&e, &["pool.web.zzzzzzzz (line 12): unknown key"]);
    assert_eq!(e.len(), 3, "{e:?}");
    let e = errs(&with("[log]\nformt = \"json\"\n[server.tls2]\n"));
    has(&e, &["log.formt", "did you mean \"format\"?"]);
    has(&e, &["server.tls2", "did you mean \"tls\"?"]);
    let e = errs(&BASE.replace("addr =", "adr ="));
    has(
        &e,
        &["pool.web.backend[0].adr (line 12): unknown key; did you mean \"addr\"?"],
    );
    // The typo is not also reported as a missing `addr`.
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn addresses() {
    let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1"));
    has(
        &e,
        &["pool.web.backend[0].addr = \"10.0.0.1\" (line 12): missing port"],
    );
    let e = errs(&BASE.replace("10.0.0.11:8080", "backend.local:8080"));
    has(&e, &["must be an IP address and port, e.g. 10.0.0.11:8080"]);
    let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1:0"));
    has(&e, &["port 0"]);
    let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1:70000"));
    has(&e, &["invalid port \"70000\""]);
    let e = errs(&BASE.replace("10.0.0.11:8080", "::1"));
    has(&e, &["missing port", "brackets"]);
    ok(&BASE.replace("10.0.0.11:8080", "[::1]:8080"));
    let e = errs(&BASE.replace("127.0.0.1:8080", "localhost:8080"));
    has(&e, &["server.listen[0] = \"localhost:8080\" (line 3)"]);
}

#[test]
fn listeners() {
    let e = errs(&BASE.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\nadmin = \"0.0.0.0:8080\"",
    ));
    has(
        &e,
        &["server.listen[1] = \"127.0.0.1:8080\" (line 3): duplicate listen address: also server.listen[0]"],
    );
    has(
        &e,
        &["server.admin = \"0.0.0.0:8080\" (line 4): overlapping"],
    );
    let e = errs(&BASE.replace("127.0.0.1:8080", "127.0.0.1:9901"));
    has(&e, &["server.admin", "default admin address"]);
    let e = errs(&BASE.replace("listen = [\"127.0.0.1:8080\"]", "threads = 4"));
    has(&e, &["server.listen", "no listener"]);
    let c = ok(&BASE.replace("[server]\n", "[server]\nadmin = \"off\"\nthreads = 8\n"));
    assert_eq!(c.server.admin, None);
    assert_eq!(c.server.threads.get(), 8);
    let e = errs(&BASE.replace("[server]\n", "[server]\nthreads = 0\n"));
    has(&e, &["server.threads = 0", "must be between 1 and 256"]);
    // Port 0 (ephemeral) listeners never clash.
    ok(&BASE.replace("[\"127.0.0.1:8080\"]", "[\"127.0.0.1:0\", \"127.0.0.1:0\"]"));
}

#[test]
fn admin_off_loopback_needs_token() {
    let e = errs(&BASE.replace("[server]\n", "[server]\nadmin = \"0.0.0.0:9901\"\n"));
    has(
        &e,
        &["server.admin = \"0.0.0.0:9901\" (line 3): admin listener off loopback requires admin_token_file"],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "  s3cret\n").unwrap();
    let text = BASE.replace(
        "[server]\n",
        "[server]\nadmin = \"0.0.0.0:9901\"\nadmin_token_file = \"token\"\n",
    );
    let c = parse(&text, Some(&dir.path().join("tether.toml"))).unwrap();
    assert_eq!(c.server.admin_token.as_deref(), Some("s3cret"));
    std::fs::write(dir.path().join("empty"), " \n").unwrap();
    let e = parse(
        &text.replace("\"token\"", "\"empty\""),
        Some(&dir.path().join("tether.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("server.admin_token_file = \"empty\" (line 4)") && e.contains("is empty"),
        "{e}"
    );
    let e = errs(&text.replace("\"token\"", "\"/nonexistent/token\""));
    has(
        &e,
        &["server.admin_token_file", "cannot read /nonexistent/token"],
    );
}

#[test]
fn durations() {
    let text = with("[pool.web.health]\npath = \"/h\"\ninterval = \"2\"\ntimeout = 1\n");
    let e = errs(&text);
    has(
        &e,
        &["pool.web.health.interval = \"2\" (line 16): duration needs a unit, e.g. \"2s\" or \"500ms\""],
    );
    has(
        &e,
        &["pool.web.health.timeout = 1 (line 17): duration needs a unit"],
    );
    let e = errs(&with(
        "[pool.web.health]\npath = \"/h\"\ninterval = \"0s\"\n",
    ));
    has(&e, &["interval = \"0s\"", "greater than zero"]);
    let e = errs(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nconnect_timeout = \"3 parsecs\"\nread_timeout = \"0ms\"",
    ));
    has(&e, &["connect_timeout = \"3 parsecs\"", "invalid duration"]);
    has(&e, &["read_timeout = \"0ms\"", "greater than zero"]);
    let c = ok(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nconnect_timeout = \"500ms\"\nread_timeout = \"1h\"",
    ));
    assert_eq!(c.pools[0].connect_timeout, Duration::from_millis(500));
    assert_eq!(c.pools[0].read_timeout, Duration::from_secs(3600));
    let c = ok(&BASE.replace("[server]\n", "[server]\ngrace_period = \"0s\"\n"));
    assert_eq!(c.server.grace_period, Duration::ZERO);
}

#[test]
fn log_section() {
    let c = ok(&with(
        "[log]\nformat = \"json\"\nlevel = \"tether=debug,warn\"\naccess = false\n",
    ));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "tether=debug,warn");
    assert!(!c.log.access);
    let e = errs(&with("[log]\nformat = \"xml\"\nlevel = \"debg\"\n"));
    has(&e, &["log.format = \"xml\"", "\"text\" or \"json\""]);
    has(&e, &["log.level = \"debg\"", "not a level"]);
    let e = errs(&with("[log]\nlevel = \"tether=lots\"\n"));
    has(&e, &["log.level = \"tether=lots\"", "invalid log filter"]);
}

const COOKIE_POOL: &str = r#"
[pool.shop]
policy = "cookie"
[[pool.shop.backend]]
id = "shop-1"
addr = "10.0.0.21:8080"
"#;

#[test]
fn secrets() {
    let e = errs(&with(COOKIE_POOL));
    has(
        &e,
        &["pool.shop.policy = \"cookie\" (line 16): requires [affinity] secret_file or secret"],
    );
    let c = ok(&with(&format!(
        "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}"
    )));
    assert_eq!(c.affinity.secrets, vec![b"0123456789abcdef".to_vec()]);
    assert!(c.pools[0].uses_cookie()); // "shop" sorts before "web"
    let e = errs(&with(&format!(
        "[affinity]\nsecret = [\"0123456789abcdef\", \"short-one\"]\n{COOKIE_POOL}"
    )));
    has(&e, &["affinity.secret[1] (line 15): secret is 9 bytes"]);
    assert!(
        !e.iter().any(|e| e.contains("short-one")),
        "secret echoed: {e:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tether.toml");
    std::fs::write(
        dir.path().join("key"),
        "\n  new-secret-0123456789  \n\nold-secret-0123456789\n",
    )
    .unwrap();
    let text = with(&format!(
        "[affinity]\nsecret_file = \"key\"\nsecret = \"inline-secret-0123456\"\n{COOKIE_POOL}"
    ));
    let c = parse(&text, Some(&conf)).unwrap();
    assert_eq!(
        c.affinity.secrets,
        vec![
            b"new-secret-0123456789".to_vec(),
            b"old-secret-0123456789".to_vec(),
            b"inline-secret-0123456".to_vec()
        ]
    );
    std::fs::write(dir.path().join("key"), "too-short\n").unwrap();
    let e = parse(&text, Some(&conf)).unwrap_err().to_string();
    assert!(
        e.contains("affinity.secret_file = \"key\" (line 15): the secret on line 1"),
        "{e}"
    );
    assert!(!e.contains("too-short"), "{e}");

    let e = errs(&with(&format!(
        "[affinity]\nsecret_file = \"/nonexistent/affinity.key\"\n{COOKIE_POOL}"
    )));
    has(
        &e,
        &["affinity.secret_file = \"/nonexistent/affinity.key\" (line 15): cannot read /nonexistent/affinity.key: No such file"],
    );
    // The unreadable file is the error; not also "requires a secret".
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn routes() {
    let e = errs(&BASE.replace("pool = \"web\"", "pool = \"wbe\""));
    has(
        &e,
        &["route[0].pool = \"wbe\" (line 6): no such pool; pools are: web"],
    );
    let e = errs(&with(
        "[[route]]\nhost = \"a.*.com\"\npool = \"web\"\n[[route]]\npath_prefix = \"api\"\npool = \"web\"\n[[route]]\npool = \"web\"\n",
    ));
    has(&e, &["route[1].host = \"a.*.com\" (line 15)", "wildcard"]);
    has(
        &e,
        &["route[2].path_prefix = \"api\" (line 18): must start with \"/\""],
    );
    has(
        &e,
        &["route[3] (line 20): same host and path_prefix as route[0] (line 5)"],
    );
    let e = errs(&BASE.replace("[[route]]\npool = \"web\"\n", ""));
    has(&e, &["route: at least one [[route]]"]);
    let e = errs(&BASE.replace("pool = \"web\"", "path_prefix = \"/\""));
    has(&e, &["route[0].pool (line 5): missing required key"]);
    let c = ok(&with(
        "[[route]]\nhost = \"Shop.Example.com\"\npath_prefix = \"/x\"\npool = \"web\"\n",
    ));
    assert_eq!(
        c.routes[1].host,
        Some(HostMatch::Exact("shop.example.com".into()))
    );
    let e = errs(&with(
        "[[route]]\nhost = \"shop.example.com:80\"\npool = \"web\"\n",
    ));
    has(&e, &["without a port"]);
}

#[test]
fn route_names() {
    let c = ok(&with(
        "[[route]]\nhost = \"*.Example.com\"\npath_prefix = \"/api\"\npool = \"web\"\n\
         [[route]]\nname = \"shop\"\nhost = \"shop.example.com\"\npool = \"web\"\n",
    ));
    let names: Vec<_> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["/", "*.example.com/api", "shop"]);
    let e = errs(&with(
        "[[route]]\nname = \"\"\npath_prefix = \"/x\"\npool = \"web\"\n",
    ));
    has(&e, &["route[1].name = \"\" (line 15)", "non-empty"]);
}

#[test]
fn pool_rules() {
    let e = errs(&with(
        "[pool.\"bad name\"]\npolicy = \"sticky\"\nretries = 11\n",
    ));
    has(&e, &["pool.\"bad name\" (line 14): pool name must be"]);
    has(&e, &["pool.\"bad name\".policy = \"sticky\" (line 15): must be \"round_robin\", \"cookie\", \"hash\" or \"least_request\""]);
    has(&e, &["retries = 11", "must be between 0 and 10"]);
    has(
        &e,
        &["pool.\"bad name\".backend (line 14): a pool needs at least one"],
    );
    let e = errs(&with(
        "[pool.x]\n[[pool.x.backend]]\nid = \"x\"\naddr = \"10.0.0.1:1\"\n",
    ));
    has(&e, &["pool.x.policy (line 14): missing required key"]);
    let c = ok(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nretries = 0\nfail_open = true",
    ));
    assert_eq!(c.pools[0].retries, 0);
    assert!(c.pools[0].fail_open);
}

#[test]
fn backends() {
    let text = with(
        "[[pool.web.backend]]\nid = \"web-1\"\naddr = \"10.0.0.12:8080\"\nweight = 0\n\
         [[pool.web.backend]]\nid = \"web 3\"\n",
    );
    let e = errs(&text);
    has(
        &e,
        &["pool.web.backend[1].id = \"web-1\" (line 15): duplicate backend id (first at line 11)"],
    );
    has(
        &e,
        &["pool.web.backend[1].weight = 0 (line 17): must be between 1 and 256"],
    );
    has(
        &e,
        &["pool.web.backend[2].id = \"web 3\"", "[A-Za-z0-9_.:-]+"],
    );
    has(
        &e,
        &["pool.web.backend[2].addr (line 18): missing required key"],
    );
    let c = ok(&with(
        "[[pool.web.backend]]\nid = \"web-2.a:b\"\naddr = \"10.0.0.12:8080\"\nweight = 256\n",
    ));
    assert_eq!(c.pools[0].backends[1].weight, 256);
}

#[test]
fn cookie_options() {
    let c = ok(&with(&format!(
        "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\n\
         name = \"SID\"\nmax_age = \"12h\"\nsecure = true\nhttp_only = false\n\
         same_site = \"None\"\npath = \"/shop\"\ndomain = \"example.com\"\n"
    )));
    let ck = &c.pools[0].cookie;
    assert_eq!(ck.name, "SID");
    assert_eq!(ck.max_age, Some(Duration::from_secs(12 * 3600)));
    assert!(ck.secure && !ck.http_only);
    assert_eq!(ck.same_site, Some(SameSite::None));
    assert_eq!(ck.path, "/shop");
    assert_eq!(ck.domain.as_deref(), Some("example.com"));
    let e = errs(&with(&format!(
        "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\n\
         name = \"a b\"\nsame_site = \"None\"\npath = \"shop\"\n"
    )));
    has(&e, &["pool.shop.cookie.name = \"a b\"", "cookie name"]);
    has(
        &e,
        &[
            "pool.shop.cookie.same_site = \"None\"",
            "requires secure = true",
        ],
    );
    has(&e, &["pool.shop.cookie.path = \"shop\"", "must start with"]);
    let e = errs(&with(&format!(
        "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\nsame_site = \"lax\"\n"
    )));
    has(&e, &["\"Strict\", \"Lax\" or \"None\""]);
}

const HASH_POOL: &str = r#"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "header:X-User"
[[pool.sessions.backend]]
id = "s1"
addr = "10.0.0.31:8080"
"#;

#[test]
fn hash_rules() {
    let c = ok(&with(HASH_POOL));
    let h = c.pools[0].hash.as_ref().unwrap();
    assert_eq!(h.key, KeySpec::Header("x-user".into()));
    assert_eq!(h.fallback, Fallback::RoundRobin);
    assert!(!h.pin);
    assert!(!c.pools[0].uses_cookie());
    for (spec, want) in [
        ("cookie:JSESSIONID", KeySpec::Cookie("JSESSIONID".into())),
        ("query:user", KeySpec::Query("user".into())),
        ("source_ip", KeySpec::SourceIp),
        ("path", KeySpec::Path),
    ] {
        assert_eq!(key_spec(spec), Ok(want));
    }
    let c = ok(&with(&HASH_POOL.replace(
        "key = \"header:X-User\"",
        "key = \"path\"\nfallback = \"source_ip\"",
    )));
    assert_eq!(
        c.pools[0].hash.as_ref().unwrap().fallback,
        Fallback::Key(KeySpec::SourceIp)
    );
    let e = errs(&with(&HASH_POOL.replace(
        "key = \"header:X-User\"",
        "key = \"header\"\nfallback = \"random\"\nbalance_factor = 0.5\npin = true",
    )));
    has(
        &e,
        &[
            "pool.sessions.hash.key = \"header\"",
            "cookie:NAME, header:NAME",
        ],
    );
    has(&e, &["pool.sessions.hash.fallback = \"random\""]);
    has(
        &e,
        &[
            "pool.sessions.hash.balance_factor = 0.5",
            "must be 0 (off) or at least 1.0",
        ],
    );
    has(
        &e,
        &[
            "pool.sessions.hash.pin = true",
            "requires [affinity] secret_file or secret",
        ],
    );
    let e = errs(&with(
        &HASH_POOL.replace("[pool.sessions.hash]\nkey = \"header:X-User\"\n", ""),
    ));
    has(
        &e,
        &[
            "pool.sessions.policy = \"hash\"",
            "requires a [pool.sessions.hash]",
        ],
    );
    let e = errs(&BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nhash = { key = \"path\" }",
    ));
    has(
        &e,
        &[
            "pool.web.hash (line 10)",
            "only used with policy = \"hash\"",
        ],
    );
    ok(&with(&HASH_POOL.replace(
        "key = \"header:X-User\"",
        "key = \"path\"\nbalance_factor = 0",
    )));
    let c = ok(&with(&HASH_POOL.replace(
        "key = \"header:X-User\"",
        "key = \"path\"\nbalance_factor = 1.25",
    )));
    assert_eq!(c.pools[0].hash.as_ref().unwrap().balance_factor, 1.25);
    let e = errs(&with(&HASH_POOL.replace(
        "key = \"header:X-User\"",
        "key = \"path\"\nbalance_factor = inf",
    )));
    has(
        &e,
        &["pool.sessions.hash.balance_factor = inf", "at least 1.0"],
    );
}

#[test]
fn health_rules() {
    let c = ok(&with("[pool.web.health]\npath = \"/healthz\"\n"));
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.rise, h.fall), (2, 3));
    assert_eq!(h.expect, None);
    let c = ok(&with(
        "[pool.web.health]\npath = \"/h\"\ninterval = \"1s\"\ntimeout = \"1s\"\nexpect = [200, 204]\nhost = \"web.local\"\nrise = 1\nfall = 1\n",
    ));
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!(h.expect, Some(vec![200, 204]));
    assert_eq!(h.host.as_deref(), Some("web.local"));
    let e = errs(&with(
        "[pool.web.health]\ninterval = \"1s\"\ntimeout = \"2s\"\nrise = 0\nexpect = [200, 99]\n",
    ));
    has(
        &e,
        &["pool.web.health.path (line 14): missing required key"],
    );
    has(
        &e,
        &["pool.web.health.timeout = \"2s\" (line 16): must not exceed interval (1s)"],
    );
    has(&e, &["pool.web.health.rise = 0"]);
    has(
        &e,
        &[
            "pool.web.health.expect[1] = 99 (line 18)",
            "between 100 and 599",
        ],
    );
    let e = errs(&with("[pool.web.health]\npath = \"healthz\"\n"));
    has(
        &e,
        &["pool.web.health.path = \"healthz\"", "must start with"],
    );
}

#[test]
fn many_errors_are_all_reported() {
    let text = BASE
        .replace("pool = \"web\"", "pool = \"nope\"")
        .replace(
            "addr = \"10.0.0.11:8080\"",
            "addr = \"10.0.0.11\"\nweight = 0",
        )
        .replace("policy =", "typo = 1\npolicy =");
    let e = errs(&text);
    assert_eq!(e.len(), 4, "{e:?}");
    has(&e, &["route[0].pool"]);
    has(&e, &["missing port"]);
    has(&e, &["weight = 0"]);
    has(&e, &["pool.web.typo"]);
    // In file order.
    let lines: Vec<usize> = parse(&text, None)
        .unwrap_err()
        .iter()
        .filter_map(|e| e.line)
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn tls_certificates() {
    let tls = |cert: &str, key: &str| {
        BASE.replace(
            "[[route]]",
            &format!(
                "[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncerts = [{{ cert = {:?}, key = {:?} }}]\n\n[[route]]",
                fixture(cert),
                fixture(key)
            ),
        )
    };
    let c = ok(&tls("cert.pem", "key.pem"));
    assert_eq!(c.server.tls.len(), 1);
    assert_eq!(c.server.tls[0].listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(c.server.tls[0].certs[0].chain.len(), 1);

    let e = errs(&tls("cert.pem", "other-key.pem"));
    has(
        &e,
        &[
            "server.tls[0].certs[0].key",
            "does not match the certificate",
        ],
    );
    let e = errs(&tls("key.pem", "cert.pem"));
    has(
        &e,
        &["server.tls[0].certs[0].cert", "no certificate found in"],
    );
    has(
        &e,
        &["server.tls[0].certs[0].key", "no private key found in"],
    );
    let e = errs(&tls("missing.pem", "key.pem"));
    has(
        &e,
        &[
            "server.tls[0].certs[0].cert",
            "(line 7)",
            "cannot read",
            "missing.pem",
        ],
    );

    // TLS alone is enough of a listener; its address clashes like any other.
    let only_tls = tls("cert.pem", "key.pem").replace("listen = [\"127.0.0.1:8080\"]", "");
    ok(&only_tls);
    let e = errs(&only_tls.replace("127.0.0.1:8443", "127.0.0.1:9901"));
    has(&e, &["server.admin", "default admin address"]);
    let e = errs(&with("[[server.tls]]\ncerts = []\n"));
    has(&e, &["server.tls[0].listen", "missing required key"]);
    has(&e, &["server.tls[0].certs = []", "at least one"]);
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(fixture(f), dir.path().join("tls").join(f)).unwrap();
    }
    let text = BASE.replace(
        "[[route]]",
        "[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncerts = [{ cert = \"tls/cert.pem\", key = \"tls/key.pem\" }]\n\n[[route]]",
    );
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(
        c.server.tls[0].certs[0].cert_path,
        dir.path().join("tls/cert.pem")
    );
    assert_eq!(c.source.path.as_deref(), Some(path.as_path()));
    assert_eq!(c.source.hash, content_hash(text.as_bytes()));
}

#[test]
fn unreadable_config_file() {
    let e = load(Path::new("/nonexistent/tether.toml")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/tether.toml"),
        "{e}"
    );
}

#[test]
fn address_parser() {
    let listen = |s| parse_addr(s, AddrUse::Listen);
    assert!(listen("0.0.0.0:0").is_ok());
    assert!(listen("[::]:8080").is_ok());
    assert_eq!(listen("10.0.0.1").unwrap_err(), "missing port");
    assert_eq!(listen("10.0.0.1:").unwrap_err(), "missing port");
    assert_eq!(listen("[::1]").unwrap_err(), "missing port");
    assert_eq!(listen("example.com").unwrap_err(), EXAMPLE_ADDR);
    assert_eq!(listen("example.com:80").unwrap_err(), EXAMPLE_ADDR);
    assert_eq!(listen("").unwrap_err(), EXAMPLE_ADDR);
    assert!(listen(":8080")
        .unwrap_err()
        .starts_with("missing IP address"));
}

#[test]
fn upstream_tls() {
    let with = |table: &str| format!("{BASE}[pool.web.tls]\n{table}\n");
    let c = ok(&with(""));
    let t = c.pools[0].tls.as_ref().expect("[pool.web.tls] present");
    assert!(t.sni.is_none() && t.verify && t.ca.is_none() && t.client.is_none());
    assert!(ok(BASE).pools[0].tls.is_none(), "no table: plain HTTP");

    let c = ok(&with(&format!(
        "sni = \"api.internal\"\nverify = false\nca_file = {:?}\ncert = {:?}\nkey = {:?}",
        fixture("cert.pem"),
        fixture("cert.pem"),
        fixture("key.pem")
    )));
    let t = c.pools[0].tls.as_ref().unwrap();
    assert_eq!(t.sni.as_deref(), Some("api.internal"));
    assert!(!t.verify);
    assert_eq!(t.ca.as_ref().map(|ca| ca.certs.len()), Some(1));
    assert_eq!(t.client.as_ref().map(|c| c.chain.len()), Some(1));

    has(
        &errs(&with("sni = \"\"")),
        &["pool.web.tls.sni = \"\"", "DNS name"],
    );
    has(
        &errs(&with(&format!("ca_file = {:?}", fixture("key.pem")))),
        &["pool.web.tls.ca_file", "no certificate found in"],
    );
    has(
        &errs(&with(&format!("key = {:?}", fixture("key.pem")))),
        &["pool.web.tls.cert", "missing required key"],
    );
    has(
        &errs(&with(&format!(
            "cert = {:?}\nkey = {:?}",
            fixture("cert.pem"),
            fixture("other-key.pem")
        ))),
        &["pool.web.tls.key", "does not match the certificate"],
    );
}

#[test]
fn jwt_sections() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "top-secret\n").unwrap();
    let s = secret.display();
    let c = ok(&format!(
        r#"
[server]
listen = ["127.0.0.1:8080"]
[jwt.users]
secret_file = "{s}"
algorithms = ["HS256", "HS512"]
audience = ["shop"]
forward_claims = {{ sub = "X-User-Id" }}
[jwt.remote]
from = "cookie:token"
jwks_url = "https://id.example.com/jwks.json"
algorithms = ["ES256"]
leeway = "5s"
[[route]]
pool = "p"
jwt = "users"
[pool.p]
policy = "hash"
[pool.p.hash]
key = "jwt:tenant"
[[pool.p.backend]]
id = "a"
addr = "10.0.0.1:80"
"#
    ));
    assert_eq!(c.jwts.len(), 2);
    let remote = &c.jwts[0];
    assert_eq!(remote.name, "remote");
    assert_eq!(remote.from, TokenFrom::Cookie("token".into()));
    assert_eq!(remote.leeway, Duration::from_secs(5));
    assert!(
        matches!(&remote.keys, JwtKeys::Url { refresh, .. } if *refresh == Duration::from_secs(600))
    );
    let users = &c.jwts[1];
    assert_eq!(users.from, TokenFrom::Header("authorization".into()));
    assert_eq!(users.leeway, Duration::from_secs(60));
    assert_eq!(
        users.forward_claims,
        vec![("sub".into(), "x-user-id".into())]
    );
    assert_eq!(users.claims, vec!["sub".to_string(), "tenant".to_string()]);
    assert_eq!(c.routes[0].jwt, Some(1));
    assert_eq!(
        c.pools[0].hash.as_ref().unwrap().key,
        KeySpec::Jwt("tenant".into())
    );

    let e = errs(&with(&format!(
        "[jwt.a]\nsecret_file = \"{s}\"\nalgorithms = [\"RS256\", \"none\", \"XX1\"]\n\
         [jwt.b]\nalgorithms = [\"ES256\"]\n[jwt.c]\nkey_file = \"{s}\"\nalgorithms = [\"RS256\"]\n"
    )));
    has(&e, &["jwt.a.algorithms[0]", "secret_file verifies HS256"]);
    has(&e, &["jwt.a.algorithms[1]", "never accepted"]);
    has(&e, &["jwt.a.algorithms[2]", "\"XX1\"", "must be HS256"]);
    has(&e, &["jwt.b", "needs one key source"]);
    has(&e, &["jwt.c.key_file", "not a PEM"]);
    let e = errs(&with("[jwt.d]\nsecret_file = \"/nonexistent/x\"\n"));
    has(&e, &["jwt.d.algorithms", "missing required key"]);
    has(&e, &["jwt.d.secret_file", "cannot read"]);
}

#[test]
fn max_reload_move_is_a_share() {
    let c = ok(BASE);
    assert_eq!(c.server.max_reload_move, None);
    let c = ok(&BASE.replace("[server]\n", "[server]\nmax_reload_move = 0.3\n"));
    assert_eq!(c.server.max_reload_move, Some(0.3));
    for (bad, shown) in [("2", "2"), ("-0.1", "-0.1"), ("nan", "NaN")] {
        let e = errs(&BASE.replace(
            "[server]\n",
            &format!("[server]\nmax_reload_move = {bad}\n"),
        ));
        has(
            &e,
            &[
                &format!("server.max_reload_move = {shown} (line 3)"),
                "must be a share between 0 and 1",
            ],
        );
    }
}

#[test]
fn pool_protocols() {
    let c = ok(BASE);
    assert_eq!(c.pools[0].protocol, Protocol::Http1);
    let h2c = BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nprotocol = \"h2c\"",
    );
    assert_eq!(ok(&h2c).pools[0].protocol, Protocol::H2c);
    let bad = BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nprotocol = \"http2\"",
    );
    has(
        &errs(&bad),
        &[
            "pool.web.protocol",
            "\"http2\"",
            "\"http1\", \"h2c\" or \"h2\"",
        ],
    );
    // h2 is HTTP/2 over TLS: it needs the pool's [tls]; h2c is cleartext: it refuses one.
    let h2 = BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nprotocol = \"h2\"",
    );
    has(
        &errs(&h2),
        &["pool.web.protocol", "needs a [pool.web.tls] table"],
    );
    let h2_tls = format!("{h2}\n[pool.web.tls]\nverify = false\n");
    assert_eq!(ok(&h2_tls).pools[0].protocol, Protocol::H2);
    let h2c_tls = format!("{h2c}\n[pool.web.tls]\nverify = false\n");
    has(&errs(&h2c_tls), &["pool.web.protocol", "cleartext HTTP/2"]);
}

#[test]
fn grpc_health_checks() {
    let h2c = BASE.replace(
        "policy = \"round_robin\"",
        "policy = \"round_robin\"\nprotocol = \"h2c\"",
    );
    let c = ok(&format!(
        "{h2c}\n[pool.web.health]\ngrpc_service = \"shop.Cart\"\n"
    ));
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!(h.grpc_service.as_deref(), Some("shop.Cart"));
    // kind = "grpc" alone: the server's overall health, no path needed.
    let c = ok(&format!("{h2c}\n[pool.web.health]\nkind = \"grpc\"\n"));
    assert_eq!(
        c.pools[0].health.as_ref().unwrap().grpc_service.as_deref(),
        Some("")
    );
    // An HTTP check still needs its path.
    has(
        &errs(&format!("{h2c}\n[pool.web.health]\nkind = \"http\"\n")),
        &["pool.web.health.path"],
    );
    has(
        &errs(&format!("{h2c}\n[pool.web.health]\nkind = \"tcp\"\n")),
        &["pool.web.health.kind", "\"http\" or \"grpc\""],
    );
    has(
        &errs(&format!(
            "{h2c}\n[pool.web.health]\nkind = \"http\"\npath = \"/\"\ngrpc_service = \"a\"\n"
        )),
        &[
            "pool.web.health.grpc_service",
            "only used with kind = \"grpc\"",
        ],
    );
    has(
        &errs(&format!(
            "{h2c}\n[pool.web.health]\ngrpc_service = \"a\"\npath = \"/healthz\"\n"
        )),
        &["pool.web.health.path", "not used by a gRPC health check"],
    );
    // gRPC needs HTTP/2 to the backends.
    has(
        &errs(&with("[pool.web.health]\ngrpc_service = \"a\"\n")),
        &["pool.web.health.grpc_service", "protocol = \"h2c\""],
    );
}

#[test]
fn dns_discovery() {
    // A pool may have only [discover]; the defaults.
    let only = r#"
[server]
listen = ["127.0.0.1:8080"]
[[route]]
pool = "api"
[pool.api]
policy = "round_robin"
[pool.api.discover]
dns = "App.Internal:8080"
"#;
    let c = ok(only);
    let d = c.pools[0].discover.as_ref().unwrap();
    assert_eq!(
        d.name,
        DiscoverName::Dns {
            host: "app.internal".into(),
            port: 8080
        }
    );
    assert_eq!(d.interval, Duration::from_secs(5));
    assert!(d.resolvers.is_empty());
    assert_eq!(d.weight, 1);
    assert!(c.pools[0].backends.is_empty());
    assert_eq!(d.name.to_string(), "dns app.internal:8080");

    // SRV beside static backends, with resolvers (a bare IP is port 53).
    let c = ok(&with(
        "[pool.web.discover]\nsrv = \"_http._tcp.app.internal\"\ninterval = \"2s\"\nresolvers = [\"10.0.0.2:5353\", \"10.0.0.3\", \"[::1]:53\"]\n",
    ));
    let d = c.pools[0].discover.as_ref().unwrap();
    assert_eq!(d.name, DiscoverName::Srv("_http._tcp.app.internal".into()));
    assert_eq!(
        d.resolvers,
        vec![
            "10.0.0.2:5353".parse().unwrap(),
            "10.0.0.3:53".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(c.pools[0].backends[0].source, BackendSource::Static);
    // An IPv6 literal with a port.
    let c = ok(&with("[pool.web.discover]\ndns = \"[fd00::1]:80\"\n"));
    assert_eq!(
        c.pools[0].discover.as_ref().unwrap().name.to_string(),
        "dns [fd00::1]:80"
    );

    let no_backends = only.replace("[pool.api.discover]\ndns = \"App.Internal:8080\"\n", "");
    has(
        &errs(&no_backends),
        &["pool.api.backend", "or a [pool.api.discover] table"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\ndns = \"a.b:80\"\nsrv = \"_x._tcp.a.b\"\n",
        )),
        &["pool.web.discover.srv", "not both"],
    );
    has(
        &errs(&with("[pool.web.discover]\ninterval = \"5s\"\n")),
        &["pool.web.discover.dns", "missing required key"],
    );
    has(
        &errs(&with("[pool.web.discover]\ndns = \"app.internal\"\n")),
        &["pool.web.discover.dns", "HOST:PORT"],
    );
    has(
        &errs(&with("[pool.web.discover]\ndns = \"app.internal:0\"\n")),
        &["pool.web.discover.dns", "1 to 65535"],
    );
    has(
        &errs(&with("[pool.web.discover]\ndns = \"app internal:80\"\n")),
        &["pool.web.discover.dns", "DNS name"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\ndns = \"a.b:80\"\ninterval = \"500ms\"\n",
        )),
        &["pool.web.discover.interval", "at least 1s"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\ndns = \"a.b:80\"\nresolvers = [\"dns.google\"]\n",
        )),
        &["pool.web.discover.resolvers[0]", "IP:PORT"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\ndns = \"a.b:80\"\nresolvers = []\n",
        )),
        &["pool.web.discover.resolvers", "/etc/resolv.conf"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\nsrv = \"_x._tcp.a.b\"\nweight = 3\n",
        )),
        &["pool.web.discover.weight", "SRV records carry their own"],
    );
    has(
        &errs(&with("[pool.web.discover]\ndns = \"a.b:80\"\nweight = 0\n")),
        &["pool.web.discover.weight", "between 1 and 256"],
    );
    has(
        &errs(&with(
            "[pool.web.discover]\ndns = \"a.b:80\"\nintervall = \"2s\"\n",
        )),
        &["pool.web.discover.intervall", "interval"],
    );
}

#[test]
fn handoff_header() {
    let cookie = BASE.replace("policy = \"round_robin\"", "policy = \"cookie\"");
    let with_secret =
        |extra: &str| format!("{cookie}\n[affinity]\nsecret = \"0123456789abcdef0123\"\n{extra}");
    // On by default where sessions are kept, off elsewhere.
    let c = ok(&with_secret(""));
    assert_eq!(
        c.pools[0].handoff_header.as_ref().map(|h| h.name.as_str()),
        Some("Tether-Session-From")
    );
    assert!(ok(BASE).pools[0].handoff_header.is_none());
    let c = ok(&with_secret(
        "[pool.web.affinity]\nhandoff_header = \"X-Moved-From\"\n",
    ));
    let h = c.pools[0].handoff_header.as_ref().unwrap();
    assert_eq!(
        (h.name.as_str(), h.lower.as_str()),
        ("X-Moved-From", "x-moved-from")
    );
    let c = ok(&with_secret(
        "[pool.web.affinity]\nhandoff_header = false\n",
    ));
    assert!(c.pools[0].handoff_header.is_none());
    has(
        &errs(&with("[pool.web.affinity]\nhandoff_header = true\n")),
        &["pool.web.affinity.handoff_header", "keeps sessions"],
    );
    has(
        &errs(&with_secret(
            "[pool.web.affinity]\nhandoff_header = \"X Moved\"\n",
        )),
        &["pool.web.affinity.handoff_header", "header name"],
    );
    has(
        &errs(&with_secret(
            "[pool.web.affinity]\nhandoff_header = \"Cookie\"\n",
        )),
        &["pool.web.affinity.handoff_header", "already uses"],
    );
}
