//! Black-box test harness for tether's integration tests.
//!
//! Owns: running the real `tether` binary (`env!("CARGO_BIN_EXE_tether")`) on a config written to
//! a temporary directory ([`Tether`], [`RawTether`]), in-process HTTP/1.1 backends ([`Backend`]),
//! a plain HTTP client ([`get`], [`post`], [`try_get`], [`try_request`]), bounded polling
//! ([`eventually`], [`wait_for`]) and a Prometheus text-format parser ([`parse_prometheus`]).
//! It must not touch the library's internals: everything goes through sockets, files, signals and
//! the process's exit status, exactly as an operator would see it.
//!
//! Rules it keeps, so tests built on it stay deterministic and parallel-safe (STYLE.md 8, 9):
//! - all traffic is on 127.0.0.1 and every port comes from the kernel (`:0`), never a fixed one;
//! - every wait is a bounded poll of an observable condition, never a guessed sleep;
//! - every process and backend a test starts is stopped when its handle drops, even on panic
//!   (tether: SIGTERM, up to 5 s, then SIGKILL).
//!
//! Each `tests/*.rs` file does `mod common;` and uses a subset, hence `allow(dead_code)`.
#![allow(dead_code)]

pub mod browser;
pub mod dns;
pub mod fault;
pub mod h2;
pub mod raw;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// How often [`eventually`] re-evaluates its condition.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Poll `cond` every 20 ms until it is true or `timeout` has passed; returns whether it became
/// true. The condition is always evaluated at least once, and once more at the deadline.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

/// Like [`eventually`], but panics with `what` (and the patience) on timeout.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    if !eventually(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// A free 127.0.0.1 port: bind `:0`, read the port, drop the listener.
///
/// Racy by nature (someone else may take the port before the caller binds it); [`Tether::start`]
/// retries with fresh ports when tether reports the address in use.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free 127.0.0.1 port below the kernel's ephemeral range, for a server that must come back
/// on the same port after it is stopped (a restarted Redis).
///
/// [`free_port`] hands out an ephemeral port, which the kernel may give to any outgoing
/// connection meanwhile — even one dialling that very port, which then connects to itself and
/// keeps the server from binding it. A port below the range is only ever taken by an explicit
/// bind.
pub fn free_port_outside_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000, low - 1)
    } else {
        (1024, low.max(1025) - 1)
    };
    for _ in 0..200 {
        let port = fastrand::u16(from..=to);
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {from}..={to} after 200 tries");
}

// ---------------------------------------------------------------------------------------------
// In-process backends
// ---------------------------------------------------------------------------------------------

/// The path a [`Backend`] answers as its health check.
pub const HEALTH_PATH: &str = "/healthz";

/// The one tokio runtime all backends of a test binary share (2 workers, created lazily, never
/// dropped). Tests themselves stay synchronous; only backends run on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-backend")
            .enable_all()
            .build()
            .expect("build the harness tokio runtime")
    })
}

/// State shared between a [`Backend`] handle and its connection tasks.
struct BackendShared {
    name: String,
    name_header: HeaderValue,
    health_status: AtomicU16,
    hits: AtomicUsize,
    health_hits: AtomicUsize,
    in_flight: AtomicUsize,
    delay_nanos: AtomicU64,
}

/// A listening server: dropping `shutdown` (or sending on it) ends the accept loop, which then
/// closes the listener, aborts every connection and reports on `done`.
struct Serving {
    shutdown: oneshot::Sender<()>,
    done: mpsc::Receiver<()>,
}

/// An in-process HTTP/1.1 backend on 127.0.0.1 (hyper on the shared harness runtime).
///
/// Every request except `GET /healthz` answers 200 with body = name and headers:
/// `x-backend: <name>`, `x-seen-headers: <compact JSON object of the request headers, lower-case
/// names, repeated headers joined with ", ", non-ASCII escaped as \uXXXX>`, `x-seen-path: <path
/// and query>`, `x-seen-method: <method>`, `x-seen-body-len: <request body length in bytes>`.
/// `/healthz` answers the status set by [`Backend::set_health`] (default 200) with body `ok`
/// and `x-backend`, and is counted apart. A path with `/respond/NNN` in it answers status NNN
/// instead of 200 (e.g. `/respond/500` or `/shop/respond/503`), otherwise like any request. Dropping a `Backend`
/// stops it.
pub struct Backend {
    shared: Arc<BackendShared>,
    addr: SocketAddr,
    serving: Mutex<Option<Serving>>,
}

