//! gRPC through tether (DESIGN.md §21), end to end with a real gRPC stack on both sides: the
//! Python grpcio server and client of `tests/fixtures/grpc` (Debian's `/usr/bin/python3`, no
//! generated stubs). All four RPC kinds with their metadata and trailers over `h2c` and `h2`
//! pools; hash affinity on request metadata and its failover when a backend dies mid-stream, the
//! same on two instances; the gRPC health check; tether's own refusals as gRPC statuses; a
//! streaming RPC counted in flight for its whole life; `grpc-timeout` capping `read_timeout`.
//!
//! Owns: what a gRPC client and an operator see of §21. Must not touch: the network beyond
//! loopback. Every server and client process a test starts is a child of the test, stopped by
//! its own handle (SIGKILL by pid, then reaped) when the handle drops, even on panic.

mod common;

use common::h2::tls_fixture;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// Debian's interpreter: the one with grpcio (a `python3` on PATH may be a pyenv without it).
const PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/grpc")
        .join(name)
        .display()
        .to_string()
}

/// A Python fixture process: stdout read line by line on a thread (so a test can wait for a line
/// with a bound), stderr collected for panic messages. Dropping it kills the process (SIGKILL to
/// its own pid) and reaps it.
struct Proc {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(what: &str, script: &str, args: &[String]) -> Proc {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(fixture(script))
            .args(args)
            .env("GRPC_VERBOSITY", "NONE")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // grpc honours proxy variables; everything here is loopback and direct.
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "grpc_proxy",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PYTHON} {script} {args:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            what: what.to_owned(),
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line within `timeout`; `None` on timeout or end of output.
    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Every remaining stdout line until the process closes its stdout (at most `timeout`).
    #[track_caller]
    fn rest(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} still running after {timeout:?}; output so far {out:?}\n--- stderr ---\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
        let exited = eventually(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "{} closed stdout but did not exit", self.what);
        out
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL (this process only) and reap. No-op once it has exited.
    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `server.py` gRPC backend (service `test.Echo` + `grpc.health.v1.Health`) on a fresh
/// 127.0.0.1 port, its health answered from a file in its own temp dir.
struct GrpcServer {
    name: String,
    port: u16,
    proc: Proc,
    dir: tempfile::TempDir,
}

impl GrpcServer {
    fn start(name: &str) -> GrpcServer {
        GrpcServer::start_with(name, false)
    }

    fn start_tls(name: &str) -> GrpcServer {
        GrpcServer::start_with(name, true)
    }

    #[track_caller]
    fn start_with(name: &str, tls: bool) -> GrpcServer {
        let dir = tempfile::Builder::new()
            .prefix("tether-grpc-")
            .tempdir()
            .expect("temp dir");
        let health = dir.path().join("health");
        let mut args = vec![
            "--name".to_owned(),
            name.to_owned(),
            "--port".to_owned(),
            "0".to_owned(),
            "--health-file".to_owned(),
            health.display().to_string(),
        ];
        if tls {
            args.extend([
                "--tls-cert".to_owned(),
                tls_fixture("cert.pem"),
                "--tls-key".to_owned(),
                tls_fixture("key.pem"),
            ]);
        }
        let proc = Proc::spawn(&format!("grpc server {name}"), "server.py", &args);
        let line = proc.next_line(Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "grpc server {name} did not print LISTENING\n--- stderr ---\n{}",
                proc.stderr()
            )
        });
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or_else(|| panic!("grpc server {name}: unexpected first line {line:?}"));
        GrpcServer {
            name: name.to_owned(),
            port,
            proc,
            dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What `grpc.health.v1.Health/Check` answers from now on: "SERVING" or "NOT_SERVING"
    /// (written atomically: the server never reads half a word).
    fn set_health(&self, word: &str) {
        let tmp: PathBuf = self.dir.path().join("health.tmp");
        std::fs::write(&tmp, word).expect("write health file");
        std::fs::rename(&tmp, self.dir.path().join("health")).expect("rename health file");
    }

    /// Kill the server process at once (SIGKILL): its connections die with it.
    fn kill(&mut self) {
        self.proc.kill();
    }
}

/// `[[pool.POOL.backend]]` tables for gRPC servers, id = the server's name.
fn grpc_backends(pool: &str, servers: &[&GrpcServer]) -> String {
    servers
        .iter()
        .map(|s| {
            format!(
                "[[pool.{pool}.backend]]\nid = \"{}\"\naddr = \"{}\"\n",
                s.name,
                s.addr()
            )
        })
        .collect()
}

/// Run `client.py --target ADDR ARGS...` to its end; one JSON value per line it printed.
#[track_caller]
fn client(target: SocketAddr, args: &[&str]) -> Vec<Value> {
    let mut p = spawn_client(target, args);
    let lines = p.rest(Duration::from_secs(60));
    let values: Vec<Value> = lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "client {args:?}: not JSON ({e}): {l:?}\n--- stderr ---\n{}",
                    p.stderr()
                )
            })
        })
        .collect();
    assert!(
        !values.is_empty(),
        "client {args:?} printed nothing\n--- stderr ---\n{}",
        p.stderr()
    );
    values
}

/// One RPC: the single JSON line of `client(...)`.
#[track_caller]
fn call(target: SocketAddr, args: &[&str]) -> Value {
    let mut v = client(target, args);
    assert_eq!(v.len(), 1, "one result expected: {v:?}");
    v.remove(0)
}

