//! The HTTP/1.1 loop (DESIGN.md §11, §19): tether's own codec over the listener's streams,
//! sequential per connection — wait for bytes (holding no buffer) → read and parse the head in
//! a pooled buffer → route → limit → pick → write the head upstream from the client's own
//! bytes → relay the body → read the response head → write it downstream → relay its body →
//! reuse both connections. No task, channel or watcher per request or idle connection.
//!
//! Owns: the order of IO on one client connection, and what it keeps between requests (its
//! stream, and the bytes of a pipelined request if any). Decisions are the stages' (`route`,
//! `authenticate`, `limit`, `pick`, `forward`, `respond`, `account`), and how a request ends —
//! its answers, failover statuses, the resend rule, error → status, blame — is `outcome`'s,
//! the same calls the HTTP/2 streams make (`stream`). The exchange with the backend is
//! `relay`'s; a connection that speaks HTTP/2 (ALPN `h2`, or the prior-knowledge preface with
//! `h2c` on) is handed to the HTTP/2 loop (`h2`). Must not touch: selection rules,
//! configuration, where a message ends (the codec's).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use crate::config::Limits;
use crate::engine::body::Body;
use crate::engine::down::{reason, write_local, Down, Failed, Next, Watch};
use crate::engine::h2;
use crate::engine::relay;
use crate::engine::shared::Shared;
use crate::engine::wire::{self, Wait};
use crate::h1::buf::{self, Boxed, Buf};
use crate::h1::RequestHead;
use crate::path::account::{self, End};
use crate::path::exchange::{Active, Exchange, CLIENT_CLOSED};
use crate::path::head::ClientIp;
use crate::path::outcome::{self, Front};
use crate::path::pick;
use crate::path::read::Reject;
use crate::path::route::{self, RequestIds};
use crate::snapshot::Store;
use crate::state::upstream;

pub use crate::engine::wire::FIRST_REQUEST_AFTER_SHUTDOWN;

/// The fast-path service: one per process, shared by every worker thread.
pub struct Fast {
    shared: Arc<Shared>,
}

impl Fast {
    pub fn new(store: Arc<Store>, ids: Arc<RequestIds>) -> Fast {
        Fast {
            shared: Shared::new(store, ids),
        }
    }
}

impl std::ops::Deref for Fast {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

#[async_trait]
impl ServerApp for Fast {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let client = peer(&stream);
            h2::serve_boxed(self.shared.clone(), stream, None, client, true, shutdown).await;
            return None;
        }
        self.serve(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        upstream::clear();
        crate::state::upstream_h2::clear();
    }
}

/// A client connection between requests: its stream, and the bytes already read of the next
/// request (none, and no buffer, while it waits).
struct Conn {
    stream: Stream,
    buf: Option<Buf>,
    client: ClientIp,
    tls: bool,
}