impl Backend {
    /// Start a backend called `name` on a fresh 127.0.0.1 port. It is accepting when this returns.
    pub fn start(name: &str) -> Backend {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind backend on 127.0.0.1:0");
        Backend::serve_on(name, listener)
    }

    /// Start a backend called `name` on `addr` (a loopback address such as `127.0.0.3:PORT`:
    /// DNS answers name backends by address, with one port for all). Panics if it cannot bind.
    pub fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let listener =
            StdTcpListener::bind(addr).unwrap_or_else(|e| panic!("bind backend on {addr}: {e}"));
        Backend::serve_on(name, listener)
    }

    fn serve_on(name: &str, listener: StdTcpListener) -> Backend {
        let name_header = HeaderValue::from_str(name)
            .unwrap_or_else(|_| panic!("backend name {name:?} is not a valid header value"));
        let addr = listener.local_addr().expect("backend local_addr");
        let shared = Arc::new(BackendShared {
            name: name.to_string(),
            name_header,
            health_status: AtomicU16::new(200),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            delay_nanos: AtomicU64::new(0),
        });
        let serving = serve(listener, shared.clone());
        Backend {
            shared,
            addr,
            serving: Mutex::new(Some(serving)),
        }
    }

    /// `127.0.0.1:PORT`; the same across [`stop`](Backend::stop)/[`restart`](Backend::restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Status `/healthz` answers from now on (e.g. 503 to fail active checks).
    pub fn set_health(&self, status: u16) {
        StatusCode::from_u16(status).unwrap_or_else(|_| panic!("invalid status {status}"));
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// Health-path requests received.
    pub fn health_hits(&self) -> usize {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// Non-health requests received. Counted when the request arrives (before any
    /// [`set_delay`](Backend::set_delay)), so a test can wait for a slow request to be in flight.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Non-health requests currently being handled (arrived, response not yet produced).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Delay every non-health response by `d` (zero turns it off). Applies to requests arriving
    /// after the call.
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Whether the backend is currently listening.
    pub fn is_running(&self) -> bool {
        self.serving.lock().unwrap().is_some()
    }

    /// Close the listener and every open connection (keep-alive ones included). When this
    /// returns, new connections are refused. No-op when already stopped.
    #[track_caller]
    pub fn stop(&self) {
        if !self.shut_down() {
            panic!("backend {} did not stop within 5 s", self.shared.name);
        }
    }

    /// Stop serving; whether the accept loop confirmed within 5 s (true when already stopped).
    fn shut_down(&self) -> bool {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match serving {
            None => true,
            Some(Serving { shutdown, done }) => {
                let _ = shutdown.send(());
                // The accept loop reports only after the listener is closed and every
                // connection task has finished, so "stopped" is a fact when we return.
                done.recv_timeout(Duration::from_secs(5)).is_ok()
            }
        }
    }

    /// Listen again on the same port (retrying the bind for up to 5 s). No-op when running.
    pub fn restart(&self) {
        let mut serving = self.serving.lock().unwrap();
        if serving.is_some() {
            return;
        }
        let mut last_err = None;
        let mut listener = None;
        eventually(Duration::from_secs(5), || {
            match StdTcpListener::bind(self.addr) {
                Ok(l) => {
                    listener = Some(l);
                    true
                }
                Err(e) => {
                    last_err = Some(e);
                    false
                }
            }
        });
        let listener = listener.unwrap_or_else(|| {
            panic!(
                "backend {} could not bind {} again within 5 s: {last_err:?}",
                self.shared.name, self.addr
            )
        });
        *serving = Some(serve(listener, self.shared.clone()));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Never panic in drop; a backend that fails to confirm is still told to stop.
        self.shut_down();
    }
}

/// Spawn the accept loop for `listener` on the harness runtime.
fn serve(listener: StdTcpListener, shared: Arc<BackendShared>) -> Serving {
    listener
        .set_nonblocking(true)
        .expect("set backend listener non-blocking");
    let rt = runtime();
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener).expect("register backend listener")
    };
    let (shutdown, mut shutdown_rx) = oneshot::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    rt.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                // A send or a dropped sender both mean: stop.
                _ = &mut shutdown_rx => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(serve_connection(stream, shared.clone()));
                    }
                    // E.g. EMFILE: back off briefly instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        conns.shutdown().await;
        let _ = done_tx.send(());
    });
    Serving { shutdown, done }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<BackendShared>) {
    let service = service_fn(move |req| handle(req, shared.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Decrements the in-flight count however the request ends (including abort by `stop`).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<BackendShared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let x_backend = HeaderName::from_static("x-backend");
    if req.uri().path() == HEALTH_PATH {
        shared.health_hits.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(shared.health_status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(x_backend, shared.name_header.clone());
        return Ok(resp);
    }

    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);

    let seen_headers = headers_json(req.headers());
    let seen_path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let method = req.method().as_str().to_string();

    let delay = Duration::from_nanos(shared.delay_nanos.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body_len = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };

    let mut resp = Response::new(Full::new(Bytes::from(shared.name.clone())));
    if let Some(code) = seen_path
        .find("/respond/")
        .and_then(|at| seen_path.get(at + "/respond/".len()..at + "/respond/".len() + 3))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        *resp.status_mut() = code;
    }
    let h = resp.headers_mut();
    h.insert(x_backend, shared.name_header.clone());
    h.insert(
        HeaderName::from_static("x-seen-headers"),
        HeaderValue::from_str(&seen_headers).expect("ASCII JSON is a valid header value"),
    );
    if let Ok(v) = HeaderValue::from_str(&seen_path) {
        h.insert(HeaderName::from_static("x-seen-path"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&method) {
        h.insert(HeaderName::from_static("x-seen-method"), v);
    }
    h.insert(
        HeaderName::from_static("x-seen-body-len"),
        HeaderValue::from(body_len),
    );
    Ok(resp)
}

/// The request headers as a compact JSON object, ASCII only (so it is a valid header value):
/// lower-case names, sorted, repeated headers joined with ", ".
fn headers_json(headers: &hyper::HeaderMap) -> String {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let json = serde_json::to_string(&map).expect("serialize headers");
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// `[[pool.POOL.backend]]` tables for `backends`, each with id = the backend's name (weight 1).
/// Takes `&[Backend]` or `&[&Backend]`.
pub fn backend_tables<B: std::borrow::Borrow<Backend>>(pool: &str, backends: &[B]) -> String {
    backends
        .iter()
        .map(|b| {
            let b = b.borrow();
            format!(
                "[[pool.{pool}.backend]]\nid = \"{}\"\naddr = \"{}\"\n",
                b.name(),
                b.addr()
            )
        })
        .collect()
}

/// A response, fully read. Header names are lower-case; values are lossily UTF-8 decoded.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `x-backend` header: which [`Backend`] answered.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }

    /// The value (before the first `;`, trimmed) of the last `Set-Cookie` whose cookie name is
    /// exactly `name` (the last one is what a browser would keep).
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookie_line(name).map(|line| {
            let pair = line.split(';').next().unwrap_or("");
            let (_, value) = pair.split_once('=').unwrap_or((pair, ""));
            value.trim().to_string()
        })
    }

    /// The full line of the last `Set-Cookie` whose cookie name is exactly `name`.
    pub fn set_cookie_line(&self, name: &str) -> Option<String> {
        self.headers_all("set-cookie")
            .into_iter()
            .rev()
            .find(|line| {
                let pair = line.split(';').next().unwrap_or("");
                pair.split_once('=')
                    .is_some_and(|(cookie, _)| cookie.trim() == name)
            })
            .map(str::to_string)
    }

    /// The `x-seen-headers` JSON a [`Backend`] echoes: the headers it received.
    pub fn seen_headers(&self) -> Option<serde_json::Value> {
        self.header("x-seen-headers")
            .map(|v| serde_json::from_str(v).expect("x-seen-headers is JSON"))
    }

    /// One header the backend received (from `x-seen-headers`), by lower-case name.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.seen_headers()?
            .get(name.to_ascii_lowercase())?
            .as_str()
            .map(str::to_string)
    }
}

/// Client timeout for the whole request (connect, send, receive).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One agent for the process: no redirects, statuses are not errors, no cookie store (the
/// feature is off), no proxy from the environment, and no connection pool — every request opens
/// its own connection, so a stopped or restarted server never hands a test a stale socket.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(CLIENT_TIMEOUT))
            .proxy(None)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into()
    })
}

