//! HTTP/1.1 message handling through tether, on raw sockets at both ends: bodies of every framing
//! in both directions (streamed, not buffered whole), HEAD / 204 / 304, 1xx, `Connection:
//! close`, pipelining, an upstream that answers before the request body is done, safe retries on
//! stale upstream connections, and WebSocket tunnels whose backend writes right after its `101`.

mod common;

use common::raw::*;
use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn tether_for(backend: SocketAddr, extra: &str) -> Tether {
    Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "http1-test-secret-0123456789abcdef"
[[route]]
pool = "p"
[pool.p]
policy = "cookie"
{extra}
[[pool.p.backend]]
id = "b1"
addr = "{backend}"
"#
    ))
}

/// Echo backend: answers with the request body, framed as `mode` says.
fn echo(mode: &'static str) -> RawBackend {
    RawBackend::start(move |head, r, w| {
        let body = read_body(head, r);
        match mode {
            "length" => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .unwrap();
                w.write_all(&body).unwrap();
                true
            }
            "chunked" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .unwrap();
                for c in body.chunks(7000) {
                    write!(w, "{:x}\r\n", c.len()).unwrap();
                    w.write_all(c).unwrap();
                    w.write_all(b"\r\n").unwrap();
                }
                w.write_all(b"0\r\n\r\n").unwrap();
                true
            }
            _ => {
                // Close-delimited: no length, the end of the connection ends the body.
                w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .unwrap();
                w.write_all(&body).unwrap();
                false
            }
        }
    })
}

#[test]
fn bodies_of_every_framing_reach_both_ends_intact() {
    for mode in ["length", "chunked", "close"] {
        let b = echo(mode);
        let t = tether_for(b.addr, "");
        // Content-Length request body, 1 MiB.
        let body = pattern(1 << 20);
        let (mut s, mut r) = client(&t);
        write!(
            s,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let (head, got) = read_response(&mut r, false);
        assert_eq!(status(&head), 200, "{mode}: {head}");
        assert!(
            got == body,
            "{mode}: Content-Length body came back intact ({} bytes)",
            got.len()
        );
        // Chunked request body.
        let (mut s, mut r) = client(&t);
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for c in body.chunks(100_000) {
            write!(s, "{:x}\r\n", c.len()).unwrap();
            s.write_all(c).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let (head, got) = read_response(&mut r, false);
        assert_eq!(status(&head), 200, "{mode}: {head}");
        assert!(
            got == body,
            "{mode}: chunked body came back intact ({} bytes)",
            got.len()
        );
    }
}

#[test]
fn bodies_are_streamed_not_buffered() {
    // The backend sends the first half of a chunked response, then waits until the client has
    // seen it before sending the rest: a proxy that buffered the whole body would never deliver.
    let (seen_tx, seen_rx) = mpsc::channel::<()>();
    let seen_rx = Mutex::new(seen_rx);
    let b = RawBackend::start(move |head, r, w| {
        read_body(head, r);
        w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .unwrap();
        w.flush().unwrap();
        let _ = seen_rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
        w.write_all(b"6\r\nsecond\r\n0\r\n\r\n").unwrap();
        true
    });
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head(&mut r).unwrap();
    assert_eq!(status(&head), 200);
    let size = read_line(&mut r);
    assert_eq!(
        size.trim(),
        "5",
        "first chunk arrives before the backend sends the rest"
    );
    let mut first = [0u8; 7];
    r.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"first\r\n");
    seen_tx.send(()).unwrap();
    assert_eq!(read_line(&mut r).trim(), "6");

    // Request direction: the backend sees the first chunk of the body before the client sends
    // the last one.
    let (part_tx, part_rx) = mpsc::channel::<Vec<u8>>();
    let part_tx = Mutex::new(part_tx);
    let b = RawBackend::start(move |_head, r, w| {
        let size = read_line(r);
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk).unwrap();
        part_tx.lock().unwrap().send(chunk[..n].to_vec()).unwrap();
        // The rest: one more chunk and the end.
        let mut rest = Vec::new();
        loop {
            let l = read_line(r);
            rest.extend_from_slice(l.as_bytes());
            if l.trim() == "0" {
                read_line(r);
                break;
            }
        }
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        true
    });
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhead\r\n")
        .unwrap();
    let got = part_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the backend got the first chunk while the body was still open");
    assert_eq!(got, b"head");
    s.write_all(b"4\r\ntail\r\n0\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 200);
    assert_eq!(body, b"ok");
}

#[test]
fn head_204_and_304_carry_no_body_and_keep_the_connection() {
    let b = RawBackend::start(|head, r, w| {
        read_body(head, r);
        let path = head.split_whitespace().nth(1).unwrap().to_owned();
        match path.as_str() {
            "/204" => w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            "/304" => w
                .write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
                .unwrap(),
            _ if head.starts_with("HEAD") => w
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
                .unwrap(),
            _ => w
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
                .unwrap(),
        }
        true
    });
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    s.write_all(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut r, true);
    assert_eq!(status(&head), 200);
    assert_eq!(header_of(&head, "content-length").as_deref(), Some("1234"));
    for path in ["/204", "/304"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut r, false);
        assert_eq!(status(&head), path[1..].parse::<u16>().unwrap(), "{head}");
    }
    // The same connection still works: nothing was left over from the bodiless answers.
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 200);
    assert_eq!(body, b"body");
}