fn spawn_client(target: SocketAddr, args: &[&str]) -> Proc {
    let mut all = vec!["--target".to_owned(), target.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Proc::spawn(&format!("grpc client {args:?}"), "client.py", &all)
}

/// A successful result, or a panic naming the failure.
#[track_caller]
fn ok(v: &Value) -> &Value {
    assert_eq!(v["ok"], true, "RPC failed: {v}");
    v
}

/// A failed result with this gRPC code.
#[track_caller]
fn failed(v: &Value, code: u64, name: &str) {
    assert_eq!(v["ok"], false, "expected {name}, got success: {v}");
    assert_eq!(v["code"], code, "expected {code} {name}: {v}");
    assert_eq!(v["name"], name, "{v}");
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The backend named by a message `NAME:...`.
fn prefix(msg: &str) -> String {
    msg.split(':').next().unwrap_or("").to_owned()
}

const HEAD: &str = r#"
[server]
listen = ["{LISTEN}"]
admin = "{ADMIN}"
grace_period = "1s"
h2c = true
"#;

fn in_flight(t: &Tether, pool: &str, backend: &str) -> Option<f64> {
    t.metric(
        "tether_backend_in_flight",
        &[("pool", pool), ("backend", backend)],
    )
}

fn backend_up(t: &Tether, pool: &str, backend: &str) -> Option<f64> {
    t.metric("tether_backend_up", &[("pool", pool), ("backend", backend)])
}

fn status_of(t: &Tether, pool: &str, backend: &str) -> Value {
    let st = t.status();
    st["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["backends"].as_array())
        .and_then(|bs| bs.iter().find(|b| b["id"] == backend))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {pool}/{backend} in /status: {st:#}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The four RPC kinds over h2c
// ---------------------------------------------------------------------------------------------

#[test]
fn all_four_rpc_kinds_pass_through_an_h2c_pool_with_metadata_trailers_and_errors() {
    let g1 = GrpcServer::start("g1");
    let g2 = GrpcServer::start("g2");
    let t = Tether::start(&format!(
        "{HEAD}[[route]]\npool = \"g\"\n[pool.g]\npolicy = \"round_robin\"\nprotocol = \"h2c\"\n{}",
        grpc_backends("g", &[&g1, &g2])
    ));
    let at = t.listen();
    let mut seen = BTreeSet::new();
    // /status says what the pool speaks to its backends.
    let st = t.status();
    assert_eq!(st["pools"][0]["protocol"], "h2c", "{st:#}");

    // Unary: body, initial metadata, trailers; round robin over one HTTP/2 connection.
    let unary = client(
        at,
        &[
            "--metadata",
            "x-session-id=s-42",
            "--count",
            "4",
            "unary",
            "hello",
        ],
    );
    assert_eq!(unary.len(), 4, "{unary:?}");
    for v in &unary {
        ok(v);
        let b = s(&v["initial"]["x-backend"]).to_owned();
        assert!(b == "g1" || b == "g2", "{v}");
        assert_eq!(s(&v["body"]), format!("{b}:hello"), "{v}");
        assert_eq!(s(&v["trailing"]["x-trailer"]), format!("done-{b}"), "{v}");
        assert_eq!(
            s(&v["trailing"]["x-seen-session"]),
            "s-42",
            "request metadata reaches the backend: {v}"
        );
        seen.insert(b);
    }
    assert_eq!(
        seen.len(),
        2,
        "round robin reaches both backends: {unary:?}"
    );

    // Server streaming, with and without gaps between the messages.
    for arg in ["3", "4:0.05", "3"] {
        let v = call(at, &["server-stream", arg]);
        ok(&v);
        let b = s(&v["initial"]["x-backend"]).to_owned();
        let n: usize = arg.split(':').next().unwrap().parse().unwrap();
        let want: Vec<String> = (0..n).map(|i| format!("{b}:{i}")).collect();
        assert_eq!(v["messages"], serde_json::json!(want), "{v}");
        assert_eq!(s(&v["trailing"]["x-trailer"]), format!("done-{b}"), "{v}");
    }

    // Client streaming.
    for _ in 0..2 {
        let v = call(at, &["client-stream", "a", "b", "c"]);
        ok(&v);
        let b = prefix(s(&v["body"]));
        assert!(b == "g1" || b == "g2", "{v}");
        assert_eq!(s(&v["body"]), format!("{b}:3:a,b,c"), "{v}");
        assert_eq!(s(&v["trailing"]["x-trailer"]), format!("done-{b}"), "{v}");
        seen.insert(b);
    }

    // Bidirectional streaming: one answer per message, in order, then the trailers.
    for _ in 0..2 {
        let v = call(at, &["bidi", "x", "y", "z"]);
        ok(&v);
        let msgs = v["messages"].as_array().expect("messages");
        let b = prefix(s(&msgs[0]));
        assert!(b == "g1" || b == "g2", "{v}");
        let want: Vec<String> = ["x", "y", "z"].iter().map(|m| format!("{b}:{m}")).collect();
        assert_eq!(v["messages"], serde_json::json!(want), "{v}");
        assert_eq!(s(&v["trailing"]["x-trailer"]), format!("done-{b}"), "{v}");
        assert!(v.get("early_end").is_none(), "{v}");
    }

    // A backend's own error status passes through untouched, with its metadata.
    for _ in 0..2 {
        let v = call(at, &["unary", "fail"]);
        failed(&v, 5, "NOT_FOUND");
        assert_eq!(s(&v["details"]), "no such thing", "{v}");
        let b = s(&v["initial"]["x-backend"]).to_owned();
        assert!(b == "g1" || b == "g2", "{v}");
        assert_eq!(s(&v["trailing"]["x-trailer"]), format!("done-{b}"), "{v}");
    }

    // Every RPC was one request of the pool (a backend's gRPC error is still an HTTP 200).
    wait_for("the RPCs accounted", WAIT, || {
        t.metric_sum("tether_requests_total", &[("pool", "g"), ("code", "2xx")]) >= 13.0
    });
    assert_eq!(
        t.metric_sum("tether_requests_total", &[("pool", "g"), ("code", "5xx")]),
        0.0
    );
    for b in ["g1", "g2"] {
        wait_for("nothing left in flight", WAIT, || {
            in_flight(&t, "g", b) == Some(0.0)
        });
    }
}

// ---------------------------------------------------------------------------------------------
// 2. h2 over TLS to the backend
// ---------------------------------------------------------------------------------------------

#[test]
fn h2_over_tls_to_the_backend_carries_a_unary_call_and_a_stream() {
    let g = GrpcServer::start_tls("tls1");
    let t = Tether::start(&format!(
        r#"{HEAD}[[route]]
pool = "g"
[pool.g]
policy = "round_robin"
protocol = "h2"
[pool.g.tls]
ca_file = "{ca}"
sni = "localhost"
{backends}"#,
        ca = tls_fixture("cert.pem"),
        backends = grpc_backends("g", &[&g]),
    ));
    let v = call(t.listen(), &["unary", "over-tls"]);
    ok(&v);
    assert_eq!(s(&v["body"]), "tls1:over-tls", "{v}");
    assert_eq!(s(&v["initial"]["x-backend"]), "tls1", "{v}");
    assert_eq!(s(&v["trailing"]["x-trailer"]), "done-tls1", "{v}");

    let v = call(t.listen(), &["bidi", "p", "q"]);
    ok(&v);
    assert_eq!(
        v["messages"],
        serde_json::json!(["tls1:p", "tls1:q"]),
        "{v}"
    );
    assert_eq!(s(&v["trailing"]["x-trailer"]), "done-tls1", "{v}");
}

// ---------------------------------------------------------------------------------------------
// 3. Hash affinity on metadata, failover mid-stream, two instances
// ---------------------------------------------------------------------------------------------

fn hash_config(servers: &[&GrpcServer]) -> String {
    format!(
        r#"{HEAD}[[route]]
pool = "g"
[pool.g]
policy = "hash"
protocol = "h2c"
retries = 2
[pool.g.hash]
key = "header:x-session-id"
{}"#,
        grpc_backends("g", servers)
    )
}

/// The backend a unary RPC with this session key lands on.
#[track_caller]
fn home(t: &Tether, key: &str) -> String {
    let md = format!("x-session-id={key}");
    let v = call(t.listen(), &["--metadata", &md, "unary", "where"]);
    ok(&v);
    assert_eq!(s(&v["trailing"]["x-seen-session"]), key, "{v}");
    s(&v["initial"]["x-backend"]).to_owned()
}

#[test]
fn hash_affinity_on_metadata_fails_over_mid_stream_to_the_same_home_on_two_instances() {
    let mut servers: Vec<GrpcServer> = (1..=3)
        .map(|i| GrpcServer::start(&format!("h{i}")))
        .collect();
    let cfg = hash_config(&servers.iter().collect::<Vec<_>>());
    let a = Tether::start(&cfg);
    let b = Tether::start(&cfg);

    // Many calls with the same key land on one backend.
    let many = client(
        a.listen(),
        &[
            "--metadata",
            "x-session-id=user-0",
            "--count",
            "12",
            "unary",
            "x",
        ],
    );
    let homes: BTreeSet<String> = many
        .iter()
        .map(|v| s(&ok(v)["initial"]["x-backend"]).to_owned())
        .collect();
    assert_eq!(homes.len(), 1, "one key, one backend: {many:?}");

    let keys: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let map = |t: &Tether| -> BTreeMap<String, String> {
        keys.iter().map(|k| (k.clone(), home(t, k))).collect()
    };
    let before = map(&a);
    assert_eq!(before, map(&b), "same config, same homes");
    let owners: BTreeSet<&String> = before.values().collect();
    assert!(
        owners.len() >= 2,
        "20 keys spread over backends: {before:?}"
    );

    // A stream of user-0 held open on instance A; its backend dies under it.
    let held = spawn_client(
        a.listen(),
        &["--metadata", "x-session-id=user-0", "bidi-hold", "m", "30"],
    );
    let first = held
        .next_line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("bidi-hold printed no first line\n{}", held.stderr()));
    let first: Value = serde_json::from_str(&first).expect("JSON first line");
    assert_eq!(first["event"], "first", "{first}");
    let victim = prefix(s(&first["message"]));
    assert_eq!(
        victim, before["user-0"],
        "the stream went to the key's home"
    );
    wait_for("the held stream in flight", WAIT, || {
        in_flight(&a, "g", &victim) == Some(1.0)
    });
    servers
        .iter_mut()
        .find(|s| s.name == victim)
        .expect("victim server")
        .kill();

    let end = held.next_line(WAIT).unwrap_or_else(|| {
        panic!(
            "the held client did not end within {WAIT:?} after its backend died\n{}",
            held.stderr()
        )
    });
    let end: Value = serde_json::from_str(&end).expect("JSON end line");
    failed(&end, 14, "UNAVAILABLE");
    drop(held);

    // The next RPC of the key: the same new home on both instances.
    let new_a = home(&a, "user-0");
    let new_b = home(&b, "user-0");
    assert_ne!(new_a, victim, "moved off the dead backend");
    assert_eq!(new_a, new_b, "both instances pick the same new home");

    // And both agree on every key: only the dead backend's keys moved.
    let after_a = map(&a);
    let after_b = map(&b);
    assert_eq!(after_a, after_b, "both instances agree after the failure");
    for k in &keys {
        if before[k] == victim {
            assert_ne!(after_a[k], victim, "{k} moved: {after_a:?}");
        } else {
            assert_eq!(
                after_a[k], before[k],
                "{k} of a live backend did not move: {before:?} → {after_a:?}"
            );
        }
    }
    assert_eq!(after_a["user-0"], new_a, "no flapping between calls");
    wait_for("the dead stream no longer in flight", WAIT, || {
        in_flight(&a, "g", &victim) == Some(0.0)
    });
}

// ---------------------------------------------------------------------------------------------
// 4. The gRPC health check
// ---------------------------------------------------------------------------------------------

fn health_config(health: &str, servers: &[&GrpcServer]) -> String {
    format!(
        r#"{HEAD}[[route]]
pool = "g"
[pool.g]
policy = "round_robin"
protocol = "h2c"
[pool.g.health]
{health}
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 2
{}"#,
        grpc_backends("g", servers)
    )
}

/// The backends of `n` unary calls (over one connection).
#[track_caller]
fn backends_of(t: &Tether, n: usize) -> Vec<String> {
    let count = n.to_string();
    client(t.listen(), &["--count", &count, "unary", "x"])
        .iter()
        .map(|v| s(&ok(v)["initial"]["x-backend"]).to_owned())
        .collect()
}

/// `g1` goes down when its health says NOT_SERVING (calls all go to `g2`, metrics and /status say
/// down) and comes back on SERVING.
fn flip_down_and_up(t: &Tether, g1: &GrpcServer) {
    wait_for("both backends up and reached", WAIT, || {
        let seen: BTreeSet<String> = backends_of(t, 4).into_iter().collect();
        seen.len() == 2
    });
    assert!(
        t.metric_sum(
            "tether_health_checks_total",
            &[("pool", "g"), ("backend", "g1"), ("result", "success")]
        ) >= 1.0,
        "gRPC checks succeed against a SERVING server:\n{}",
        t.metrics()
    );

    g1.set_health("NOT_SERVING");
    wait_for("g1 marked down", WAIT, || {
        backend_up(t, "g", "g1") == Some(0.0)
    });
    let st = status_of(t, "g", "g1");
    assert_eq!(st["health"], "down", "{st}");
    assert_eq!(backend_up(t, "g", "g2"), Some(1.0));
    assert!(
        t.metric_sum(
            "tether_health_checks_total",
            &[("pool", "g"), ("backend", "g1"), ("result", "failure")]
        ) >= 2.0
    );
    let calls = backends_of(t, 6);
    assert!(
        calls.iter().all(|b| b == "g2"),
        "a NOT_SERVING backend takes no calls: {calls:?}"
    );

    g1.set_health("SERVING");
    wait_for("g1 back up", WAIT, || backend_up(t, "g", "g1") == Some(1.0));
    assert_eq!(status_of(t, "g", "g1")["health"], "up");
    wait_for("g1 takes calls again", WAIT, || {
        backends_of(t, 4).iter().any(|b| b == "g1")
    });
}

#[test]
fn grpc_health_check_of_a_service_takes_a_not_serving_backend_out_and_back() {
    let g1 = GrpcServer::start("g1");
    let g2 = GrpcServer::start("g2");
    let t = Tether::start(&health_config("grpc_service = \"test.Echo\"", &[&g1, &g2]));
    flip_down_and_up(&t, &g1);
}

#[test]
fn grpc_health_check_kind_grpc_checks_the_whole_server() {
    let g1 = GrpcServer::start("g1");
    let g2 = GrpcServer::start("g2");
    let t = Tether::start(&health_config("kind = \"grpc\"", &[&g1, &g2]));
    flip_down_and_up(&t, &g1);
}

// ---------------------------------------------------------------------------------------------
// 5. tether's own answers as gRPC statuses
// ---------------------------------------------------------------------------------------------

#[test]
fn no_backend_left_is_unavailable() {
    let mut g1 = GrpcServer::start("g1");
    let mut g2 = GrpcServer::start("g2");
    let t = Tether::start(&format!(
        "{HEAD}[[route]]\npool = \"g\"\n[pool.g]\npolicy = \"round_robin\"\nprotocol = \"h2c\"\nretries = 1\n{}",
        grpc_backends("g", &[&g1, &g2])
    ));
    ok(&call(t.listen(), &["unary", "alive"]));
    g1.kill();
    g2.kill();
    for v in client(t.listen(), &["--count", "3", "unary", "x"]) {
        failed(&v, 14, "UNAVAILABLE");
        assert!(v["initial"].get("x-backend").is_none(), "{v}");
    }
    // Streaming kinds get the same answer.
    failed(&call(t.listen(), &["bidi", "x"]), 14, "UNAVAILABLE");
    failed(
        &call(t.listen(), &["server-stream", "2"]),
        14,
        "UNAVAILABLE",
    );
}

#[test]
fn a_rate_limited_call_is_resource_exhausted_with_retry_after() {
    let g = GrpcServer::start("g1");
    let t = Tether::start(&format!(
        r#"{HEAD}[[route]]
pool = "g"
rate_limits = ["per_user"]
[rate_limit.per_user]
key = "header:x-user"
rate = 1
per = "1m"
burst = 1
[pool.g]
policy = "round_robin"
protocol = "h2c"
{}"#,
        grpc_backends("g", &[&g])
    ));
    let v = client(
        t.listen(),
        &["--metadata", "x-user=alice", "--count", "2", "unary", "x"],
    );
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(s(&ok(&v[0])["body"]), "g1:x");
    failed(&v[1], 8, "RESOURCE_EXHAUSTED");
    let details = s(&v[1]["details"]);
    assert!(details.contains("retry after"), "{}", v[1]);
    assert!(v[1]["initial"].get("x-backend").is_none(), "{}", v[1]);
    // Another user has a bucket of their own.
    ok(&call(
        t.listen(),
        &["--metadata", "x-user=bob", "unary", "x"],
    ));
    assert_eq!(
        t.metric(
            "tether_rate_limit_total",
            &[("limit", "per_user"), ("result", "limited")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_call_without_a_valid_token_on_a_jwt_route_is_unauthenticated() {
    let g = GrpcServer::start("g1");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-shared-secret-of-32-bytes-long\n").unwrap();
    let t = Tether::start(&format!(
        r#"{HEAD}[jwt.users]
secret_file = "{}"
algorithms = ["HS256"]
[[route]]
pool = "g"
jwt = "users"
[pool.g]
policy = "round_robin"
protocol = "h2c"
{}"#,
        secret.display(),
        grpc_backends("g", &[&g])
    ));
    failed(&call(t.listen(), &["unary", "x"]), 16, "UNAUTHENTICATED");
    failed(
        &call(
            t.listen(),
            &[
                "--metadata",
                "authorization=Bearer not.a.token",
                "unary",
                "x",
            ],
        ),
        16,
        "UNAUTHENTICATED",
    );
    failed(&call(t.listen(), &["bidi", "x"]), 16, "UNAUTHENTICATED");
    wait_for("the refusals counted", WAIT, || {
        t.metric_sum(
            "tether_jwt_total",
            &[("jwt", "users"), ("result", "missing")],
        ) >= 2.0
            && t.metric_sum(
                "tether_jwt_total",
                &[("jwt", "users"), ("result", "invalid")],
            ) >= 1.0
    });
}

#[test]
fn a_full_circuit_breaker_is_resource_exhausted() {
    let g = GrpcServer::start("g1");
    let t = Tether::start(&format!(
        r#"{HEAD}[[route]]
pool = "g"
[pool.g]
policy = "round_robin"
protocol = "h2c"
retries = 0
[pool.g.circuit_breaker]
max_in_flight = 1
max_queue = 0
{}"#,
        grpc_backends("g", &[&g])
    ));
    let mut slow = spawn_client(t.listen(), &["unary", "sleep:2"]);
    wait_for("the slow call in flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(1.0)
    });
    let v = call(t.listen(), &["unary", "x"]);
    failed(&v, 8, "RESOURCE_EXHAUSTED");
    assert!(v["initial"].get("x-backend").is_none(), "{v}");
    let done = slow.rest(Duration::from_secs(20));
    assert_eq!(done.len(), 1, "{done:?}");
    let done: Value = serde_json::from_str(&done[0]).unwrap();
    assert_eq!(s(&ok(&done)["body"]), "g1:sleep:2", "{done}");
    assert_eq!(
        t.metric(
            "tether_queue_rejections_total",
            &[("pool", "g"), ("reason", "full")]
        ),
        Some(1.0)
    );
    // The slot is free again.
    wait_for("the slot freed", WAIT, || {
        in_flight(&t, "g", "g1") == Some(0.0)
    });
    ok(&call(t.listen(), &["unary", "x"]));
}

#[test]
fn a_streaming_call_is_in_flight_for_its_whole_life() {
    let g = GrpcServer::start("g1");
    let t = Tether::start(&format!(
        "{HEAD}[[route]]\npool = \"g\"\n[pool.g]\npolicy = \"round_robin\"\nprotocol = \"h2c\"\n{}",
        grpc_backends("g", &[&g])
    ));
    assert_eq!(in_flight(&t, "g", "g1"), Some(0.0));
    let mut held = spawn_client(t.listen(), &["bidi-hold", "m", "3"]);
    let first = held
        .next_line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no first line\n{}", held.stderr()));
    assert!(first.contains("\"first\""), "{first}");
    let opened = Instant::now();
    wait_for("the open stream in flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(1.0)
    });
    assert_eq!(status_of(&t, "g", "g1")["in_flight"], 1);
    // Still in flight while the stream idles (the client holds it for 3 s).
    std::thread::sleep(Duration::from_millis(500));
    if opened.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            in_flight(&t, "g", "g1"),
            Some(1.0),
            "an idle open stream stays in flight"
        );
    }
    let end = held.rest(Duration::from_secs(20));
    assert_eq!(end.len(), 1, "{end:?}");
    let end: Value = serde_json::from_str(&end[0]).unwrap();
    assert_eq!(
        end["messages"],
        serde_json::json!(["g1:m", "g1:m"]),
        "{end}"
    );
    assert_eq!(s(&ok(&end)["trailing"]["x-trailer"]), "done-g1");
    wait_for("the finished stream out of flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(0.0)
    });
    assert_eq!(status_of(&t, "g", "g1")["in_flight"], 0);

    // A stream the client abandons ends its in-flight count too.
    let mut abandoned = spawn_client(t.listen(), &["bidi-hold", "m", "30"]);
    abandoned
        .next_line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no first line\n{}", abandoned.stderr()));
    wait_for("the second stream in flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(1.0)
    });
    abandoned.kill();
    wait_for("the abandoned stream out of flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(0.0)
    });
}

// ---------------------------------------------------------------------------------------------
// 6. grpc-timeout caps read_timeout
// ---------------------------------------------------------------------------------------------

/// What a raw HTTP/2 gRPC call saw: the response head, its trailers (empty for trailers-only),
/// the body and when the response ended.
struct RawCall {
    status: u16,
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
    body: Vec<u8>,
    elapsed: Duration,
}

impl RawCall {
    /// `grpc-status` from the trailers, or from the head of a trailers-only answer.
    fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .get("grpc-status")
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }
}