/// Send one request. `Err` on any transport error (refused, reset, timeout, bad response).
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Resp, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(body) => builder
            .body(body.as_bytes())
            .map_err(|e| format!("{method} {url}: bad request: {e}"))
            .and_then(|req| agent().run(req).map_err(|e| format!("{method} {url}: {e}"))),
        None => builder
            .body(())
            .map_err(|e| format!("{method} {url}: bad request: {e}"))
            .and_then(|req| agent().run(req).map_err(|e| format!("{method} {url}: {e}"))),
    };
    let mut response = result?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// GET `url`; `Err` on a connection error instead of panicking (for polling).
pub fn try_get(url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    try_request("GET", url, headers, None)
}

/// GET `url`; panics on a transport error. Any status is returned as is.
#[track_caller]
pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    try_get(url, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// POST `body` to `url`; panics on a transport error. Any status is returned as is.
#[track_caller]
pub fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    try_request("POST", url, headers, Some(body)).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

/// One sample line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In exposition order, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(name, value)` in `wanted` is among this sample's labels.
    pub fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        wanted.iter().all(|(n, v)| self.label(n) == Some(*v))
    }

    /// Whether this sample's label set is exactly `wanted` (any order).
    pub fn labels_are(&self, wanted: &[(&str, &str)]) -> bool {
        self.labels.len() == wanted.len() && self.has_labels(wanted)
    }
}

