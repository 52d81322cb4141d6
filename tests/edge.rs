//! The edge (DESIGN.md §12): head deadline and size limits, body limits, and the HTTP/1.1 message
//! rules, each sent as raw bytes. For every refused request: the status (or the close), the
//! backend received at most one well-formed request (none, for a refused head), and a normal
//! request on a fresh connection then succeeds.

mod common;

use common::raw::*;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// An echo-ish backend that records every head and answers 200 with the path.
fn recording() -> RawBackend {
    RawBackend::start(|head, r, w| {
        read_body(head, r);
        let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
            path.len()
        )
        .unwrap();
        true
    })
}

fn edge_tether(b: &RawBackend, server_extra: &str, pool_extra: &str) -> Tether {
    Tether::start_with(
        &format!(
            r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
{server_extra}
[[route]]
pool = "p"
[pool.p]
policy = "round_robin"
{pool_extra}
[[pool.p.backend]]
id = "b1"
addr = "{}"
"#,
            b.addr
        ),
        &[],
        &[],
    )
}

/// Sends `bytes` on a fresh connection; returns the status of the answer (0: closed without
/// one) and whether the connection was then closed.
fn send_raw(t: &Tether, bytes: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(t.listen()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let closed = loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

fn normal_request_works(t: &Tether) {
    let (mut s, mut r) = client(t);
    s.write_all(b"GET /normal HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"/normal");
}

/// Heads the backend received that are not the probe `GET /normal`.
fn others(b: &RawBackend) -> Vec<String> {
    b.heads()
        .into_iter()
        .filter(|h| !h.starts_with("GET /normal "))
        .collect()
}

#[test]
fn message_rules_refuse_smuggling_shapes() {
    let b = recording();
    let t = edge_tether(&b, "", "");
    let cases: &[(&str, &[u8])] = &[
        (
            "CL.TE",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "TE.CL",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        (
            "TE.TE obfuscated name",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE.TE obfuscated value",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE.TE two codings",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE chunked twice",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "gzip before chunked",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE in HTTP/1.0",
            b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing Content-Length",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "Content-Length list",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
        ),
        (
            "whitespace before colon",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
        ),
        ("NUL", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
        ("bare CR", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
        ("no Host", b"GET /a HTTP/1.1\r\n\r\n"),
        (
            "two Hosts",
            b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        ),
        (
            "obsolete folding",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let (status, closed) = send_raw(&t, bytes);
        assert_eq!(status, 400, "{name}");
        assert!(closed, "{name}: the connection is closed");
        assert!(
            others(&b).is_empty(),
            "{name}: reached the backend: {:?}",
            b.heads()
        );
        normal_request_works(&t);
    }
    assert_eq!(
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "bad_request")]
        ),
        Some(cases.len() as f64)
    );
}

#[test]
fn a_bad_chunk_size_closes_and_forwards_nothing_more() {
    let b = recording();
    let t = edge_tether(&b, "", "");
    let (status, closed) = send_raw(
        &t,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(closed, "closed (status {status})");
    assert_ne!(status, 200);
    let seen = others(&b);
    assert!(seen.len() <= 1, "{seen:?}");
    assert!(seen.iter().all(|h| !h.contains("/smuggled")), "{seen:?}");
    normal_request_works(&t);
}

#[test]
fn bytes_pipelined_behind_a_refused_upgrade_are_never_a_request() {
    let b = recording();
    let t = edge_tether(&b, "", "");
    let (status, closed) = send_raw(
        &t,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        status, 200,
        "the backend refused the upgrade with a plain answer"
    );
    assert!(closed);
    let seen = others(&b);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /ws "), "{seen:?}");
    normal_request_works(&t);
}

#[test]
fn size_limits_answer_431_and_413() {
    let b = recording();
    let t = edge_tether(
        &b,
        "max_header_size = \"8KiB\"\nmax_headers = 20",
        "max_request_body = 1000",
    );
    let big = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(send_raw(&t, big.as_bytes()), (431, true));
    let mut many = String::from("GET /a HTTP/1.1\r\nHost: x\r\n");
    for i in 0..25 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(send_raw(&t, many.as_bytes()), (431, true));
    assert_eq!(
        send_raw(
            &t,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        ),
        (413, true)
    );
    // A chunked body that grows past the limit ends the request.
    let mut chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b'x'; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, closed) = send_raw(&t, &chunked);
    assert!(closed);
    assert_eq!(status, 413);
    assert!(
        others(&b)
            .iter()
            .all(|h| !h.contains("Content-Length: 5000")),
        "the 413 by Content-Length never reached the backend"
    );
    normal_request_works(&t);
    let m = |r| t.metric("tether_downstream_rejected_total", &[("reason", r)]);
    assert_eq!(m("header_too_large"), Some(1.0));
    assert_eq!(m("too_many_headers"), Some(1.0));
    assert_eq!(m("body_too_large"), Some(2.0));
}

#[test]
fn slow_heads_are_cut_off_at_header_timeout_while_others_are_served() {
    let b = recording();
    let t = edge_tether(&b, "header_timeout = \"2s\"", "");
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = Instant::now();
    let mut conns: Vec<(TcpStream, usize, Option<Duration>)> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(t.listen()).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0, None)
        })
        .collect();
    let mut normal_ok = 0;
    let mut next_byte = Instant::now();
    // Bounded: at most 8 s (the limit is 2 s; each must be closed by 3 s).
    while start.elapsed() < Duration::from_secs(8) && conns.iter().any(|c| c.2.is_none()) {
        if Instant::now() >= next_byte {
            next_byte += Duration::from_secs(1);
            for (s, sent, closed) in conns.iter_mut() {
                if closed.is_none() && *sent < head.len() {
                    let _ = s.write_all(&head[*sent..*sent + 1]);
                    *sent += 1;
                }
            }
        }
        for (s, _, closed) in conns.iter_mut() {
            if closed.is_some() {
                continue;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => *closed = Some(start.elapsed()),
                Ok(n) => {
                    assert!(
                        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                        "a trickled head gets 408"
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(start.elapsed()),
            }
        }
        normal_request_works(&t);
        normal_ok += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, (_, _, closed)) in conns.iter().enumerate() {
        let at = closed.unwrap_or_else(|| panic!("connection {i} still open after 8 s"));
        assert!(
            at <= Duration::from_secs(3) + Duration::from_millis(500),
            "connection {i} closed after {at:?}"
        );
    }
    assert!(
        normal_ok > 10,
        "a normal client was served meanwhile ({normal_ok} requests)"
    );
    assert!(
        others(&b).is_empty(),
        "no trickled head reached the backend"
    );
    assert_eq!(
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "header_timeout")]
        ),
        Some(200.0)
    );
}