#[test]
fn expect_100_continue_is_relayed_before_the_body() {
    let b = RawBackend::start(|head, r, w| {
        if header_of(head, "expect").is_some() {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
            w.flush().unwrap();
        }
        let body = read_body(head, r);
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        w.write_all(&body).unwrap();
        true
    });
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // The client waits for the 100 before sending the body (a read timeout fails the test).
    let interim = read_head(&mut r).unwrap();
    assert_eq!(status(&interim), 100, "{interim}");
    s.write_all(b"hello").unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 200);
    assert_eq!(body, b"hello");
}

#[test]
fn connection_close_and_pipelining() {
    let b = RawBackend::start(|head, r, w| {
        read_body(head, r);
        let path = head.split_whitespace().nth(1).unwrap().to_owned();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
            path.len()
        )
        .unwrap();
        true
    });
    let t = tether_for(b.addr, "");
    // Three requests in one write: answered in order on the same connection.
    let (mut s, mut r) = client(&t);
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    for want in ["/one", "/two", "/three"] {
        let (head, body) = read_response(&mut r, false);
        assert_eq!(status(&head), 200);
        assert_eq!(body, want.as_bytes());
    }
    // Connection: close is answered with close, and the connection ends.
    s.write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(
        header_of(&head, "connection").as_deref(),
        Some("close"),
        "{head}"
    );
    assert_eq!(body, b"/last");
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the response"
    );
    // The backend never sees the client's connection options.
    let last = b.heads().into_iter().last().unwrap();
    assert_ne!(
        header_of(&last, "connection").as_deref(),
        Some("close"),
        "{last}"
    );
}

#[test]
fn an_answer_before_the_request_body_ends_is_delivered_and_the_connection_closed() {
    // The backend refuses after the head without reading the (large) body, then closes the way
    // real servers do (a lingering close: it drains what still comes instead of resetting the
    // connection, which would destroy its own answer in flight).
    let b = RawBackend::start(|_head, r, w| {
        w.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n").unwrap();
        let _ = w.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 65536];
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
        false
    });
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    s.write_all(&pattern(64 * 1024)).unwrap();
    // The client keeps the rest of its body; the answer arrives anyway.
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 413, "{head}");
    assert_eq!(body, b"too big\n");
    assert_eq!(
        header_of(&head, "connection").as_deref(),
        Some("close"),
        "{head}"
    );
    // The next connection is served normally.
    let (mut s2, mut r2) = client(&t);
    s2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut r2, false);
    assert_eq!(status(&head), 413);
}

/// A backend that serves the first request of each connection and, on the second one, closes
/// the connection without answering: what a backend whose idle timeout fired looks like to a
/// proxy that reuses the connection just then. Counts every POST head it receives, answered or
/// dropped.
fn closes_reused_connections(posts: Arc<AtomicUsize>) -> RawBackend {
    RawBackend::start(move |head, r, w| {
        if head.starts_with("POST") {
            posts.fetch_add(1, Ordering::SeqCst);
        }
        let _ = read_body(head, r);
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        w.flush().unwrap();
        // The next request on this connection is read (so it reached the backend) and dropped.
        if let Some(next) = read_head(r) {
            if next.starts_with("POST") {
                posts.fetch_add(1, Ordering::SeqCst);
            }
        }
        false
    })
}

