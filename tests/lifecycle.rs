//! Upgrade, shutdown and reload under load (issue 7.7): a binary upgrade (`tether run
//! --upgrade` + SIGQUIT) while clients keep sending — no refused connection, no failed request,
//! a 3-second request in flight completes, cookies issued before map to the same backends after;
//! SIGTERM lets in-flight requests finish; SIGHUP every 200 ms for 10 s, one config in three
//! invalid, loses no request.

mod common;

use common::raw::*;
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A backend that names itself and takes 3 s for `/slow`; `slow` counts the `/slow` requests
/// it has received (shared by the backends of a test, so it can wait until one is in flight).
fn named(name: &'static str, slow: &Arc<AtomicUsize>) -> RawBackend {
    let slow = slow.clone();
    RawBackend::start(move |head, r, w| {
        read_body(head, r);
        if head.starts_with("GET /slow ") {
            slow.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(3));
        }
        write!(
            w,
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        )
        .unwrap();
        true
    })
}

fn config(a: &RawBackend, b: &RawBackend, grace: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "{grace}"
[affinity]
secret = "lifecycle-test-secret-0123456789ab"
[[route]]
pool = "p"
[pool.p]
policy = "cookie"
[[pool.p.backend]]
id = "a"
addr = "{}"
[[pool.p.backend]]
id = "b"
addr = "{}"
"#,
        a.addr, b.addr
    )
}

/// Clients sending one request per connection until told to stop; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Waits (≤ 10 s) until a backend has received the `/slow` request: from then on it is in flight
/// in tether.
fn wait_until_in_flight(slow: &AtomicUsize) {
    wait_for(
        "a backend received the /slow request",
        Duration::from_secs(10),
        || slow.load(Ordering::SeqCst) >= 1,
    );
}

/// Whether the server side of the TCP connection from `client` to `server` (IPv4) has been
/// accepted by a process: in `/proc/net/tcp` a connection still waiting in the listen backlog
/// has no socket inode yet (0); `accept` gives it one.
fn accepted(server: SocketAddr, client: SocketAddr) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 only: {a}"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 9 && f[1] == local && f[2] == remote && f[9] != "0"
    })
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match try_get(&url, &[]) {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                            _ => failed.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// The new process of a binary upgrade, killed if the test ends early.
struct Upgraded(Child);

impl Drop for Upgraded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_binary_upgrade_under_load_loses_nothing() {
    let slow = Arc::new(AtomicUsize::new(0));
    let (a, b) = (named("a", &slow), named("b", &slow));
    // Pid file and upgrade socket in the test's own directory, where the test can watch them.
    let mut old = Tether::start(&config(&a, &b, "10s").replace(
        "[server]\n",
        "[server]\npid_file = \"{DIR}/tether.pid\"\nupgrade_sock = \"{DIR}/upgrade.sock\"\n",
    ));
    let (pid_file, upgrade_sock) = (old.dir().join("tether.pid"), old.dir().join("upgrade.sock"));
    let names = |pid: u32| {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim().parse::<u32>().ok() == Some(pid))
    };
    let old_pid = old.pid();
    wait_for(
        "the pid file names the old process",
        Duration::from_secs(10),
        || names(old_pid),
    );
    let first = get(&old.url("/"), &[]);
    let home = first.backend().unwrap().to_owned();
    let jar = format!("tether_p={}", first.set_cookie("tether_p").unwrap());
    let load = Load::start(old.url("/"), 3);
    // A request that is still in flight when the old process hands over.
    let slow_url = old.url("/slow");
    let slow_request = std::thread::spawn(move || try_get(&slow_url, &[]));
    wait_until_in_flight(&slow);

    assert!(
        !upgrade_sock.exists(),
        "no upgrade socket before the new process"
    );
    let log = std::fs::File::create(old.dir().join("upgraded.log")).unwrap();
    let new = Upgraded(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args([
                "run",
                "-c",
                &old.config_path().display().to_string(),
                "--upgrade",
            ])
            .current_dir(old.dir())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The new process waits on the upgrade socket; the old one hands its listeners over on
    // SIGQUIT. The socket file appears when the new one binds it, just before it listens (the
    // old one retries a refused connection).
    wait_for(
        "the new process binds the upgrade socket",
        Duration::from_secs(15),
        || upgrade_sock.exists(),
    );
    assert!(
        !slow_request.is_finished(),
        "the /slow request is still in flight when the old process is told to hand over"
    );
    old.signal("QUIT");
    let exited = old.wait_exit(Duration::from_secs(15));
    assert!(
        exited.is_some(),
        "the old process exits after the hand-over"
    );
    let slow_request = slow_request.join().unwrap();
    assert_eq!(
        slow_request.map(|r| r.status).ok(),
        Some(200),
        "the in-flight request completed"
    );
    // The new process serves: the pid file names it, and the session stays home.
    let new_pid = new.0.id();
    wait_for(
        "the pid file names the new process",
        Duration::from_secs(10),
        || names(new_pid),
    );
    let after = get(&old.url("/"), &[("cookie", &jar)]);
    assert_eq!(after.status, 200);
    assert_eq!(
        after.backend(),
        Some(home.as_str()),
        "cookies map to the same backends"
    );
    // The load goes on against the new process for a while before it stops.
    let served = load.ok.load(Ordering::SeqCst);
    wait_for(
        "20 more requests of the load served by the new process",
        Duration::from_secs(10),
        || load.ok.load(Ordering::SeqCst) >= served + 20,
    );
    let (ok, failed) = load.finish();
    assert_eq!(
        failed, 0,
        "no refused connection, no failed request ({ok} ok)"
    );
    assert!(ok > 50, "the load ran ({ok} requests)");
    drop(new);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let slow = Arc::new(AtomicUsize::new(0));
    let (a, b) = (named("a", &slow), named("b", &slow));
    let mut t = Tether::start(&config(&a, &b, "10s"));
    let url = t.url("/slow");
    let slow_request = std::thread::spawn(move || try_get(&url, &[]));
    wait_until_in_flight(&slow);
    assert!(
        !slow_request.is_finished(),
        "the /slow request is in flight at SIGTERM"
    );
    let start = Instant::now();
    t.signal("TERM");
    let r = slow_request.join().unwrap();
    assert_eq!(
        r.map(|r| r.status).ok(),
        Some(200),
        "finished within grace_period"
    );
    let status = t.wait_exit(Duration::from_secs(10)).expect("tether exits");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "exits once nothing is in flight, not at the end of grace_period ({:?})",
        start.elapsed()
    );
}