impl Fast {
    /// Serves HTTP/1.x requests on one client connection until it closes (or hands it to the
    /// HTTP/2 loop when it opens with the prior-knowledge preface and `h2c` is on).
    pub(crate) async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let client = peer(&stream);
        let tls = stream.get_ssl_digest().is_some();
        let mut conn = Conn {
            stream,
            buf: None,
            client,
            tls,
        };
        // A new connection is a request on its way: until that first request is answered it
        // counts as one in progress (a graceful shutdown waits for it), and its first bytes are
        // read even when the shutdown began after it was accepted.
        let mut fresh = Some(Active::begin());
        loop {
            let limits = self.store.limits();
            if conn.buf.is_none() {
                // An idle keep-alive connection holds only its stream until bytes come.
                let wait = wire::wait_first(
                    &mut conn.stream,
                    &mut conn.buf,
                    shutdown,
                    limits.keepalive_timeout,
                    fresh.is_some(),
                );
                if let Wait::Done = wait.await {
                    wire::close(&mut conn.stream, false).await;
                    return;
                }
            }
            if fresh.is_some()
                && conn
                    .buf
                    .as_ref()
                    .is_some_and(|b| b.data().starts_with(b"PRI "))
            {
                // Cleartext HTTP/2 with prior knowledge: the preface's first bytes are read.
                if !conn.tls && self.store.h2c() {
                    let pre = conn.buf.take();
                    drop(fresh);
                    h2::serve_boxed(
                        self.shared.clone(),
                        conn.stream,
                        pre,
                        client,
                        false,
                        shutdown,
                    )
                    .await;
                    return;
                }
            }
            // Everything about the request lives in its own allocation, freed when it is done:
            // the connection's task keeps only the small state of the wait above. (Boxed in a
            // statement of its own: a temporary in the awaited expression would be kept in
            // this future's state, making every idle connection as large as a request.)
            let request = Box::pin(self.request(&mut conn, limits, shutdown));
            let next = request.await;
            // The first request is done: from here on the connection is an idle keep-alive one
            // between requests, which a shutdown closes.
            fresh = None;
            match next {
                Next::KeepAlive => buf::release_if_empty(&mut conn.buf),
                Next::Close { unread } => {
                    conn.buf = None;
                    wire::close(&mut conn.stream, unread).await;
                    return;
                }
            }
        }
    }

    /// One request on `conn`, whose first bytes are in its buffer.
    async fn request(&self, conn: &mut Conn, limits: Limits, shutdown: &ShutdownWatch) -> Next {
        // The head's table comes from the thread's pool: the request's state stays small.
        let mut head: Boxed<RequestHead> = Boxed::take();
        let head_len = match read_head(conn, &mut head, &limits).await {
            Ok(n) => n,
            Err(None) => return Next::Close { unread: false },
            Err(Some(r)) => {
                self.reject(&mut conn.stream, r).await;
                // What the client sent beyond the refused head is still unread.
                return Next::Close { unread: true };
            }
        };
        let hbuf = conn.buf.take().expect("a head was read into the buffer");
        let view = head.view(hbuf.data());
        let keep_alive = view.keep_alive() && !*shutdown.borrow();
        let mut d = Down {
            stream: &mut conn.stream,
            head: &head,
            hbuf: &hbuf,
            head_len,
            in_head: 0,
            client: conn.client,
            tls: conn.tls,
            body: Body::new(head.framing()),
            body_read: 0,
            bbuf: None,
            extra: None,
            keep_alive,
            written: None,
        };
        let next = self.exchange(&mut d).await;
        let Down {
            in_head,
            body,
            bbuf,
            extra,
            ..
        } = d;
        if next != Next::KeepAlive || !body.is_done() {
            return Next::Close {
                unread: !body.is_done(),
            };
        }
        // What follows the request: a pipelined request's bytes, if any.
        let mut hbuf = hbuf;
        hbuf.consume(head_len + in_head);
        match leftover([Some(hbuf), bbuf, extra]) {
            Some(rest) => {
                conn.buf = rest;
                Next::KeepAlive
            }
            None => Next::Close { unread: true },
        }
    }

    /// Answers a head refused at the edge (408, 431, 400) and counts it: nothing of it reached
    /// a backend.
    async fn reject(&self, stream: &mut Stream, r: Reject) {
        self.store.metrics().rejected[r.index()].inc();
        let body = r.message();
        let reason = reason(r.status());
        let resp = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.status(),
            body.len()
        );
        let _ = wire::within(
            Some(Duration::from_secs(5)),
            wire::write_all(stream, resp.as_bytes()),
        )
        .await;
        tracing::debug!(reason = r.reason(), "request refused");
    }

    /// One request: the stages in order, then the account. Returns whether the client
    /// connection may go on.
    async fn exchange(&self, d: &mut Down<'_>) -> Next {
        let view = d.view();
        let mut ex = route::start(&self.store, &self.ids, &view);
        let (status, error, backend, next) = match self.stages(&mut ex, d).await {
            Ok(next) => {
                let status = d.written.unwrap_or(0);
                (status, None, outcome::blame(&ex, status, None), next)
            }
            Err(f) => {
                let status = if let Some(s) = d.written {
                    // The response had started: the client sees it cut short.
                    s
                } else if f.status == 0 {
                    CLIENT_CLOSED // the client went away: nobody to answer
                } else {
                    if let Ok(l) = outcome::local(&ex, f.status, f.retry_after) {
                        let _ = write_local(d, &l, true).await;
                    }
                    f.status
                };
                (
                    status,
                    Some(f.error),
                    f.backend,
                    Next::Close {
                        unread: !d.body.is_done(),
                    },
                )
            }
        };
        let status = outcome::final_status(&ex, Some(status));
        let end = End {
            status,
            error,
            backend,
        };
        account::account(&self.store, &mut ex, &view, d.client, end);
        next
    }

    async fn stages(&self, ex: &mut Exchange, d: &mut Down<'_>) -> Result<Next, Failed> {
        let view = d.view();
        match outcome::front(&self.store, ex, &view, d.client)
            .await
            .map_err(|e| Failed::from(&e))?
        {
            Front::Forward => {}
            Front::Queued => {
                let w = pick::waiting(ex, &view, d.client);
                if let Err(r) = pick::admit(ex, w, &mut Watch::of(d)).await {
                    return match outcome::queue_refusal(r) {
                        None => Err(Failed::local(0, None, r.as_str())),
                        Some((status, retry_after)) => {
                            let l = outcome::local(ex, status, Some(retry_after))
                                .map_err(|e| Failed::from(&e))?;
                            write_local(d, &l, false).await?;
                            Ok(Next::KeepAlive)
                        }
                    };
                }
            }
            Front::Answer { local, close } => {
                write_local(d, &local, close).await?;
                return Ok(if close {
                    Next::Close {
                        unread: !d.body.is_done(),
                    }
                } else {
                    Next::KeepAlive
                });
            }
        }
        // The body bytes that came with the head (a chunked body is checked, and may be over
        // the pool's limit already).
        relay::start_body(&self.store, ex, d)?;
        relay::forward(&self.store, &self.upstreams, ex, d).await
    }
}

