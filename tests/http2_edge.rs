//! HTTP/2 on tether's own loop (DESIGN.md §12, §20): cleartext prior knowledge (`h2c`) when
//! enabled and refused otherwise, the settings tether advertises, request and response bodies
//! both ways (declared, streamed, large, chunked from the backend), `Expect: 100-continue`, the
//! §12 limits on streams (field count, header list size, request body), idle connections closed
//! with GOAWAY, a client that resets a stream mid-body, and rapid-reset and CONTINUATION floods
//! closing the offending connection while another client is served.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::h2::H2;
use common::raw::{read_body, read_head, RawBackend};
use common::*;

fn tether(extra_server: &str, backends: &str) -> Tether {
    Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 2
grace_period = "1s"
{extra_server}

[[route]]
path_prefix = "/"
pool = "web"

[pool.web]
policy = "round_robin"
max_request_body = 100000
{backends}"#
    ))
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 frames, for what a well-behaved client library will not send.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A frame read: (type, flags, stream, payload).
type Frame = (u8, u8, u32, Vec<u8>);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET /` (or `POST`) on `authority`, plus literal fields, none indexed.
fn hpack(post: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    // :method GET (2) or POST (3), :scheme http (6), :path / (4): static table entries.
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86, 0x84];
    // :authority (name index 1), literal without indexing.
    b.push(0x01);
    b.push(9);
    b.extend_from_slice(b"localhost");
    for (n, v) in extra {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// A cleartext connection that has sent the preface and an empty SETTINGS frame.
fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).unwrap();
    s
}

/// The frames that arrive within `limit` (or until the server closes): (type, flags, stream,
/// payload). Stops early once `until` says so.
fn read_frames(
    s: &mut TcpStream,
    limit: Duration,
    until: impl Fn(&[Frame]) -> bool,
) -> (Vec<Frame>, bool) {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut closed = false;
    while Instant::now() < deadline && !until(&frames) {
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            frames.push((buf[3], buf[4], stream, buf[9..9 + len].to_vec()));
            buf.drain(..9 + len);
        }
    }
    (frames, closed)
}

fn settings_of(frames: &[Frame]) -> Vec<(u16, u32)> {
    let (_, _, _, p) = frames
        .iter()
        .find(|f| f.0 == SETTINGS && f.1 & 1 == 0)
        .expect("the server's SETTINGS");
    p.chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

#[test]
fn h2c_prior_knowledge_is_served_when_enabled_and_refused_otherwise() {
    let b = Backend::start("b1");
    let on = tether(
        "h2c = true\nmax_concurrent_streams = 7\nmax_header_size = 8192",
        &backend_tables("web", &[&b]),
    );
    // The settings tether advertises: its limits.
    let mut s = raw_h2c(on.listen());
    let (frames, _) = read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter().any(|f| f.0 == SETTINGS && f.1 & 1 == 0)
    });
    let settings = settings_of(&frames);
    assert!(
        settings.contains(&(0x3, 7)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 8192)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    // A request on it is proxied.
    let mut h2 = H2::h2c(on.listen(), "localhost");
    let r = h2.get("/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("b1"));
    assert_eq!(h2.max_send_streams(), 7);
    // The backend got an HTTP/1.1 request with tether's forwarding fields and the Host.
    assert_eq!(r.seen_header("host").as_deref(), Some("localhost"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert!(r.header("x-request-id").is_some());
    // HTTP/1.1 still works on the same listener.
    assert_eq!(get(&on.url("/y"), &[]).backend(), Some("b1"));

    // Without `h2c = true` the preface is not HTTP/1.1: 400, nothing reaches a backend.
    let hits = b.hits();
    let off = tether("", &backend_tables("web", &[&b]));
    let mut s = TcpStream::connect(off.listen()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(PREFACE).unwrap();
    let mut r = BufReader::new(s);
    let head = read_head(&mut r).expect("an HTTP/1.1 answer");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(b.hits(), hits);
}

/// A backend that answers `/big` with `n` bytes (Content-Length), `/chunked` with the same bytes
/// in chunks, and echoes a request body's length otherwise.
fn big_backend(n: usize) -> RawBackend {
    RawBackend::start(move |head, r, w| {
        let body = read_body(head, r);
        let data = common::raw::pattern(n)
            .iter()
            .map(|b| b'a' + b % 26)
            .collect::<Vec<u8>>();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if path == "/big" {
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: big\r\n\r\n",
                data.len()
            );
            let _ = w.write_all(&data);
        } else if path == "/chunked" {
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: big\r\n\r\n"
            );
            for c in data.chunks(10_000) {
                let _ = write!(w, "{:x}\r\n", c.len());
                let _ = w.write_all(c);
                let _ = w.write_all(b"\r\n");
            }
            let _ = w.write_all(b"0\r\n\r\n");
        } else {
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Body-Len: {}\r\n\r\n",
                body.len()
            );
        }
        true
    })
}

#[test]
fn bodies_pass_both_ways_within_flow_control() {
    let b = Backend::start("b1");
    let t = tether("h2c = true", &backend_tables("web", &[&b]));
    let mut h2 = H2::h2c(t.listen(), "localhost");
    // A declared body: sent with its length.
    let r = h2
        .request(
            "POST",
            "/post",
            &[("content-length", "11")],
            Some("hello world"),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-body-len"), Some("11"));
    assert_eq!(r.seen_header("content-length").as_deref(), Some("11"));
    // A streamed body without a length: chunked upstream, every byte there.
    let chunks: Vec<&[u8]> = vec![b"abc", b"defgh", b"ij"];
    let r = h2
        .request_chunks("POST", "/stream", &[], &chunks, None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-body-len"), Some("10"));
    assert_eq!(
        r.seen_header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    // A POST without a body says so with a length of 0.
    let r = h2.request("POST", "/empty", &[], None).unwrap();
    assert_eq!(r.header("x-seen-body-len"), Some("0"));
    assert_eq!(r.seen_header("content-length").as_deref(), Some("0"));

    // Response bodies larger than the initial flow-control window, with a length and chunked.
    let big = big_backend(1 << 20);
    let t2 = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
h2c = true
[[route]]
path_prefix = "/"
pool = "big"
[pool.big]
policy = "round_robin"
[[pool.big.backend]]
id = "big"
addr = "{}"
"#,
        big.addr
    ));
    let want: String = common::raw::pattern(1 << 20)
        .iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect();
    let mut h2 = H2::h2c(t2.listen(), "localhost");
    for path in ["/big", "/chunked", "/big"] {
        let r = h2.get(path, &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), want.len(), "{path}");
        assert!(r.body == want, "{path}: the body differs");
        assert!(r.header("transfer-encoding").is_none());
    }
    // Both responses on one upstream connection (reused after each).
    assert_eq!(big.conns.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn expect_100_continue_is_relayed_as_an_informational_response() {
    let b = Backend::start("b1");
    let t = tether("h2c = true", &backend_tables("web", &[&b]));
    let mut s = raw_h2c(t.listen());
    let block = hpack(true, &[("expect", "100-continue"), ("content-length", "5")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &block))
        .unwrap();
    // Before any body byte is sent, the backend's 100 comes back as a HEADERS frame on the
    // stream (the final response cannot come before the body).
    let (frames, _) = read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter().any(|f| f.0 == HEADERS && f.2 == 1)
    });
    let interim = frames
        .iter()
        .find(|f| f.0 == HEADERS && f.2 == 1)
        .expect("an interim response before the body was sent");
    assert_eq!(
        interim.1 & END_STREAM,
        0,
        "an interim head does not end the stream"
    );
    s.write_all(&frame(DATA, END_STREAM, 1, b"hello")).unwrap();
    let (frames, _) = read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter()
            .any(|f| f.0 == DATA && f.2 == 1 && f.1 & END_STREAM != 0)
    });
    let body: Vec<u8> = frames
        .iter()
        .filter(|f| f.0 == DATA && f.2 == 1)
        .flat_map(|f| f.3.clone())
        .collect();
    assert_eq!(body, b"b1", "the final response follows the body");
    assert_eq!(b.hits(), 1);
}

#[test]
fn limits_hold_on_http2_streams() {
    let b = Backend::start("b1");
    let t = tether(
        "h2c = true\nmax_headers = 10\nmax_header_size = 4096",
        &backend_tables("web", &[&b]),
    );
    let mut h2 = H2::h2c(t.listen(), "localhost");
    // More fields than max_headers: 431 on the stream, counted; the connection goes on.
    let many: Vec<(String, String)> = (0..12).map(|i| (format!("x-f{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let r = h2.request("GET", "/many", &many, None).unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "too_many_headers")]
        ),
        Some(1.0)
    );
    // A header list over max_header_size: 431 on the stream.
    let long = "v".repeat(6000);
    let r = h2
        .request("GET", "/long", &[("x-long", &long)], None)
        .unwrap();
    assert_eq!(r.status, 431);
    // (`h2` answers that one itself; it is counted all the same.)
    wait_for(
        "the oversize refusal counted",
        Duration::from_secs(5),
        || {
            t.metric(
                "tether_downstream_rejected_total",
                &[("reason", "header_too_large")],
            ) == Some(1.0)
        },
    );
    // A declared body over max_request_body: 413 before any backend is asked.
    let body = "x".repeat(100_001);
    let r = h2
        .request("POST", "/big", &[("content-length", "100001")], Some(&body))
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        b.hits(),
        0,
        "nothing refused by its head reached the backend"
    );
    // A streamed body that grows past it: 413 too (the backend's request is cut off with its
    // connection, as for a chunked HTTP/1.1 body).
    let chunk = vec![b'y'; 40_000];
    let chunks: Vec<&[u8]> = vec![&chunk, &chunk, &chunk];
    let r = h2
        .request_chunks("POST", "/grow", &[], &chunks, None)
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "body_too_large")]
        ),
        Some(2.0)
    );
    // The connection still serves.
    assert_eq!(h2.get("/ok", &[]).backend(), Some("b1"));
}

#[test]
fn an_idle_connection_is_closed_with_goaway() {
    let b = Backend::start("b1");
    let t = tether(
        "h2c = true\nkeepalive_timeout = \"1s\"",
        &backend_tables("web", &[&b]),
    );
    let mut h2 = H2::h2c(t.listen(), "localhost");
    assert_eq!(h2.get("/", &[]).status, 200);
    assert!(!h2.is_closed());
    let mut s = raw_h2c(t.listen());
    let (frames, closed) = read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter().any(|f| f.0 == GOAWAY)
    });
    assert!(
        frames.iter().any(|f| f.0 == GOAWAY) || closed,
        "an idle connection gets GOAWAY"
    );
    wait_for(
        "the idle client connection to be closed",
        Duration::from_secs(5),
        || h2.is_closed(),
    );
}

/// A backend that reads a chunked request body line by line (tolerating a connection cut
/// mid-body) and answers 200 once it ends.
fn chunk_reader() -> RawBackend {
    RawBackend::start(|_head, r, w| {
        use std::io::BufRead;
        let mut last_zero = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return false; // cut off mid-body
            }
            if last_zero && line == "\r\n" {
                break;
            }
            last_zero = line == "0\r\n";
        }
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        true
    })
}

#[test]
fn a_stream_reset_mid_body_abandons_its_upstream_request() {
    let b = chunk_reader();
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
h2c = true
[[route]]
path_prefix = "/"
pool = "web"
[pool.web]
policy = "round_robin"
[[pool.web.backend]]
id = "raw"
addr = "{}"
"#,
        b.addr
    ));
    let mut h2 = H2::h2c(t.listen(), "localhost");
    // A whole streamed body first: its upstream connection goes back for reuse.
    let r = h2
        .request_chunks("POST", "/whole", &[], &[b"all", b"of it"], None)
        .unwrap();
    assert_eq!(r.status, 200);
    let conns = || b.conns.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conns(), 1);
    // Reset after two chunks: the backend's request is cut off with its connection.
    let chunks: Vec<&[u8]> = vec![b"part one", b"part two", b"never"];
    let r = h2.request_chunks("POST", "/upload", &[], &chunks, Some(2));
    assert!(r.is_err());
    // Nothing is left in flight, and the next request is served on a new upstream connection
    // (the abandoned one, mid-body, is never reused).
    wait_for(
        "the in-flight gauge back to 0",
        Duration::from_secs(5),
        || t.metric_sum("tether_backend_in_flight", &[]) == 0.0,
    );
    let r = h2
        .request_chunks("POST", "/after", &[], &[b"x"], None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    assert_eq!(
        conns(),
        2,
        "the abandoned upstream connection was not reused"
    );
    wait_for(
        "the in-flight gauge back to 0",
        Duration::from_secs(5),
        || t.metric_sum("tether_backend_in_flight", &[]) == 0.0,
    );
}

#[test]
fn a_graceful_shutdown_lets_a_stream_in_flight_finish() {
    let b = Backend::start("b1");
    b.set_delay(Duration::from_millis(1500));
    // (The helper's config has a 1 s grace period, shorter than the backend's delay.)
    let mut t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "20s"
h2c = true
[[route]]
path_prefix = "/"
pool = "web"
[pool.web]
policy = "round_robin"
{}"#,
        backend_tables("web", &[&b])
    ));
    let addr = t.listen();
    let client = std::thread::spawn(move || {
        let mut h2 = H2::h2c(addr, "localhost");
        h2.request("GET", "/slow", &[], None)
    });
    wait_for(
        "the request in flight at the backend",
        Duration::from_secs(5),
        || b.in_flight() == 1,
    );
    let start = Instant::now();
    t.signal("TERM");
    let r = client
        .join()
        .unwrap()
        .expect("the stream in flight is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("b1"));
    let status = t.wait_exit(Duration::from_secs(15)).expect("tether exits");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "exits once nothing is in progress, not at the end of grace_period ({:?})",
        start.elapsed()
    );
}

#[test]
fn rapid_reset_and_continuation_floods_close_the_connection_not_the_server() {
    let b = Backend::start("b1");
    b.set_delay(Duration::from_millis(50));
    let t = tether("h2c = true", &backend_tables("web", &[&b]));
    let mut other = H2::h2c(t.listen(), "localhost");

    // Rapid reset (CVE-2023-44487): streams opened and reset at once, in one write.
    let mut s = raw_h2c(t.listen());
    let mut flood = Vec::new();
    for i in 0..500u32 {
        let id = 1 + 2 * i;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &hpack(false, &[]),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&flood);
    let (frames, closed) = read_frames(&mut s, Duration::from_secs(10), |f| {
        f.iter().any(|f| f.0 == GOAWAY)
    });
    assert!(
        frames.iter().any(|f| f.0 == GOAWAY) || closed,
        "the flooding connection is closed"
    );
    assert_eq!(
        other.get("/still", &[]).status,
        200,
        "another client is served"
    );

    // CONTINUATION flood: a header block that never ends.
    let mut s = raw_h2c(t.listen());
    let mut flood = frame(HEADERS, 0, 1, &hpack(false, &[]));
    for _ in 0..20_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &[0x40, 1, b'x', 1, b'y']));
    }
    let _ = s.write_all(&flood);
    let (frames, closed) = read_frames(&mut s, Duration::from_secs(10), |f| {
        f.iter().any(|f| f.0 == GOAWAY)
    });
    assert!(
        frames.iter().any(|f| f.0 == GOAWAY) || closed,
        "the flooding connection is closed"
    );
    assert_eq!(
        other.get("/still", &[]).status,
        200,
        "another client is served"
    );
    wait_for("both floods counted", Duration::from_secs(5), || {
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "h2_protocol")],
        ) >= Some(2.0)
    });
}

#[test]
fn a_header_block_that_does_not_complete_in_time_closes_the_connection() {
    let b = Backend::start("b1");
    let t = tether(
        "h2c = true\nheader_timeout = \"1s\"",
        &backend_tables("web", &[&b]),
    );
    // A complete request, then idle for longer than header_timeout: the connection stays.
    let mut h2 = H2::h2c(t.listen(), "localhost");
    assert_eq!(h2.get("/", &[]).status, 200);
    // A HEADERS frame whose block never ends (no END_HEADERS, no CONTINUATION).
    let mut s = raw_h2c(t.listen());
    s.write_all(&frame(HEADERS, 0, 1, &hpack(false, &[])))
        .unwrap();
    let started = Instant::now();
    let (frames, closed) = read_frames(&mut s, Duration::from_secs(8), |f| {
        f.iter().any(|f| f.0 == GOAWAY)
    });
    assert!(
        frames.iter().any(|f| f.0 == GOAWAY) || closed,
        "the connection is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before header_timeout"
    );
    wait_for("the refusal counted", Duration::from_secs(5), || {
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "header_timeout")],
        ) == Some(1.0)
    });
    assert_eq!(
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "h2_protocol")]
        ),
        Some(0.0)
    );
    // The first connection was idle past header_timeout, not in a header block: still open.
    assert!(!h2.is_closed());
    assert_eq!(h2.get("/again", &[]).status, 200);
}
