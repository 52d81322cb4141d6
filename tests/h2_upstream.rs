//! HTTP/2 to backends (DESIGN.md §21) from the backend's side: an in-test cleartext HTTP/2
//! backend built on the `h2` crate ([`H2Backend`]) that counts what it sees (connections,
//! streams, streams at once per connection, streams after its GOAWAY), refuses streams on
//! demand and drains connections with a graceful GOAWAY. HTTP/1.1 clients on an `h2c` pool (the
//! translation both ways: `:authority`, de-chunked bodies, `TE: trailers`, `100 Continue`,
//! trailers in the last chunk, keep-alive, HTTP/1.0), streams multiplexed within the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, GOAWAY draining, refused streams sent again, and a backend
//! killed while a request waits.
//!
//! Owns: what a backend and a client see of tether's HTTP/2 client connections. Must not touch:
//! the network beyond loopback. Every backend a test starts runs on its own thread and runtime,
//! stopped (listener and connections) when its handle drops, even on panic.

mod common;

use common::raw::{header_of, read_head};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The HTTP/2 backend
// ---------------------------------------------------------------------------------------------

/// How an [`H2Backend`] behaves.
#[derive(Clone)]
struct Opts {
    /// Returned in `x-backend` and as the body of a request without one.
    name: String,
    /// Its `SETTINGS_MAX_CONCURRENT_STREAMS` (`None`: the `h2` crate's default, no limit).
    max_concurrent_streams: Option<u32>,
    /// Every response waits this long (a request's `x-delay-ms` overrides it).
    delay: Duration,
    /// A graceful GOAWAY on a connection once it has accepted this many streams.
    goaway_after: Option<usize>,
}

impl Opts {
    fn named(name: &str) -> Opts {
        Opts {
            name: name.to_owned(),
            max_concurrent_streams: None,
            delay: Duration::ZERO,
            goaway_after: None,
        }
    }
}

/// What an [`H2Backend`] counts, and its run-time knobs.
#[derive(Default)]
struct Stats {
    /// TCP connections accepted.
    conns: AtomicUsize,
    /// Streams accepted and answered (refused ones not included).
    streams: AtomicUsize,
    /// Streams reset with `REFUSED_STREAM`.
    refused: AtomicUsize,
    /// Streams being handled now (all connections).
    in_flight: AtomicUsize,
    /// The most streams handled at once on any one connection.
    max_concurrent: AtomicUsize,
    /// The most streams any one connection accepted.
    max_per_conn: AtomicUsize,
    /// Streams accepted on a connection after its graceful GOAWAY was started.
    after_goaway: AtomicUsize,
    /// Knob: refuse the next this many streams (any connection).
    refuse_next_streams: AtomicUsize,
    /// Knob: refuse the first stream of each of the next this many connections.
    refuse_first_of_next_conns: AtomicUsize,
}

/// Takes one from `n` if it is above zero; whether it did.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// A cleartext HTTP/2 (prior knowledge) backend on 127.0.0.1, on its own thread and runtime.
///
/// Every stream is answered 200 with `x-backend: NAME`, the request echoed as `x-seen-method`,
/// `x-seen-authority` (the `:authority`), `x-seen-te`, `x-seen-content-length` (each only when
/// the request had one), `x-seen-body-len`, and the request body as the body (`NAME` when
/// empty); `content-length` unless the request asks `x-no-length: 1` or `x-want-trailers: 1`
/// (which also adds the trailer `x-trailer: done`). `x-delay-ms` delays the answer.
struct H2Backend {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl H2Backend {
    fn start(name: &str) -> H2Backend {
        H2Backend::with(Opts::named(name))
    }