/// A client that connected just before SIGTERM and sends its request only after the listener
/// closed is served (and the process still ends without waiting out its grace period); an
/// idle keep-alive connection is closed.
#[test]
fn a_connection_accepted_before_sigterm_is_served_and_an_idle_one_closed() {
    use std::io::Read;
    let slow = Arc::new(AtomicUsize::new(0));
    let (a, b) = (named("a", &slow), named("b", &slow));
    let mut t = Tether::start(&config(&a, &b, "20s"));
    let connect = || {
        let s = std::net::TcpStream::connect(t.listen()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // An idle keep-alive connection: one request answered, then nothing.
    // The whole answer is read (head and body may arrive in separate reads), so the read
    // after SIGTERM sees only what the shutdown does to the connection.
    let mut idle = connect();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut idle_reader = std::io::BufReader::new(idle.try_clone().unwrap());
    let (head, body) = read_response(&mut idle_reader, false);
    assert_eq!(status(&head), 200, "idle connection's first answer: {head}");
    assert!(!body.is_empty(), "idle connection's first body");
    let mut buf = [0u8; 4096];
    // A new connection that has not sent anything yet, once tether has accepted it.
    let mut fresh = connect();
    let client = fresh.local_addr().unwrap();
    wait_for(
        "tether accepts the fresh connection",
        Duration::from_secs(10),
        || accepted(t.listen(), client),
    );
    let start = Instant::now();
    t.signal("TERM");
    // The listener closes; then the request arrives.
    let closed = eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(t.listen()).is_err()
    });
    assert!(closed, "the listener closes on SIGTERM");
    fresh
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = fresh.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the connection accepted before SIGTERM is answered: {answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "and told that the connection ends: {answer:?}"
    );
    // The idle keep-alive connection was closed by the shutdown.
    assert_eq!(
        idle_reader.read(&mut buf).ok(),
        Some(0),
        "the idle connection is closed"
    );
    let status = t.wait_exit(Duration::from_secs(15)).expect("tether exits");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "exits once nothing is in progress, not at the end of grace_period ({:?})",
        start.elapsed()
    );
}

#[test]
fn sighup_every_200ms_with_one_config_in_three_invalid_loses_no_request() {
    let slow = Arc::new(AtomicUsize::new(0));
    let (a, b) = (named("a", &slow), named("b", &slow));
    let good = config(&a, &b, "1s");
    let t = Tether::start(&good);
    let fill = |c: &str| {
        c.replace("{LISTEN}", &t.listen().to_string())
            .replace("{ADMIN}", &t.admin().to_string())
    };
    let reweighted = fill(&good.replace("id = \"b\"\n", "id = \"b\"\nweight = 3\n"));
    let invalid = fill(&good.replace("policy = \"cookie\"", "policy = \"sticky-ish\""));
    let good = fill(&good);
    let load = Load::start(t.url("/"), 3);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let text = match i % 3 {
            0 => &reweighted,
            1 => &invalid,
            _ => &good,
        };
        std::fs::write(t.config_path(), text).unwrap();
        t.sighup();
        std::thread::sleep(Duration::from_millis(200));
        i += 1;
    }
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "no failed request across {i} reloads ({ok} ok)");
    assert!(t.metric("tether_config_reloads_total", &[("result", "failure")]) >= Some(1.0));
    assert!(t.metric("tether_config_reloads_total", &[("result", "success")]) >= Some(1.0));
}