/// One gRPC call over cleartext HTTP/2 with `grpc-timeout` set, made with the `h2` crate so that
/// the client does NOT cancel at its deadline (a grpcio client resets the stream at the same
/// instant tether would give up): what tether itself does at the deadline is what the client
/// then sees. `message = Some(m)` sends one length-prefixed message and ends the request;
/// `None` sends no message and keeps the request open until the response has ended.
fn raw_grpc_call(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    grpc_timeout: &str,
    message: Option<&[u8]>,
) -> Result<RawCall, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(())
        .expect("request");
    let framed = message.map(|m| {
        let mut f = vec![0u8];
        f.extend_from_slice(&u32::try_from(m.len()).unwrap().to_be_bytes());
        f.extend_from_slice(m);
        bytes::Bytes::from(f)
    });
    rt.block_on(async move {
        let fut = async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let (send, conn) = ::h2::client::handshake(tcp)
                .await
                .map_err(|e| format!("h2c handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut send = send.ready().await.map_err(|e| e.to_string())?;
            let start = Instant::now();
            let (resp, mut stream) = send.send_request(req, false).map_err(|e| e.to_string())?;
            if let Some(f) = framed {
                stream.send_data(f, true).map_err(|e| e.to_string())?;
            }
            let resp = resp.await.map_err(|e| format!("response head: {e}"))?;
            let status = resp.status().as_u16();
            let (parts, mut body) = resp.into_parts();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let trailers = body
                .trailers()
                .await
                .map_err(|e| format!("trailers: {e}"))?
                .unwrap_or_default();
            let elapsed = start.elapsed();
            // Only now may the request side go (it was held open for the `None` case).
            drop(stream);
            Ok(RawCall {
                status,
                headers: parts.headers,
                trailers,
                body: data,
                elapsed,
            })
        };
        tokio::time::timeout(Duration::from_secs(15), fut)
            .await
            .map_err(|_| "no complete response within 15 s".to_owned())?
    })
}