/// The client's address, from the connection's socket.
fn peer(stream: &Stream) -> ClientIp {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Reads until the connection's buffer holds a complete request head that the codec accepts,
/// within `header_timeout` (from now: the head's first bytes just came). Its length; `Err(None)`
/// when the client closed or failed first, `Err(Some)` for a refusal.
async fn read_head(
    conn: &mut Conn,
    head: &mut RequestHead,
    limits: &Limits,
) -> Result<usize, Option<Reject>> {
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    loop {
        let Some(b) = conn.buf.as_mut() else {
            return Err(None);
        };
        match head.parse(b.data(), limits) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(r) => return Err(Some(codec_reject(r))),
        }
        if b.is_full() {
            // A head larger than a pooled buffer, within `max_header_size`: a buffer of that
            // size for this head (the parse above refuses one past the limit).
            if b.capacity() >= limits.max_header_size {
                return Err(Some(Reject::HeaderTooLarge));
            }
            b.grow(limits.max_header_size);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match wire::within(Some(left), wire::read_into(&mut conn.stream, b)).await {
            Err(()) => return Err(Some(Reject::HeaderTimeout)),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// The codec's refusal as the read stage's (the same reasons and metric labels).
fn codec_reject(r: crate::h1::Reject) -> Reject {
    match r {
        crate::h1::Reject::HeaderTooLarge => Reject::HeaderTooLarge,
        crate::h1::Reject::TooManyHeaders => Reject::TooManyHeaders,
        crate::h1::Reject::BadRequest(why) => Reject::BadRequest(why),
    }
}

/// The bytes read beyond a finished request, in order, in one buffer: `None` if they do not
/// fit one (the connection then closes; only a client that pipelines more than a buffer while
/// its request waits in a queue gets there).
fn leftover(parts: [Option<Buf>; 3]) -> Option<Option<Buf>> {
    let mut out: Option<Buf> = None;
    for p in parts.into_iter().flatten() {
        if p.is_empty() {
            continue;
        }
        match out.as_mut() {
            None => out = Some(p),
            Some(o) => {
                let room = o.spare_mut();
                if room.len() < p.len() {
                    return None;
                }
                room[..p.len()].copy_from_slice(p.data());
                o.filled(p.len());
            }
        }
    }
    Some(out)
}