/// Parse a Prometheus text exposition (format 0.0.4): skips blank and `#` lines; reads
/// `name{label="value",...} value [timestamp]` with label values unescaped (`\\`, `\"`, `\n`),
/// labels in any order, optional trailing comma, and values including `NaN`, `+Inf`, `-Inf`.
/// `Err` names the first malformed line.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample =
            parse_sample(line).map_err(|e| format!("metrics line {}: {e}: {line:?}", i + 1))?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("bad metric name".into());
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            match chars.peek() {
                Some((_, '}')) => {
                    let (pos, _) = chars.next().unwrap();
                    rest = after_brace[pos + 1..].trim_start();
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut label = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| is_name_char(*c)) {
                label.push(c);
            }
            if label.is_empty() {
                return Err("bad label name".into());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("expected '=' after label {label}"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("expected '\"' to open the value of label {label}"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    None => return Err(format!("unterminated value of label {label}")),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => return Err(format!("unterminated value of label {label}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            labels.push((label, value));
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("expected ',' or '}' after a label".into()),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("bad timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Value of the sample `name` whose label set is exactly `labels` (any order); `None` when absent.
/// Panics on a malformed exposition.
#[track_caller]
pub fn prom_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_prometheus(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|s| s.name == name && s.labels_are(labels))
        .map(|s| s.value)
}

/// Sum of every sample `name` whose labels include all of `labels` (0 when none).
/// Panics on a malformed exposition.
#[track_caller]
pub fn prom_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_prometheus(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The tether binary
// ---------------------------------------------------------------------------------------------

/// How long [`Tether::start`] waits for the admin `/healthz` and the proxy listener.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times [`Tether::start`] retries with fresh ports when tether reports one in use.
const START_ATTEMPTS: usize = 3;

fn tether_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// Replace `{LISTEN}`, `{ADMIN}` and `{DIR}` in a config template.
fn fill(template: &str, listen: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
    template
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

fn loopback_free() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Write `contents` to `path` atomically: temp file in the same directory, then rename, so a
/// reader (tether's reload or file watcher) never sees a half-written file.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Send `signal` (e.g. "TERM", "HUP") with `kill(1)`; whether it was delivered.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Wait for `child` to exit for up to `timeout` (bounded poll).
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    eventually(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// SIGTERM, wait up to `grace`, then SIGKILL and reap. Returns the exit status.
fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    send_signal(child.id(), "TERM");
    if let Some(status) = wait_timeout(child, grace) {
        return status;
    }
    let _ = child.kill();
    child.wait().expect("wait for killed tether")
}

/// The tail of a log, for panic messages.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A spawned process with its temp dir: the common part of [`Tether`] and [`RawTether`].
struct Spawned {
    child: Child,
    dir: TempDir,
    config_path: PathBuf,
}

fn spawn(
    config: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Spawned {
    let dir = tempfile::Builder::new()
        .prefix("tether-test-")
        .tempdir()
        .expect("create temp dir");
    let config_path = dir.path().join("tether.toml");
    write_atomic(&config_path, &fill(config, listen, admin, dir.path()));
    let stdout = File::create(dir.path().join("stdout.log")).expect("create stdout.log");
    let stderr = File::create(dir.path().join("stderr.log")).expect("create stderr.log");
    let config_arg = config_path.display().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{CONFIG}", &config_arg))
        .collect();
    let mut cmd = Command::new(tether_bin());
    cmd.args(&args)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("TETHER_CONFIG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", tether_bin()));
    Spawned {
        child,
        dir,
        config_path,
    }
}

/// The real tether binary running a config written to `<tempdir>/tether.toml`.
///
/// Config placeholders: `{LISTEN}` and `{ADMIN}` become `127.0.0.1:<free port>` (the proxy and
/// admin listeners), `{DIR}` the temp dir (for pid files, sockets, secrets written by the test).
/// stdout/stderr go to `stdout.log`/`stderr.log` in the temp dir; tether runs with that dir as
/// its working directory and without `RUST_LOG`/`TETHER_CONFIG` from the test's environment.
/// Dropping it stops the process (SIGTERM, up to 5 s, SIGKILL); when dropped during a panic, the
/// captured stderr is printed so the failing test shows tether's side of the story.
pub struct Tether {
    child: Child,
    exit: Option<ExitStatus>,
    dir: TempDir,
    config_path: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Tether {
    /// Spawn `tether run -c <dir>/tether.toml` and wait (≤ 30 s) until `GET http://ADMIN/healthz`
    /// answers 200 and a TCP connect to LISTEN succeeds (each check only if the config uses that
    /// placeholder; it must use at least one). Panics with the captured stderr on timeout or early
    /// exit; retries with fresh ports if tether reports an address already in use.
    #[track_caller]
    pub fn start(config: &str) -> Tether {
        Tether::start_with(config, &[], &[])
    }

    /// Like [`start`](Tether::start), with `extra_args` appended to `run -c <path>` and `envs`
    /// set for the process.
    #[track_caller]
    pub fn start_with(config: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Tether {
        let wait_admin = config.contains("{ADMIN}");
        let wait_listen = config.contains("{LISTEN}");
        assert!(
            wait_admin || wait_listen,
            "Tether::start needs a config using {{ADMIN}} and/or {{LISTEN}} to know when it is up"
        );
        let mut args = vec!["run", "-c", "{CONFIG}"];
        args.extend_from_slice(extra_args);

        for attempt in 1..=START_ATTEMPTS {
            let (listen, admin) = loop {
                let pair = (loopback_free(), loopback_free());
                if pair.0 != pair.1 {
                    break pair;
                }
            };
            let Spawned {
                child,
                dir,
                config_path,
            } = spawn(config, listen, admin, &args, envs);
            let mut tether = Tether {
                child,
                exit: None,
                dir,
                config_path,
                listen,
                admin,
            };
            let healthz = tether.admin_url("/healthz");
            let mut exited = None;
            let ready = eventually(START_TIMEOUT, || {
                if let Ok(Some(status)) = tether.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                (!wait_admin || try_get(&healthz, &[]).is_ok_and(|r| r.status == 200))
                    && (!wait_listen
                        || TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok())
            });
            if let Some(status) = exited {
                tether.exit = Some(status);
                let stderr = tether.stderr();
                let lower = stderr.to_ascii_lowercase();
                if attempt < START_ATTEMPTS
                    && (lower.contains("address already in use") || lower.contains("addrinuse"))
                {
                    continue;
                }
                let config = read_lossy(&tether.config_path);
                drop(tether);
                panic!(
                    "tether exited during start with {status}\n--- config ---\n{config}\n\
                     --- stderr ---\n{}",
                    tail(&stderr, 16 * 1024)
                );
            }
            if !ready {
                let stderr = tether.stderr();
                let config = read_lossy(&tether.config_path);
                let status = tether.stop();
                // Dropped before panicking, so its Drop does not print stderr a second time.
                drop(tether);
                panic!(
                    "tether not ready within {START_TIMEOUT:?} (admin healthz: {wait_admin}, \
                     listener: {wait_listen}); stopped with {status}\n--- config ---\n{}\n\
                     --- stderr ---\n{}",
                    config,
                    tail(&stderr, 16 * 1024)
                );
            }
            return tether;
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Spawn tether WITHOUT waiting, for tests of failing starts and of other commands. `args` is
    /// the full argument list; `{CONFIG}` in it becomes the config path, e.g.
    /// `&["check", "-c", "{CONFIG}"]` or `&["run", "-c", "{CONFIG}"]`. The config gets the same
    /// placeholders as [`start`](Tether::start), with fresh ports.
    pub fn spawn_raw(config: &str, args: &[&str]) -> RawTether {
        Tether::spawn_raw_with(config, args, &[])
    }

    /// [`spawn_raw`](Tether::spawn_raw) with environment variables for the process.
    pub fn spawn_raw_with(config: &str, args: &[&str], envs: &[(&str, &str)]) -> RawTether {
        let (listen, admin) = (loopback_free(), loopback_free());
        let Spawned {
            child,
            dir,
            config_path,
        } = spawn(config, listen, admin, args, envs);
        RawTether {
            child,
            exit: None,
            dir,
            config_path,
            listen,
            admin,
        }
    }

    /// `http://LISTEN{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `http://ADMIN{path}`; `path` should start with `/`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fill the placeholders with the SAME addresses as at start and replace the config file
    /// atomically (write a temp file, then rename). Does not signal tether.
    pub fn write_config(&self, config: &str) {
        write_atomic(
            &self.config_path,
            &fill(config, self.listen, self.admin, self.dir.path()),
        );
    }

    /// Send SIGHUP (`kill -HUP pid`). Panics if it cannot be delivered.
    #[track_caller]
    pub fn sighup(&self) {
        assert!(
            send_signal(self.pid(), "HUP"),
            "kill -HUP {} failed",
            self.pid()
        );
    }

    /// Send any signal by name (`"TERM"`, `"QUIT"`, ...). Panics if it cannot be delivered.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        assert!(
            send_signal(self.pid(), signal),
            "kill -{signal} {} failed",
            self.pid()
        );
    }

    /// `GET /metrics` body. Panics on a transport error or a non-200.
    #[track_caller]
    pub fn metrics(&self) -> String {
        let resp = get(&self.admin_url("/metrics"), &[]);
        assert_eq!(resp.status, 200, "GET /metrics: {}", resp.body);
        resp.body
    }

    /// Value of the sample `name` whose label set is exactly `labels` (any order), e.g.
    /// `metric("tether_backend_up", &[("pool", "web"), ("backend", "a")])`; `None` when absent.
    #[track_caller]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        prom_value(&self.metrics(), name, labels)
    }

    /// Sum of all samples of `name` whose labels include all of `labels` (0 when none).
    #[track_caller]
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        prom_sum(&self.metrics(), name, labels)
    }

    /// `GET /status` parsed as JSON. Panics on a transport error, a non-200 or bad JSON.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let resp = get(&self.admin_url("/status"), &[]);
        assert_eq!(resp.status, 200, "GET /status: {}", resp.body);
        serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("GET /status is not JSON ({e}): {}", resp.body))
    }

    /// stderr captured so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    /// stdout captured so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout.log"))
    }

    /// The exit status if the process has exited (without stopping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Wait up to `timeout` for the process to exit on its own (e.g. after a signal the test
    /// sent); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_timeout(&mut self.child, timeout);
        }
        self.exit
    }

    /// SIGTERM and wait up to 10 s, then SIGKILL. Returns the exit status (the same one on
    /// repeated calls).
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = terminate(&mut self.child, Duration::from_secs(10));
        self.exit = Some(status);
        status
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.exit = Some(terminate(&mut self.child, Duration::from_secs(5)));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tether (pid {}, exit {:?}) stderr ---\n{}",
                self.child.id(),
                self.exit,
                tail(&self.stderr(), 16 * 1024)
            );
        }
    }
}

