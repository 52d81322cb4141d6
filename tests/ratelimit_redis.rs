//! Rate limiting with `store = "redis"` (DESIGN.md §14) against a real `redis-server` (Debian
//! package `redis-server`, installed by `.ci/run`) that each test starts on a free loopback port
//! with its own temporary directory, and stops: two tether instances share one budget; a Redis
//! that is down (at startup or mid-test) or slower than `[redis] timeout` makes each
//! `on_store_error` (local, allow, deny) behave as specified, and tether reconnects when Redis
//! comes back.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// `redis-server` on PATH (or /usr/bin, /usr/sbin).
fn redis_server_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .expect("redis-server not found: install the Debian package redis-server (.ci/run does)")
}

/// A `redis-server` of this test: loopback only, no persistence, its own directory.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS).
    extra: Vec<String>,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(Vec::new())
    }

    fn start_with(extra: Vec<String>) -> Redis {
        let mut r = Redis {
            port: free_port_outside_ephemeral_range(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra,
        };
        r.run();
        r
    }

    /// A Redis that is not running yet, on a port nothing listens on (and that no outgoing
    /// connection can take meanwhile: tether dials it while it is down).
    fn stopped() -> Redis {
        Redis {
            port: free_port_outside_ephemeral_range(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra: Vec::new(),
        }
    }

    /// Starts (again) on the same port and waits until it answers PING.
    fn run(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(redis_server_bin())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let port = self.port;
        let log = self.dir.path().join("redis.log");
        let child = self.child.insert(child);
        wait_for("redis-server to answer PING", WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "redis-server on port {port} exited before answering PING ({status}):\n{log}"
                );
            }
            command(port, &["PING"]).is_ok_and(|r| r == "+PONG")
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn command(&self, args: &[&str]) -> String {
        command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One command over RESP on a fresh connection; the reply's first line (with the bulk string
/// of a `$` reply appended after a newline).
fn command(port: u16, args: &[&str]) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            Ok(_) => return Err("closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
    if let Some(n) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        let mut bulk = vec![0u8; n + 2];
        s.read_exact(&mut bulk).map_err(|e| e.to_string())?;
        return Ok(format!("{line}\n{}", String::from_utf8_lossy(&bulk[..n])));
    }
    Ok(line)
}

/// Three routes, each limited by a Redis limit with another `on_store_error`: `/deny/` and
/// `/allow/` (burst 1) and `/local/` (burst 2), one request per minute per `X-User`.
fn config(b: &Backend, redis_url: &str, timeout: &str) -> String {
    let mut c = format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[redis]
url = "{redis_url}"
timeout = "{timeout}"
[pool.web]
policy = "round_robin"
{}
"#,
        backend_tables("web", &[b])
    );
    for (name, burst) in [("deny", 1), ("allow", 1), ("local", 2)] {
        c.push_str(&format!(
            "[[route]]\npath_prefix = \"/{name}/\"\npool = \"web\"\nrate_limits = [\"{name}\"]\n\
             [rate_limit.{name}]\nkey = \"header:X-User\"\nrate = 1\nper = \"60s\"\nburst = {burst}\n\
             store = \"redis\"\non_store_error = \"{name}\"\n"
        ));
    }
    c
}

fn status(t: &Tether, path: &str, user: &str) -> u16 {
    get(&t.url(path), &[("x-user", user)]).status
}

fn store_errors(t: &Tether, limit: &str) -> f64 {
    t.metric("tether_rate_limit_store_errors_total", &[("limit", limit)])
        .unwrap_or(0.0)
}

#[test]
fn two_instances_share_one_budget() {
    let redis = Redis::start();
    let b = Backend::start("web-1");
    let cfg = config(&b, &redis.url(), "1s");
    let (t1, t2) = (Tether::start(&cfg), Tether::start(&cfg));
    // Burst 2 on /local/ (its Redis bucket, not the fallback): two requests in total, across
    // both instances, alternating.
    let mut allowed = 0;
    for i in 0..8 {
        let t = if i % 2 == 0 { &t1 } else { &t2 };
        let r = get(&t.url("/local/x"), &[("x-user", "alice")]);
        match r.status {
            200 => allowed += 1,
            429 => {
                assert_eq!(r.header("ratelimit-limit"), Some("2"), "{r:?}");
                assert_eq!(r.header("ratelimit-remaining"), Some("0"));
                // A token every 60 s (less the time the test took).
                let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((55..=60).contains(&retry), "{r:?}");
                assert_eq!(r.header("ratelimit-reset"), r.header("retry-after"));
            }
            s => panic!("status {s}: {r:?}"),
        }
        if i == 1 {
            assert_eq!(
                allowed, 2,
                "the first two requests (one per instance) are allowed"
            );
        }
    }
    assert_eq!(allowed, 2, "one budget for the fleet");
    assert_eq!(b.hits(), 2);
    // Another key has its own budget, whichever instance it meets.
    assert_eq!(status(&t2, "/local/x", "bob"), 200);
    assert_eq!(status(&t1, "/deny/x", "bob"), 200);
    assert_eq!(status(&t2, "/deny/x", "bob"), 429);
    // The bucket is in Redis, under a key every instance computes the same way, and expires
    // when it would be full again (two tokens at one a minute: within two minutes).
    let ttl: i64 = redis
        .command(&["PTTL", "tether:rl:local:alice"])
        .trim_start_matches(':')
        .parse()
        .expect("PTTL reply");
    assert!(ttl > 60_000 && ttl <= 120_000, "PTTL {ttl}");
    for t in [&t1, &t2] {
        assert_eq!(store_errors(t, "local"), 0.0);
        let text = t.metrics();
        assert!(
            text.contains("# HELP tether_rate_limit_store_errors_total "),
            "{text}"
        );
    }
    let limited: f64 = [&t1, &t2]
        .iter()
        .map(|t| {
            t.metric(
                "tether_rate_limit_total",
                &[("limit", "local"), ("result", "limited")],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(limited, 6.0);
}

#[test]
fn a_redis_that_stops_follows_on_store_error_and_is_reconnected() {
    let mut redis = Redis::start();
    let b = Backend::start("web-1");
    let t = Tether::start(&config(&b, &redis.url(), "1s"));
    // With Redis up, every limit uses its shared bucket.
    for path in ["/deny/x", "/allow/x"] {
        assert_eq!(status(&t, path, "alice"), 200, "{path}");
        assert_eq!(status(&t, path, "alice"), 429, "{path}");
    }
    assert_eq!(status(&t, "/local/x", "alice"), 200);
    let hits = b.hits();

    redis.stop();
    // deny: 503 with Retry-After: 1, never forwarded, no RateLimit headers.
    for _ in 0..3 {
        let r = get(&t.url("/deny/x"), &[("x-user", "carol")]);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.header("ratelimit-limit").is_none(), "{r:?}");
        assert!(r.backend().is_none());
    }
    assert_eq!(b.hits(), hits);
    // allow: forwarded, even for alice, whose Redis bucket is empty.
    for _ in 0..3 {
        let r = get(&t.url("/allow/x"), &[("x-user", "alice")]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.backend(), Some("web-1"));
    }
    // local: a per-instance bucket with the limit's own rate and burst (2).
    assert_eq!(status(&t, "/local/x", "dave"), 200);
    assert_eq!(status(&t, "/local/x", "dave"), 200);
    let r = get(&t.url("/local/x"), &[("x-user", "dave")]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    assert_eq!(b.hits(), hits + 5);
    assert_eq!(store_errors(&t, "deny"), 3.0);
    assert_eq!(store_errors(&t, "allow"), 3.0);
    assert_eq!(store_errors(&t, "local"), 3.0);
    assert_eq!(
        t.metric(
            "tether_rate_limit_total",
            &[("limit", "deny"), ("result", "limited")]
        ),
        Some(4.0),
        "one 429 and three undecided refusals"
    );

    // Redis comes back (empty) on the same port: tether reconnects by itself.
    redis.run();
    wait_for("tether to use Redis again", WAIT, || {
        status(&t, "/deny/x", "erin") == 200
    });
    assert_eq!(
        status(&t, "/deny/x", "erin"),
        429,
        "the shared bucket again"
    );
    assert_eq!(redis.command(&["EXISTS", "tether:rl:deny:erin"]), ":1");
}

#[test]
fn a_dead_redis_at_startup_does_not_stop_tether() {
    let mut redis = Redis::stopped();
    let b = Backend::start("web-1");
    let t = Tether::start(&config(&b, &redis.url(), "1s"));
    assert_eq!(status(&t, "/deny/x", "alice"), 503);
    assert_eq!(status(&t, "/allow/x", "alice"), 200);
    assert!(store_errors(&t, "deny") >= 1.0);
    redis.run();
    wait_for("tether to connect to Redis", WAIT, || {
        status(&t, "/deny/x", "alice") == 200
    });
    assert_eq!(status(&t, "/deny/x", "alice"), 429);
    assert!(t.stderr().contains("connected to redis"), "{}", t.stderr());
}

#[test]
fn a_redis_slower_than_the_timeout_is_a_store_error() {
    let redis = Redis::start();
    let b = Backend::start("web-1");
    let t = Tether::start(&config(&b, &redis.url(), "200ms"));
    assert_eq!(status(&t, "/deny/x", "alice"), 200);
    assert_eq!(status(&t, "/local/x", "alice"), 200);
    // Redis answers nobody for 1.5 s: every call exceeds the 200 ms timeout.
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]), "+OK");
    let r = get(&t.url("/deny/x"), &[("x-user", "bob")]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(status(&t, "/allow/x", "bob"), 200);
    // alice had one of two tokens left in Redis; the fallback bucket has both.
    assert_eq!(status(&t, "/local/x", "carol"), 200);
    assert!(store_errors(&t, "deny") >= 1.0);
    assert!(store_errors(&t, "allow") >= 1.0);
    assert!(store_errors(&t, "local") >= 1.0);
    // Once Redis answers again, the shared buckets decide again. Each poll uses a new key: a
    // call that timed out still runs on the server when the pause ends, taking its token.
    let mut n = 0;
    let mut user = String::new();
    wait_for("Redis to decide again", WAIT, || {
        n += 1;
        user = format!("dave-{n}");
        status(&t, "/deny/x", &user) == 200
    });
    assert_eq!(status(&t, "/deny/x", &user), 429);
}

#[test]
fn a_reload_to_another_redis_uses_it() {
    let (a, b) = (Redis::start(), Redis::start());
    let backend = Backend::start("web-1");
    let t = Tether::start(&config(&backend, &a.url(), "1s"));
    assert_eq!(status(&t, "/deny/x", "alice"), 200);
    assert_eq!(a.command(&["EXISTS", "tether:rl:deny:alice"]), ":1");
    // SIGHUP with [redis] pointing at the other server: its buckets from now on (alice has a
    // full one there), connected by the control runtime in the background.
    let before = t.metric("tether_config_generation", &[]).unwrap_or(0.0);
    t.write_config(&config(&backend, &b.url(), "1s"));
    t.sighup();
    wait_for("the reload", WAIT, || {
        t.metric("tether_config_generation", &[]).unwrap_or(0.0) > before
    });
    let mut n = 0;
    wait_for("the new Redis to decide", WAIT, || {
        n += 1;
        status(&t, "/deny/x", &format!("probe-{n}")) == 200
    });
    assert_eq!(status(&t, "/deny/x", "alice"), 200);
    assert_eq!(status(&t, "/deny/x", "alice"), 429);
    assert_eq!(b.command(&["EXISTS", "tether:rl:deny:alice"]), ":1");
    // The old store's connection is closed once no snapshot uses it (only this probe's own
    // connection is left on the first server).
    let mut clients = String::new();
    let left = eventually(WAIT, || {
        clients = a.command(&["CLIENT", "LIST"]);
        clients.matches(" addr=").count() == 1
    });
    assert!(left, "tether still connected to the old Redis:\n{clients}");
}

/// A test CA issuing the TLS Redis's server certificate and tether's client certificate (rcgen),
/// as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        pki.write("ca.pem", &pki.ca.pem());
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn write(&self, name: &str, contents: &str) -> String {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
        self.path(name)
    }

    /// `NAME.pem` and `NAME.key`: a certificate for `sans` (an IP becomes an IP SAN).
    fn issue(&self, name: &str, sans: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }
}

/// `[redis] url = "rediss://…"` to a redis-server that speaks only TLS on that port and
/// requires a client certificate: with the test CA as `ca_file` and a client certificate, the
/// limit works (burst 1: 200 then 429, the bucket in Redis); a tether that trusts another CA
/// cannot connect, and its requests follow `on_store_error` (deny: 503, store errors counted).
#[test]
fn rediss_with_a_ca_file_and_a_client_certificate() {
    let pki = Pki::new("tether test redis CA");
    pki.issue(
        "server",
        &["127.0.0.1", "localhost"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    pki.issue(
        "client",
        &["tether"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls_port = free_port_outside_ephemeral_range();
    let redis = Redis::start_with(
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &pki.path("server.pem"),
            "--tls-key-file",
            &pki.path("server.key"),
            "--tls-ca-cert-file",
            &pki.path("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    let b = Backend::start("web-1");
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let with_tls = |ca: &str| {
        config(&b, &url, "1s").replacen(
            "timeout = \"1s\"\n",
            &format!(
                "timeout = \"1s\"\nca_file = {ca:?}\ncert = {:?}\nkey = {:?}\n",
                pki.path("client.pem"),
                pki.path("client.key")
            ),
            1,
        )
    };
    let t = Tether::start(&with_tls(&pki.path("ca.pem")));
    // Until the TLS connection is up, a request to /deny/ is 503; each probe uses its own key.
    let mut probe = 0;
    wait_for("tether to reach Redis over TLS", WAIT, || {
        probe += 1;
        status(&t, "/deny/x", &format!("probe-{probe}")) == 200
    });
    assert_eq!(status(&t, "/deny/x", "alice"), 200);
    assert_eq!(status(&t, "/deny/x", "alice"), 429, "burst 1, in Redis");
    assert_eq!(
        redis.command(&["EXISTS", "tether:rl:deny:alice"]),
        ":1",
        "the bucket is in Redis"
    );

    // Another CA: every handshake fails; the route's limit denies and counts the errors.
    let other = Pki::new("another CA");
    let t2 = Tether::start(&with_tls(&other.path("ca.pem")));
    let r = get(&t2.url("/deny/x"), &[("x-user", "carol")]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    wait_for("store errors counted", WAIT, || {
        status(&t2, "/deny/x", "carol") == 503 && store_errors(&t2, "deny") >= 1.0
    });
    assert!(
        status(&t, "/deny/x", "dave") == 200,
        "the instance that trusts the right CA still works"
    );
}