    fn with(opts: Opts) -> H2Backend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind h2 backend");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(Stats::default());
        let counted = stats.clone();
        let opts = Arc::new(opts);
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
                                let _ = tcp.set_nodelay(true);
                                counted.conns.fetch_add(1, Ordering::SeqCst);
                                conns.spawn(serve_conn(tcp, opts.clone(), counted.clone()));
                            }
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
                // The listener first, then every connection (and its streams' tasks).
                drop(listener);
                conns.shutdown().await;
            });
        });
        H2Backend {
            addr,
            stats,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn conns(&self) -> usize {
        self.stats.conns.load(Ordering::SeqCst)
    }

    fn streams(&self) -> usize {
        self.stats.streams.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.stats.refused.load(Ordering::SeqCst)
    }

    fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    fn max_concurrent(&self) -> usize {
        self.stats.max_concurrent.load(Ordering::SeqCst)
    }

    fn max_per_conn(&self) -> usize {
        self.stats.max_per_conn.load(Ordering::SeqCst)
    }

    fn after_goaway(&self) -> usize {
        self.stats.after_goaway.load(Ordering::SeqCst)
    }

    fn refuse_next_streams(&self, n: usize) {
        self.stats.refuse_next_streams.store(n, Ordering::SeqCst);
    }

    fn refuse_first_of_next_conns(&self, n: usize) {
        self.stats
            .refuse_first_of_next_conns
            .store(n, Ordering::SeqCst);
    }

    /// Closes the listener and drops every connection (their sockets close); whether the
    /// backend's thread ended within 5 s. When this returns true, new connections are refused.
    fn stop(&mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(t) = self.thread.take() else {
            return true;
        };
        if !eventually(Duration::from_secs(5), || t.is_finished()) {
            return false;
        }
        let _ = t.join();
        true
    }

    fn summary(&self) -> String {
        format!(
            "conns={} streams={} refused={} max_concurrent={} max_per_conn={} after_goaway={}",
            self.conns(),
            self.streams(),
            self.refused(),
            self.max_concurrent(),
            self.max_per_conn(),
            self.after_goaway()
        )
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection: accepts streams (refusing those the knobs say), hands each to its own task
/// (aborted with the connection), and starts a graceful GOAWAY after `goaway_after` streams.
async fn serve_conn(tcp: tokio::net::TcpStream, opts: Arc<Opts>, stats: Arc<Stats>) {
    let mut builder = ::h2::server::Builder::new();
    if let Some(m) = opts.max_concurrent_streams {
        builder.max_concurrent_streams(m);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
        return;
    };
    let mut refuse_first = take_one(&stats.refuse_first_of_next_conns);
    let active = Arc::new(AtomicUsize::new(0));
    let mut accepted = 0usize;
    let mut draining = false;
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            next = conn.accept() => {
                let Some(Ok((req, mut respond))) = next else { break };
                if std::mem::take(&mut refuse_first) || take_one(&stats.refuse_next_streams) {
                    respond.send_reset(::h2::Reason::REFUSED_STREAM);
                    stats.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                stats.streams.fetch_add(1, Ordering::SeqCst);
                if draining {
                    stats.after_goaway.fetch_add(1, Ordering::SeqCst);
                }
                accepted += 1;
                stats.max_per_conn.fetch_max(accepted, Ordering::SeqCst);
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                stats.max_concurrent.fetch_max(now, Ordering::SeqCst);
                stats.in_flight.fetch_add(1, Ordering::SeqCst);
                let guard = Active {
                    conn: active.clone(),
                    stats: stats.clone(),
                    done: false,
                };
                streams.spawn(handle(req, respond, opts.clone(), guard));
                if opts.goaway_after.is_some_and(|n| accepted >= n) && !draining {
                    draining = true;
                    conn.graceful_shutdown();
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// A stream being handled: counted until [`Active::end`] (just before its last frame is
/// queued) or its task ends.
struct Active {
    conn: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    done: bool,
}

impl Active {
    fn end(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.conn.fetch_sub(1, Ordering::SeqCst);
            self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.end();
    }
}

async fn handle(
    req: http::Request<::h2::RecvStream>,
    mut respond: ::h2::server::SendResponse<Bytes>,
    opts: Arc<Opts>,
    mut active: Active,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let h = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delay = h("x-delay-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(opts.delay, Duration::from_millis);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let want_trailers = h("x-want-trailers").as_deref() == Some("1");
    let no_length = want_trailers || h("x-no-length").as_deref() == Some("1");
    let out = if data.is_empty() {
        Bytes::from(opts.name.clone())
    } else {
        Bytes::from(data.clone())
    };
    let mut head = http::Response::builder()
        .status(200)
        .header("x-backend", opts.name.as_str())
        .header("x-seen-method", parts.method.as_str())
        .header(
            "x-seen-authority",
            parts.uri.authority().map_or("", |a| a.as_str()),
        )
        .header("x-seen-body-len", data.len());
    for (seen, name) in [
        ("x-seen-te", "te"),
        ("x-seen-content-length", "content-length"),
        ("x-seen-expect", "expect"),
    ] {
        if let Some(v) = h(name) {
            head = head.header(seen, v);
        }
    }
    if !no_length {
        head = head.header("content-length", out.len());
    }
    let head = head.body(()).expect("response head");
    if parts.method == http::Method::HEAD {
        active.end();
        let _ = respond.send_response(head, true);
        return;
    }
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    active.end();
    if send.send_data(out, !want_trailers).is_err() {
        return;
    }
    if want_trailers {
        let mut t = http::HeaderMap::new();
        t.insert("x-trailer", http::HeaderValue::from_static("done"));
        let _ = send.send_trailers(t);
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and config
// ---------------------------------------------------------------------------------------------

fn config(backends: &[(&str, SocketAddr)], extra_pool: &str) -> String {
    let mut c = String::from(
        r#"
[server]
listen = ["{LISTEN}"]
admin = "{ADMIN}"
grace_period = "1s"
h2c = true
threads = 2

[[route]]
path_prefix = "/"
pool = "p"

[pool.p]
policy = "round_robin"
protocol = "h2c"
"#,
    );
    c.push_str(extra_pool);
    for (id, addr) in backends {
        c.push_str(&format!(
            "\n[[pool.p.backend]]\nid = \"{id}\"\naddr = \"{addr}\"\n"
        ));
    }
    c
}

fn start_tether(config: &str) -> Tether {
    Tether::start_with(config, &[], &[("RUST_LOG", "info,tether=debug")])
}

/// Tether's log lines that mention `word`, for failure messages and the report.
fn log_lines(t: &Tether, words: &[&str]) -> String {
    t.stderr()
        .lines()
        .filter(|l| words.iter().any(|w| l.contains(w)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A raw connection to tether's listener, with bounded reads.
fn raw(t: &Tether) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(t.listen()).expect("connect to tether");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// One HTTP/1.x response as read off the wire.
#[derive(Debug)]
struct RawResp {
    head: String,
    status: u16,
    body: Vec<u8>,
    /// Trailer fields of a chunked body, as `name: value` lines.
    trailers: Vec<String>,
    chunked: bool,
    /// The body ran to the connection's close (neither length nor chunks).
    close_delimited: bool,
}

impl RawResp {
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }

    fn body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("read a line");
    l
}

/// Reads one response: by `content-length`, chunked (trailers kept), or to the close.
fn read_resp(r: &mut BufReader<TcpStream>, head_request: bool) -> RawResp {
    let head = read_head(r).expect("a response head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let mut resp = RawResp {
        status,
        body: Vec::new(),
        trailers: Vec::new(),
        chunked: false,
        close_delimited: false,
        head,
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return resp;
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.chunked = true;
        loop {
            let size = line(r);
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
            if n == 0 {
                loop {
                    let l = line(r);
                    assert!(!l.is_empty(), "the connection closed inside the trailers");
                    if l == "\r\n" {
                        break;
                    }
                    resp.trailers.push(l.trim_end().to_owned());
                }
                return resp;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).expect("a chunk");
            assert_eq!(&chunk[n..], b"\r\n", "chunk not followed by CRLF");
            resp.body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Some(n) = resp.header("content-length") {
        let mut body = vec![0u8; n.parse().expect("numeric content-length")];
        r.read_exact(&mut body).expect("the body");
        resp.body = body;
        return resp;
    }
    resp.close_delimited = true;
    r.read_to_end(&mut resp.body)
        .expect("a body up to the close");
    resp
}

/// Whether the peer closed the connection (EOF within the read timeout).
fn closed_by_peer(r: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

/// `n` requests (`PATH/i`) on one cleartext HTTP/2 connection to `addr`, all at once; each answer (or why
/// not) in order, each within 15 s.
fn h2_concurrent(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<Result<Resp, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let authority = authority.to_owned();
    let path = path.to_owned();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let (send, conn) = ::h2::client::handshake(tcp).await.expect("h2c handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut tasks = Vec::new();
        for i in 0..n {
            let send = send.clone();
            let mut b = http::Request::builder()
                .method("GET")
                .uri(format!("http://{authority}{path}/{i}"));
            for (n, v) in &headers {
                b = b.header(n.as_str(), v.as_str());
            }
            let req = b.body(()).expect("request");
            tasks.push(tokio::spawn(async move {
                let one = async move {
                    let mut send = send.ready().await.map_err(|e| e.to_string())?;
                    let (resp, _) = send.send_request(req, true).map_err(|e| e.to_string())?;
                    let resp = resp.await.map_err(|e| e.to_string())?;
                    let status = resp.status().as_u16();
                    let headers = resp
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    let mut body = resp.into_body();
                    let mut out = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.map_err(|e| e.to_string())?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                        out.extend_from_slice(&chunk);
                    }
                    Ok(Resp {
                        status,
                        headers,
                        body: String::from_utf8_lossy(&out).into_owned(),
                    })
                };
                tokio::time::timeout(Duration::from_secs(15), one)
                    .await
                    .map_err(|_| "timed out".to_owned())?
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        driver.abort();
        out
    })
}

/// `n` HTTP/1.1 GETs at once, one thread (and connection) each; every answer in order.
fn h1_concurrent(t: &Tether, n: usize, headers: &[(&str, &str)]) -> Vec<Result<Resp, String>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let url = t.url(&format!("/par/{i}"));
                s.spawn(move || try_request("GET", &url, headers, None))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    })
}

/// `n` HTTP/1.1 GETs, one thread (and connection) each, the i-th started `i * gap` after the
/// first; every answer in order.
fn h1_staggered(
    t: &Tether,
    n: usize,
    gap: Duration,
    headers: &[(&str, &str)],
) -> Vec<Result<Resp, String>> {
    std::thread::scope(|s| {
        let start = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let url = t.url(&format!("/stagger/{i}"));
                let at = start + gap * i as u32;
                s.spawn(move || {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    try_request("GET", &url, headers, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    })
}

fn failures(rs: &[Result<Resp, String>]) -> Vec<String> {
    rs.iter()
        .filter_map(|r| match r {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(format!("status {} body {:?}", r.status, r.body)),
            Err(e) => Some(e.clone()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. HTTP/1.1 clients on an h2c pool
// ---------------------------------------------------------------------------------------------

#[test]
fn http1_clients_are_translated_to_and_from_an_h2c_backend() {
    let b = H2Backend::start("b1");
    let t = start_tether(&config(&[("b1", b.addr())], ""));

    // GET: status, x-backend, body; :authority is the client's Host.
    let r = get(&t.url("/get?q=1"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("b1"));
    assert_eq!(r.body, "b1");
    assert_eq!(r.header("x-seen-method"), Some("GET"));
    assert_eq!(
        r.header("x-seen-authority"),
        Some(t.listen().to_string().as_str()),
        "the client's Host becomes :authority"
    );

    // POST with Content-Length.
    let r = post(&t.url("/post"), &[], "hello h2");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello h2");
    assert_eq!(r.header("x-seen-method"), Some("POST"));
    assert_eq!(r.header("x-seen-body-len"), Some("8"));
    assert_eq!(r.header("x-seen-content-length"), Some("8"));

    // A chunked body arrives de-chunked, without a content-length; a custom Host is the
    // :authority; `TE: trailers` is kept.
    let (mut s, mut rd) = raw(&t);
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: app.test:8080\r\nTE: trailers\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let r = read_resp(&mut rd, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body(), "hello world");
    assert_eq!(r.header("x-seen-body-len").as_deref(), Some("11"));
    assert_eq!(r.header("x-seen-content-length"), None, "{}", r.head);
    assert_eq!(
        r.header("x-seen-authority").as_deref(),
        Some("app.test:8080")
    );
    assert_eq!(r.header("x-seen-te").as_deref(), Some("trailers"));
    drop((s, rd));

    // HEAD: the head only.
    let r = try_request("HEAD", &t.url("/head"), &[], None).expect("HEAD");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("b1"));
    assert_eq!(r.header("x-seen-method"), Some("HEAD"));
    assert_eq!(r.body, "");

    // Expect: 100-continue: tether invites the body itself, then the answer echoes it.
    let (mut s, mut rd) = raw(&t);
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_head(&mut rd).expect("an interim response before the body is sent");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim:?}"
    );
    s.write_all(b"12345").unwrap();
    let r = read_resp(&mut rd, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body(), "12345");
    assert_eq!(r.header("x-seen-body-len").as_deref(), Some("5"));
    assert_eq!(r.header("x-seen-expect"), None, "Expect is per hop");
    drop((s, rd));

    // Trailers reach an HTTP/1.1 client in the last chunk.
    let (mut s, mut rd) = raw(&t);
    s.write_all(b"GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nx-want-trailers: 1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut rd, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.chunked, "no content-length: chunked\n{}", r.head);
    assert_eq!(r.body(), "b1");
    assert_eq!(r.trailers, vec!["x-trailer: done".to_owned()], "{r:?}");
    drop((s, rd));

    // Keep-alive: five requests of every kind on one connection.
    let (mut s, mut rd) = raw(&t);
    let requests: [(&[u8], bool, &str); 5] = [
        (b"GET /ka/1 HTTP/1.1\r\nHost: h\r\n\r\n", false, "b1"),
        (
            b"POST /ka/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            false,
            "abc",
        ),
        (
            b"GET /ka/3 HTTP/1.1\r\nHost: h\r\nx-want-trailers: 1\r\n\r\n",
            false,
            "b1",
        ),
        (b"HEAD /ka/4 HTTP/1.1\r\nHost: h\r\n\r\n", true, ""),
        (
            b"POST /ka/5 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n",
            false,
            "xy",
        ),
    ];
    for (i, (req, head, body)) in requests.iter().enumerate() {
        s.write_all(req).unwrap();
        let r = read_resp(&mut rd, *head);
        assert_eq!(r.status, 200, "request {}: {r:?}", i + 1);
        assert_eq!(r.body(), *body, "request {}", i + 1);
        assert_eq!(
            r.header("connection"),
            None,
            "request {}: {}",
            i + 1,
            r.head
        );
    }
    drop((s, rd));

    // HTTP/1.0: a body without a length is delimited by the close; one with a length by it.
    let (mut s, mut rd) = raw(&t);
    s.write_all(b"GET /ten HTTP/1.0\r\nHost: h\r\nx-no-length: 1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut rd, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.close_delimited && !r.chunked, "{}", r.head);
    assert_eq!(r.body(), "b1");
    drop((s, rd));
    let (mut s, mut rd) = raw(&t);
    s.write_all(b"GET /ten HTTP/1.0\r\nHost: h\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut rd, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length").as_deref(), Some("2"));
    assert_eq!(r.body(), "b1");
    assert!(
        closed_by_peer(&mut rd),
        "an HTTP/1.0 exchange ends the connection"
    );
    drop((s, rd));

    // Every request above was one stream, none refused.
    assert_eq!(b.streams(), 13, "{}", b.summary());
}

// ---------------------------------------------------------------------------------------------
// 2. Streams within SETTINGS_MAX_CONCURRENT_STREAMS
// ---------------------------------------------------------------------------------------------

#[test]
fn streams_are_multiplexed_within_the_backends_max_concurrent_streams() {
    let mut opts = Opts::named("b1");
    opts.max_concurrent_streams = Some(2);
    opts.delay = Duration::from_millis(300);
    let b = H2Backend::with(opts.clone());
    opts.name = "burst".to_owned();
    let burst = H2Backend::with(opts);
    // Pool `q` (path `/burst`) has a backend of its own, for a burst on cold threads.
    let t = start_tether(&format!(
        "{}\n[[route]]\npath_prefix = \"/burst\"\npool = \"q\"\n[pool.q]\n\
         policy = \"round_robin\"\nprotocol = \"h2c\"\n[[pool.q.backend]]\nid = \"burst\"\n\
         addr = \"{}\"\n",
        config(&[("b1", b.addr())], ""),
        burst.addr()
    ));

    // Ten streams on one HTTP/2 connection to tether: one tether thread carries them all.
    let start = Instant::now();
    let rs = h2_concurrent(t.listen(), "multi.test", "/multi", 10, &[]);
    let took = start.elapsed();
    assert_eq!(failures(&rs), Vec::<String>::new(), "{}", b.summary());
    assert!(rs.iter().all(|r| r.as_ref().unwrap().body == "b1"));
    assert_eq!(b.streams(), 10, "{}", b.summary());
    assert!(b.max_concurrent() <= 2, "{}", b.summary());
    let conns = b.conns();
    assert!(
        (2..=16).contains(&conns),
        "10 streams at once, 2 per connection: more than one connection, at most 16 \
         ({}; took {took:?})\n{}",
        b.summary(),
        log_lines(&t, &["upstream_h2", "HTTP/2"])
    );
    eprintln!("h2 client: {} in {took:?}", b.summary());

    // Ten HTTP/1.1 clients at once (spread over tether's threads).
    let start = Instant::now();
    let rs = h1_concurrent(&t, 10, &[]);
    let took = start.elapsed();
    assert_eq!(failures(&rs), Vec::<String>::new(), "{}", b.summary());
    assert_eq!(b.streams(), 20, "{}", b.summary());
    assert!(b.max_concurrent() <= 2, "{}", b.summary());
    eprintln!("h1 clients: {} in {took:?}", b.summary());

    // Forty streams at once to a backend no thread has a connection to yet: at most 16
    // connections per thread (2 threads: 32), so streams must share connections.
    let start = Instant::now();
    let rs = h2_concurrent(t.listen(), "burst.test", "/burst", 40, &[]);
    let took = start.elapsed();
    assert_eq!(failures(&rs), Vec::<String>::new(), "{}", burst.summary());
    assert!(rs.iter().all(|r| r.as_ref().unwrap().body == "burst"));
    assert_eq!(burst.streams(), 40, "{}", burst.summary());
    assert!(burst.max_concurrent() <= 2, "{}", burst.summary());
    assert!(
        burst.conns() <= 32,
        "at most 16 connections per backend and thread: {} (took {took:?})",
        burst.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. GOAWAY drains a connection
// ---------------------------------------------------------------------------------------------

#[test]
fn a_graceful_goaway_drains_the_connection_and_nothing_is_lost_or_sent_twice() {
    let mut opts = Opts::named("b1");
    opts.goaway_after = Some(3);
    let b = H2Backend::with(opts);
    let t = start_tether(&config(&[("b1", b.addr())], ""));

    let mut failed = Vec::new();
    for i in 0..30 {
        match try_get(&t.url(&format!("/seq/{i}")), &[]) {
            Ok(r) if r.status == 200 && r.backend() == Some("b1") => {}
            Ok(r) => failed.push(format!("seq {i}: status {} {:?}", r.status, r.body)),
            Err(e) => failed.push(format!("seq {i}: {e}")),
        }
    }
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "{}\n{}",
        b.summary(),
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
    );
    assert_eq!(b.streams(), 30, "each request once: {}", b.summary());
    assert!(b.conns() >= 10, "3 streams per connection: {}", b.summary());
    let seq_after_goaway = b.after_goaway();
    eprintln!("sequential: {}", b.summary());

    for batch in 0..3 {
        let rs = h1_concurrent(&t, 10, &[]);
        let f = failures(&rs);
        assert!(
            f.is_empty(),
            "batch {batch}: {f:?}\n{}\n{}",
            b.summary(),
            log_lines(&t, &["status=5", "HTTP/2", "upstream_h2"])
        );
    }
    assert_eq!(b.streams(), 60, "each request once: {}", b.summary());
    eprintln!("concurrent: {}", b.summary());

    // Overlapping requests that the backend holds a while: new streams keep coming while a
    // connection's first ones (which drew its GOAWAY) are still in flight.
    let rs = h1_staggered(&t, 30, Duration::from_millis(10), &[("x-delay-ms", "100")]);
    let f = failures(&rs);
    assert!(
        f.is_empty(),
        "staggered: {f:?}\n{}\n{}",
        b.summary(),
        log_lines(&t, &["status=5", "HTTP/2", "upstream_h2"])
    );
    assert_eq!(b.streams(), 90, "each request once: {}", b.summary());
    eprintln!("staggered: {}", b.summary());
    assert_eq!(
        seq_after_goaway,
        0,
        "no stream opened on a connection after its GOAWAY in the sequential phase: {}",
        b.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Refused streams are sent again
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stream_refused_unprocessed_is_sent_again() {
    let b = H2Backend::start("b1");
    let t = start_tether(&config(&[("b1", b.addr())], "retries = 0\n"));

    // The first stream of the first connection is refused: the request goes again (without the
    // resend: a 502), on a connection with room — the same one, which is still live: a
    // REFUSED_STREAM is about one stream, unlike a GOAWAY, and a resend never opens a
    // connection past the backend's cap.
    b.refuse_first_of_next_conns(1);
    let r = get(&t.url("/refused"), &[]);
    assert_eq!(
        r.status,
        200,
        "{r:?} {}\n{}",
        b.summary(),
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
    );
    assert_eq!(r.body, "b1");
    assert_eq!(b.refused(), 1, "{}", b.summary());
    assert_eq!(b.streams(), 1, "{}", b.summary());
    assert_eq!(
        b.conns(),
        1,
        "the resend on the live connection: {}",
        b.summary()
    );

    // A GET over HTTP/2 from the client, refused once.
    b.refuse_next_streams(1);
    let rs = h2_concurrent(t.listen(), "refused.test", "/refused-h2", 1, &[]);
    assert_eq!(
        failures(&rs),
        Vec::<String>::new(),
        "{}\n{}",
        b.summary(),
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
    );
    assert_eq!(b.refused(), 2, "{}", b.summary());
    assert_eq!(b.streams(), 2, "{}", b.summary());

    // A POST with a small body, refused once: never processed, so sent again too.
    b.refuse_next_streams(1);
    let r = post(&t.url("/refused-post"), &[], "small body");
    assert_eq!(
        r.status,
        200,
        "{r:?} {}\n{}",
        b.summary(),
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
    );
    assert_eq!(r.body, "small body");
    assert_eq!(b.refused(), 3, "{}", b.summary());
    assert_eq!(b.streams(), 3, "{}", b.summary());
    assert_eq!(b.conns(), 1, "{}", b.summary());
}

// ---------------------------------------------------------------------------------------------
// 5. A backend killed while a request waits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_backend_killed_while_a_request_waits_is_a_502_and_the_next_request_fails_over() {
    let mut b1 = H2Backend::start("b1");
    let mut b2 = H2Backend::start("b2");
    let t = start_tether(&config(&[("b1", b1.addr()), ("b2", b2.addr())], ""));
    // Both backends have a connection from tether's threads before the kill.
    for _ in 0..4 {
        assert_eq!(get(&t.url("/warm"), &[]).status, 200);
    }

    let url = t.url("/slow");
    let waiting = std::thread::spawn(move || {
        let start = Instant::now();
        let r = try_request("GET", &url, &[("x-delay-ms", "20000")], None);
        (r, start.elapsed())
    });
    let mut which = None;
    wait_for("the slow request at a backend", WAIT, || {
        which = if b1.in_flight() == 1 {
            Some(1)
        } else if b2.in_flight() == 1 {
            Some(2)
        } else {
            None
        };
        which.is_some()
    });
    let (dead, alive) = if which == Some(1) {
        (&mut b1, &b2)
    } else {
        (&mut b2, &b1)
    };
    let alive_name = if which == Some(1) { "b2" } else { "b1" };
    assert!(dead.stop(), "the backend did not stop within 5 s");
    let joined = eventually(WAIT, || waiting.is_finished());
    assert!(joined, "the waiting client got no answer within {WAIT:?}");
    let (r, took) = waiting.join().expect("client thread");
    let r = r.unwrap_or_else(|e| panic!("the waiting client: {e}"));
    assert_eq!(
        r.status,
        502,
        "{r:?} after {took:?}\n{}",
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // The next requests all reach the live backend (a pick of the dead one fails over).
    let before = alive.streams();
    for i in 0..4 {
        let r = get(&t.url(&format!("/after/{i}")), &[]);
        assert_eq!(
            (r.status, r.backend()),
            (200, Some(alive_name)),
            "request {i} after the kill: {r:?}\n{}",
            log_lines(&t, &["access:", "HTTP/2", "upstream_h2"])
        );
    }
    assert_eq!(alive.streams(), before + 4);
    eprintln!(
        "{}",
        log_lines(&t, &["access:", "HTTP/2", "upstream_h2", "connect"])
    );
}