/// A tether process started by [`Tether::spawn_raw`] without waiting for it to be ready.
/// Dropping it kills the process if it is still running (SIGTERM, up to 5 s, SIGKILL).
pub struct RawTether {
    child: Child,
    exit: Option<ExitStatus>,
    dir: TempDir,
    config_path: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl RawTether {
    /// Wait up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_timeout(&mut self.child, timeout);
        }
        self.exit
    }

    /// Wait up to `timeout` for the process to exit; panics (showing stderr) if it does not.
    #[track_caller]
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => panic!(
                "tether still running after {timeout:?}\n--- stderr ---\n{}",
                tail(&self.stderr(), 16 * 1024)
            ),
        }
    }

    /// SIGTERM and wait up to 10 s, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = terminate(&mut self.child, Duration::from_secs(10));
        self.exit = Some(status);
        status
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Mutable access to the process, e.g. to `try_wait` or `wait` on it directly.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout.log"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address `{LISTEN}` was replaced with.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The address `{ADMIN}` was replaced with.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }
}

impl Drop for RawTether {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.exit = Some(terminate(&mut self.child, Duration::from_secs(5)));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tether (pid {}, exit {:?}) stderr ---\n{}",
                self.child.id(),
                self.exit,
                tail(&self.stderr(), 16 * 1024)
            );
        }
    }
}
