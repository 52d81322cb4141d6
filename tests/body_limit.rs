//! `max_request_body` (DESIGN.md §12) is one rule, stated once in the outcome stage, on every
//! engine and protocol: a declared length over the limit is answered `413` before any backend
//! is contacted; a body that streams past it (chunked over HTTP/1.1, DATA frames over HTTP/2
//! without a `content-length`) ends the request with `413`; bodies within it pass; each refusal
//! counts as `body_too_large`.

mod common;

use std::io::Write;

use common::h2::{cert_of, tls_fixture, H2};
use common::raw::*;
use common::*;

#[test]
fn max_request_body_is_413_over_http1_and_http2() {
    let b = Backend::start("b1");
    let tls_port = free_port();
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[[server.tls]]
listen = "127.0.0.1:{tls_port}"
certs = [{{ cert = "{cert}", key = "{key}" }}]
[[route]]
pool = "p"
[pool.p]
policy = "round_robin"
max_request_body = 1000
{backends}"#,
        cert = tls_fixture("cert.pem"),
        key = tls_fixture("key.pem"),
        backends = backend_tables("p", std::slice::from_ref(&b)),
    ));
    let rejected = || {
        t.metric(
            "tether_downstream_rejected_total",
            &[("reason", "body_too_large")],
        )
        .unwrap_or(0.0)
    };

    // HTTP/1.1: a declared length over the limit never reaches the backend.
    let (mut s, mut r) = client(&t);
    s.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r, false);
    assert_eq!(status(&head), 413, "{head}");
    assert_eq!(body, b"request body too large\n");
    assert_eq!(
        b.hits(),
        0,
        "the 413 by Content-Length never reached the backend"
    );
    assert_eq!(rejected(), 1.0);

    // HTTP/1.1: a chunked body that grows past the limit ends the request with 413.
    let (mut s, mut r) = client(&t);
    let mut chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b'x'; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&chunked);
    let (head, _) = read_response(&mut r, false);
    assert_eq!(status(&head), 413, "{head}");
    assert_eq!(rejected(), 2.0);

    // A body within the limit passes.
    let ok = post(&t.url("/a"), &[], &"y".repeat(900));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-seen-body-len"), Some("900"));

    // HTTP/2: the same rule on a stream.
    let tls = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let mut c = H2::connect(
        tls,
        cert_of(&tls_fixture("cert.pem")),
        "localhost",
        "localhost",
    );
    let hits = b.hits();
    let big = "z".repeat(5000);
    let declared = c
        .request("POST", "/a", &[("content-length", "5000")], Some(&big))
        .expect("an answer to a declared length over the limit");
    assert_eq!(declared.status, 413, "{declared:?}");
    assert_eq!(
        b.hits(),
        hits,
        "the HTTP/2 413 by content-length never reached the backend"
    );
    assert_eq!(rejected(), 3.0);
    let streamed = c
        .request("POST", "/a", &[], Some(&big))
        .expect("an answer to a streamed body over the limit");
    assert_eq!(streamed.status, 413, "{streamed:?}");
    assert_eq!(rejected(), 4.0);
    let fine = c
        .request("POST", "/a", &[], Some(&"w".repeat(800)))
        .expect("an answer within the limit");
    assert_eq!(fine.status, 200, "{fine:?}");
    assert_eq!(fine.header("x-seen-body-len"), Some("800"));
}