#[test]
fn a_get_on_a_stale_upstream_connection_is_retried_and_a_post_is_not() {
    let posts = Arc::new(AtomicUsize::new(0));
    let b = closes_reused_connections(posts.clone());
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    for i in 0..10 {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut r, false);
        assert_eq!(status(&head), 200, "GET {i}: {head}");
        assert_eq!(body, b"ok");
    }
    // A POST whose body reached the backend over such a connection is never replayed: 502,
    // and the backend saw it exactly once. (It may also have gone out on a fresh connection, if
    // the idle one was seen to be closed in time: then it is answered.)
    s.write_all(b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let (head, _) = read_response(&mut r, false);
    assert!(matches!(status(&head), 200 | 502), "{head}");
    // A replay would have happened before the answer: the count is final now.
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST reached the backend exactly once"
    );
}

/// Like [`closes_reused_connections`], recording the request line of every head it receives,
/// answered or dropped.
fn records_and_closes_reused_connections(seen: Arc<std::sync::Mutex<Vec<String>>>) -> RawBackend {
    RawBackend::start(move |head, r, w| {
        let line = |h: &str| h.lines().next().unwrap_or("").to_owned();
        seen.lock().unwrap().push(line(head));
        let _ = read_body(head, r);
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        w.flush().unwrap();
        if let Some(next) = read_head(r) {
            seen.lock().unwrap().push(line(&next));
        }
        false
    })
}

/// The resend rule is one (the outcome stage's), on every engine: after a reused connection
/// turns out closed, a request is sent again only when its method is idempotent and it has no
/// body. A PUT with a body reaches the backend once (answered, or 502); a DELETE without one is
/// sent again and answered.
#[test]
fn a_put_with_a_body_is_never_sent_twice_and_a_bodiless_delete_is_resent() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = records_and_closes_reused_connections(seen.clone());
    let t = tether_for(b.addr, "");
    let (mut s, mut r) = client(&t);
    let count = |what: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(what))
            .count()
    };
    for i in 0..4 {
        // Every second request finds the upstream connection the previous one left idle, which
        // the backend drops on its next request.
        s.write_all(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, _) = read_response(&mut r, false);
        assert_eq!(status(&head), 200, "GET {i}: {head}");
        let put = format!("PUT /doc/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        s.write_all(put.as_bytes()).unwrap();
        let (head, _) = read_response(&mut r, false);
        assert!(matches!(status(&head), 200 | 502), "PUT {i}: {head}");
        assert_eq!(
            count(&format!("PUT /doc/{i} ")),
            1,
            "PUT {i} reached the backend once"
        );
        if status(&head) == 502 {
            // The connection is closed after a failed request: a new one for the next round.
            (s, r) = client(&t);
        }
    }
    for i in 0..4 {
        s.write_all(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, _) = read_response(&mut r, false);
        assert_eq!(status(&head), 200, "GET {i}: {head}");
        let del = format!("DELETE /doc/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(del.as_bytes()).unwrap();
        let (head, body) = read_response(&mut r, false);
        assert_eq!(
            status(&head),
            200,
            "DELETE {i} is sent again and answered: {head}"
        );
        assert_eq!(body, b"ok");
    }
}

#[test]
fn websocket_tunnels_survive_a_backend_that_writes_right_after_101() {
    // The 101 and the backend's first frame leave in one write: the tunnel must deliver the
    // frame and stay open for the echo (Pingora 0.9.1's proxy closes some of these tunnels,
    // cloudflare/pingora#946; the fast path must not).
    let b = RawBackend::start(|_head, r, w| {
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello").unwrap();
        w.flush().unwrap();
        let mut buf = [0u8; 256];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    if w.write_all(&buf[..n]).is_err() {
                        return false;
                    }
                }
            }
        }
    });
    let t = tether_for(b.addr, "");
    let mut failures = Vec::new();
    for i in 0..300 {
        let (mut s, mut r) = client(&t);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
        let head = read_head(&mut r).unwrap_or_default();
        if !head.starts_with("HTTP/1.1 101") {
            failures.push(format!("{i}: {head}"));
            continue;
        }
        let mut first = [0u8; 7];
        if r.read_exact(&mut first).is_err() || &first != b"\x81\x05hello" {
            failures.push(format!("{i}: first frame lost"));
            continue;
        }
        s.write_all(b"\x81\x04ping").unwrap();
        let mut echo = [0u8; 6];
        if r.read_exact(&mut echo).is_err() || &echo != b"\x81\x04ping" {
            failures.push(format!("{i}: tunnel closed before the echo"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 300 tunnels failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(b.conns.load(Ordering::SeqCst) >= 300);
}
