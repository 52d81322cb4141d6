//! The client's side of one request on the HTTP/1.1 loop (DESIGN.md §11, §19): its head and
//! the buffer it sits in, its body's progress, the bytes read beyond it, whether the connection
//! goes on, what was written to it — and tether's own answers written to it, the watch on a
//! client whose request waits in a queue, and how a failed request is told.
//!
//! Owns: the state `fast` (the connection loop) and `relay` (the exchange with a backend)
//! share about one request. Must not touch: IO order (theirs), decisions (the stages').

use std::time::Duration;

use pingora::protocols::Stream;
use pingora::Error;

use crate::engine::body::Body;
use crate::engine::wire;
use crate::h1::buf::Buf;
use crate::h1::{RequestHead, RequestView};
use crate::path::head::ClientIp;
use crate::path::outcome;
use crate::path::pick;
use crate::path::respond;
use crate::state::backend::Exchanged;

/// How long a read of the request body may wait for the client.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of the client connection after one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It may carry another request.
    KeepAlive,
    /// It must be closed; `unread`: the client may still be sending (linger before closing).
    Close { unread: bool },
}

/// The client's side of one request, as the relay sees it.
pub struct Down<'a> {
    pub stream: &'a mut Stream,
    pub head: &'a RequestHead,
    /// The buffer the head was read into: the head, then what came after it (body bytes, a
    /// pipelined request). Kept intact until the request is accounted.
    pub hbuf: &'a Buf,
    pub head_len: usize,
    /// Bytes after the head in `hbuf` that belong to the body.
    pub in_head: usize,
    pub client: ClientIp,
    pub tls: bool,
    pub body: Body,
    /// Body bytes read so far (for the pool's `max_request_body` on a chunked body).
    pub body_read: u64,
    /// Later reads of the request (body, then whatever follows it).
    pub bbuf: Option<Buf>,
    /// Bytes the client sent while its request waited in a queue (after its body).
    pub extra: Option<Buf>,
    /// The client wants the connection kept, and the server is not shutting down.
    pub keep_alive: bool,
    /// The status of the final response head written to the client, once one was.
    pub written: Option<u16>,
}

impl<'a> Down<'a> {
    /// The request head, for the stages (borrows the head and its buffer, not `self`).
    pub fn view(&self) -> RequestView<'a> {
        let (head, hbuf) = (self.head, self.hbuf);
        head.view(hbuf.data())
    }

    /// The body bytes that came with the head.
    pub fn head_body(&self) -> &'a [u8] {
        let hbuf = self.hbuf;
        &hbuf.data()[self.head_len..self.head_len + self.in_head]
    }
}

/// Why a request could not be answered by its backend.
pub struct Failed {
    /// What the client gets, if nothing was sent to it yet (0: nothing can be sent).
    pub status: u16,
    pub retry_after: Option<u64>,
    pub error: &'static str,
    /// What to hold against the backend (outlier detection), if anything.
    pub backend: Option<Exchanged>,
}

impl Failed {
    /// The backend's side failed after the connection was made: 502, or 504 on a timeout.
    pub fn from(e: &Error) -> Failed {
        Failed {
            status: outcome::upstream_status(e),
            retry_after: None,
            error: e.etype().as_str(),
            backend: Some(Exchanged::Failed),
        }
    }

    /// Nothing to hold against a backend (already counted, or not its fault).
    pub fn local(status: u16, retry_after: Option<u64>, error: &'static str) -> Failed {
        Failed {
            status,
            retry_after,
            error,
            backend: None,
        }
    }

    /// The client went away: nothing more can be sent to it.
    pub fn client() -> Failed {
        Failed::local(0, None, "client_closed")
    }

    pub fn internal(what: &'static str) -> Failed {
        Failed::local(500, None, what)
    }
}

/// Writes one of tether's own answers. `close`: the connection closes after it (said in the
/// head).
pub async fn write_local(d: &mut Down<'_>, l: &respond::Local, close: bool) -> Result<(), Failed> {
    let close = close || !d.keep_alive || !d.body.is_done();
    let status = l.head.status.as_u16();
    let mut out = Vec::with_capacity(256 + l.body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in l.head.headers.iter() {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if d.head.is_http10() {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if d.view().method() != b"HEAD" {
        out.extend_from_slice(l.body.as_bytes());
    }
    if close {
        d.keep_alive = false;
    }
    d.written = Some(status);
    wire::write_all(d.stream, &out)
        .await
        .map_err(|_| Failed::client())
}

/// The reason phrase tether writes with `status`.
pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// The client side of a request waiting in the circuit-breaker queue: a client that closes its
/// connection is seen once its request body is done (what it sends meanwhile — a pipelined
/// request — is kept for later, and then the wait can no longer tell).
pub struct Watch<'w> {
    stream: &'w mut Stream,
    extra: &'w mut Option<Buf>,
    body_done: bool,
}

impl<'w> Watch<'w> {
    pub fn of<'d>(d: &'w mut Down<'d>) -> Watch<'w> {
        Watch {
            body_done: d.body.is_done(),
            stream: d.stream,
            extra: &mut d.extra,
        }
    }
}

impl pick::Client for Watch<'_> {
    async fn gone(&mut self) {
        if self.body_done && self.extra.is_none() {
            match wire::read_pooled(self.stream, self.extra).await {
                // The client closed (or broke) the connection.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        std::future::pending::<()>().await
    }
}