/// An HTTP/2 (h2c) backend that accepts every stream and never ends one: with `send_head` it
/// answers a gRPC response head (`x-backend: silent`) at once and then stays silent, otherwise it
/// sends nothing at all. Unlike a grpcio server it ignores `grpc-timeout`, so only tether can end
/// the call at the deadline. Dropping it stops it (accept loop and connections).
struct SilentH2 {
    addr: SocketAddr,
    streams: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentH2 {
    fn start(send_head: bool) -> SilentH2 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind silent backend");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = streams.clone();
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            if let Ok((tcp, _)) = accepted {
                                conns.spawn(silent_conn(tcp, send_head, counted.clone()));
                            }
                        }
                    }
                }
                conns.shutdown().await;
            });
        });
        SilentH2 {
            addr,
            streams,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Streams received so far.
    fn streams(&self) -> usize {
        self.streams.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SilentH2 {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn silent_conn(
    tcp: tokio::net::TcpStream,
    send_head: bool,
    streams: Arc<std::sync::atomic::AtomicUsize>,
) {
    let Ok(mut conn) = ::h2::server::handshake(tcp).await else {
        return;
    };
    // Everything is held (never dropped, never ended) while the connection lives.
    let mut requests = Vec::new();
    let mut responders = Vec::new();
    let mut bodies = Vec::new();
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        streams.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if send_head {
            let head = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("x-backend", "silent")
                .body(())
                .unwrap();
            if let Ok(body) = respond.send_response(head, false) {
                bodies.push(body);
            }
        }
        requests.push(req);
        responders.push(respond);
    }
}

fn pool_5xx(t: &Tether, pool: &str) -> f64 {
    t.metric_sum("tether_requests_total", &[("pool", pool), ("code", "5xx")])
}

/// Pool `g` (the grpcio server) and pool `s` (a silent backend), both with read_timeout 30 s;
/// `:authority` `silent.test` goes to `s`.
fn timeout_config(g: &GrpcServer, silent: &SilentH2) -> String {
    format!(
        r#"{HEAD}[[route]]
host = "silent.test"
pool = "s"
[[route]]
pool = "g"
[pool.g]
policy = "round_robin"
protocol = "h2c"
read_timeout = "30s"
retries = 0
{}
[pool.s]
policy = "round_robin"
protocol = "h2c"
read_timeout = "30s"
retries = 0
[[pool.s.backend]]
id = "silent"
addr = "{}"
"#,
        grpc_backends("g", &[g]),
        silent.addr
    )
}

/// The access-log lines of pool `pool` (tether logs one per request on stderr).
fn access_lines(t: &Tether, pool: &str) -> Vec<String> {
    let tag = format!("pool=\"{pool}\"");
    t.stderr()
        .lines()
        .filter(|l| l.contains("access:") && l.contains(&tag))
        .map(str::to_owned)
        .collect()
}

#[test]
fn grpc_timeout_caps_the_pools_read_timeout() {
    let g = GrpcServer::start("g1");
    let silent = SilentH2::start(false);
    let t = Tether::start(&timeout_config(&g, &silent));
    // A call well within its deadline is not cut short.
    let v = call(t.listen(), &["--timeout", "5", "unary", "sleep:0.3"]);
    assert_eq!(s(&ok(&v)["body"]), "g1:sleep:0.3");
    assert_eq!(pool_5xx(&t, "g"), 0.0);

    // A client still listening at its deadline (an h2 client that does not reset the stream)
    // and a backend that never answers: tether gives up at the 0.5 s grpc-timeout, answers
    // trailers-only DEADLINE_EXCEEDED (the call's own deadline ran out: a retry could not help)
    // and accounts a 504 within 5 s — far below read_timeout (30 s), so only the grpc-timeout
    // cap explains it.
    let r = raw_grpc_call(
        t.listen(),
        "silent.test",
        "/test.Echo/Unary",
        "500m",
        Some(b"x"),
    )
    .unwrap_or_else(|e| panic!("raw call: {e}"));
    assert_eq!(silent.streams(), 1, "the call reached the silent backend");
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(
        r.grpc_status(),
        Some("4"),
        "{:?} {:?}",
        r.headers,
        r.trailers
    );
    assert!(r.body.is_empty());
    assert!(
        r.elapsed >= Duration::from_millis(400) && r.elapsed < Duration::from_secs(5),
        "answered after {:?}, expected about 0.5 s",
        r.elapsed
    );
    wait_for("the 504 accounted", Duration::from_secs(5), || {
        pool_5xx(&t, "s") == 1.0
    });
    wait_for("the 504 logged", Duration::from_secs(5), || {
        access_lines(&t, "s")
            .iter()
            .any(|l| l.contains("status=504"))
    });
    assert_eq!(
        t.metric_sum("tether_requests_total", &[("pool", "s"), ("code", "2xx")]),
        0.0
    );

    // grpcio clients past their deadline see DEADLINE_EXCEEDED — their library's own, or
    // tether's when its cap at the same instant wins the race — long before the backend's
    // answer (3 s) and read_timeout (30 s). (They reset the stream at the very
    // instant tether's cap fires, and the grpcio backend enforces the forwarded grpc-timeout
    // itself, so tether logs these as client_closed, not 504: no metric assertion here.)
    for authority in ["localhost", "silent.test"] {
        let start = Instant::now();
        let v = call(
            t.listen(),
            &[
                "--authority",
                authority,
                "--timeout",
                "0.5",
                "unary",
                "sleep:3",
            ],
        );
        failed(&v, 4, "DEADLINE_EXCEEDED");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the client's own deadline ended the call: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn grpc_timeout_also_ends_a_stream_idle_after_its_head() {
    let g = GrpcServer::start("g1");
    let silent = SilentH2::start(true);
    let t = Tether::start(&timeout_config(&g, &silent));
    // The backend's head arrives at once, then nothing: past the head the stream idles longer
    // than the 0.5 s cap, so tether ends it with grpc-status 14 trailers at about 0.5 s.
    let r = raw_grpc_call(
        t.listen(),
        "silent.test",
        "/test.Echo/Unary",
        "500m",
        Some(b"x"),
    )
    .unwrap_or_else(|e| panic!("raw call: {e}"));
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(
        r.headers.get("x-backend").and_then(|v| v.to_str().ok()),
        Some("silent"),
        "the backend's head was relayed: {:?}",
        r.headers
    );
    assert_eq!(
        r.grpc_status(),
        Some("14"),
        "{:?} {:?}",
        r.headers,
        r.trailers
    );
    assert!(
        r.elapsed >= Duration::from_millis(400) && r.elapsed < Duration::from_secs(5),
        "ended after {:?}, expected about 0.5 s",
        r.elapsed
    );
    // With a deadline to spare, a slow answer of the grpcio backend still arrives whole.
    let r = raw_grpc_call(
        t.listen(),
        "localhost",
        "/test.Echo/Unary",
        "20S",
        Some(b"sleep:1"),
    )
    .unwrap_or_else(|e| panic!("raw call: {e}"));
    assert_eq!(
        r.grpc_status(),
        Some("0"),
        "{:?} {:?}",
        r.headers,
        r.trailers
    );
    assert!(r.body.ends_with(b"g1:sleep:1"), "{:?}", r.body);
}

// ---------------------------------------------------------------------------------------------
// Affinity for gRPC clients: the signed cookie as metadata, and a JWT claim
// ---------------------------------------------------------------------------------------------

#[test]
fn a_grpc_client_carrying_the_affinity_cookie_stays_on_its_backend() {
    let servers: Vec<GrpcServer> = (1..=3)
        .map(|i| GrpcServer::start(&format!("c{i}")))
        .collect();
    let refs: Vec<&GrpcServer> = servers.iter().collect();
    let t = Tether::start(&format!(
        r#"{HEAD}[affinity]
secret = "grpc-test-secret-0123456789abcdefghij"
[[route]]
pool = "g"
[pool.g]
policy = "cookie"
protocol = "h2c"
{}"#,
        grpc_backends("g", &refs)
    ));
    // The first call gets the affinity cookie in its initial metadata (a Set-Cookie field).
    let first = call(t.listen(), &["unary", "hello"]);
    ok(&first);
    let home = s(&first["initial"]["x-backend"]).to_owned();
    let set = s(&first["initial"]["set-cookie"]).to_owned();
    assert!(set.starts_with("tether_g="), "{first}");
    let cookie = set.split(';').next().unwrap().to_owned();
    // Calls that carry it as `cookie` metadata all land on that backend (round robin would
    // spread ten calls over three), and get no new cookie; unary and streaming alike.
    let md = format!("cookie={cookie}");
    for v in client(
        t.listen(),
        &["--metadata", &md, "--count", "10", "unary", "again"],
    ) {
        ok(&v);
        assert_eq!(s(&v["initial"]["x-backend"]), home, "{v}");
        assert!(v["initial"].get("set-cookie").is_none(), "{v}");
    }
    let v = call(t.listen(), &["--metadata", &md, "server-stream", "3"]);
    ok(&v);
    let want: Vec<String> = (0..3).map(|i| format!("{home}:{i}")).collect();
    assert_eq!(v["messages"], serde_json::json!(want), "{v}");
    // Without the cookie, new sessions go round robin over all three.
    let homes: BTreeSet<String> = client(t.listen(), &["--count", "6", "unary", "x"])
        .iter()
        .map(|v| s(&ok(v)["initial"]["x-backend"]).to_owned())
        .collect();
    assert_eq!(homes.len(), 3, "new sessions spread: {homes:?}");
}

/// An HS256 token for `sub`, valid for an hour.
fn hs256(secret: &[u8], sub: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600}).to_string());
    let msg = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[test]
fn a_jwt_claim_pins_a_grpc_user_to_the_same_backend_on_two_instances() {
    let servers: Vec<GrpcServer> = (1..=3)
        .map(|i| GrpcServer::start(&format!("j{i}")))
        .collect();
    let refs: Vec<&GrpcServer> = servers.iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let key = "a-shared-secret-of-32-bytes-long";
    std::fs::write(&secret, format!("{key}\n")).unwrap();
    let config = format!(
        r#"{HEAD}[jwt.users]
secret_file = "{}"
algorithms = ["HS256"]
[[route]]
pool = "g"
jwt = "users"
[pool.g]
policy = "hash"
protocol = "h2c"
[pool.g.hash]
key = "jwt:sub"
{}"#,
        secret.display(),
        grpc_backends("g", &refs)
    );
    let a = Tether::start(&config);
    let b = Tether::start(&config);
    let mut used = BTreeSet::new();
    for i in 0..12 {
        let md = format!(
            "authorization=Bearer {}",
            hs256(key.as_bytes(), &format!("user-{i}"))
        );
        let on_a: BTreeSet<String> = client(
            a.listen(),
            &["--metadata", &md, "--count", "3", "unary", "x"],
        )
        .iter()
        .map(|v| s(&ok(v)["initial"]["x-backend"]).to_owned())
        .collect();
        let on_b = call(b.listen(), &["--metadata", &md, "bidi", "y"]);
        ok(&on_b);
        assert_eq!(on_a.len(), 1, "user-{i} stays on one backend: {on_a:?}");
        let home = on_a.into_iter().next().unwrap();
        let msg = format!("{home}:y");
        assert_eq!(
            on_b["messages"],
            serde_json::json!([msg]),
            "instances agree: {on_b}"
        );
        used.insert(home);
    }
    assert!(used.len() >= 2, "users spread over the backends: {used:?}");
}

#[test]
fn the_backend_is_told_what_is_left_of_the_deadline_after_a_breaker_queue() {
    let g = GrpcServer::start("g1");
    let t = Tether::start(&format!(
        r#"{HEAD}[[route]]
pool = "g"
[pool.g]
policy = "round_robin"
protocol = "h2c"
[pool.g.circuit_breaker]
max_in_flight = 1
max_queue = 10
queue_timeout = "5s"
{}"#,
        grpc_backends("g", &[&g])
    ));
    // Without a queue: the backend sees (about) the client's own deadline.
    let v = call(t.listen(), &["--timeout", "8", "unary", "x"]);
    let left: f64 = s(&ok(&v)["trailing"]["x-time-remaining"]).parse().unwrap();
    assert!(left > 6.0 && left <= 8.0, "{v}");
    // A call that waits ~1.5 s in the breaker's queue behind a slow one: the backend is told
    // what is left (grpc-timeout rewritten), not the 8 s the client asked for.
    let mut slow = spawn_client(t.listen(), &["unary", "sleep:1.5"]);
    wait_for("the slow call in flight", WAIT, || {
        in_flight(&t, "g", "g1") == Some(1.0)
    });
    let v = call(t.listen(), &["--timeout", "8", "unary", "x"]);
    let left: f64 = s(&ok(&v)["trailing"]["x-time-remaining"]).parse().unwrap();
    assert!(
        left > 0.0 && left < 7.0,
        "the queue's wait is taken off: {v}"
    );
    let done = slow.rest(Duration::from_secs(20));
    assert_eq!(done.len(), 1, "{done:?}");
}
