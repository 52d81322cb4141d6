//! The exchange with the backend on the HTTP/1.1 loop (DESIGN.md §11, §19): connect (failing
//! over on connection errors), write the request head from the client's own bytes with the
//! forward stage's edits and the body bytes already read in one write, relay the rest of the
//! body while watching for an early or interim response, write the response head with the
//! respond stage's edits, relay the response body, give the connection back for reuse, or turn
//! the pair into a tunnel after a `101`.
//!
//! Owns: the order of IO with one backend for one request, and when an upstream connection may
//! be reused. Must not touch: statuses and retry rules (`outcome`'s), where a message ends (the
//! codec's, walked by `body`).

use std::ops::Range;
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use pingora::{Error, ErrorType};
use smallvec::SmallVec;

use crate::engine::body::Body;
use crate::engine::down::{Down, Failed, Next, Watch, BODY_READ_TIMEOUT};
use crate::engine::wire;
use crate::h1::buf::{self, Boxed, Buf};
use crate::h1::{self as codec, Framing, ResponseError, ResponseHead, ResponseView};
use crate::path::account;
use crate::path::exchange::Exchange;
use crate::path::forward::{self, Downstream};
use crate::path::outcome;
use crate::path::respond;
use crate::snapshot::Store;
use crate::state::upstream::{self, Conn, Upstreams};

pub(super) use crate::engine::attempt::{closed, fail_over, upstream_failed, Relayed};

/// The largest response head tether reads (a pooled buffer first, grown up to this).
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Walks the body bytes that came with the head: how many of them belong to the body, and
/// whether a chunked body is already malformed or over the pool's limit.
pub fn start_body(store: &Store, ex: &Exchange, d: &mut Down<'_>) -> Result<(), Failed> {
    let hbuf = d.hbuf;
    let rest = &hbuf.data()[d.head_len..];
    let step = d.body.step(rest, None).map_err(|_| bad_chunk())?;
    d.in_head = step.consumed;
    d.body_read = d.body.data_len(step.consumed as u64);
    if d.body.framing() == Framing::Chunked && outcome::body_exceeds(store, ex, d.body_read) {
        return Err(Failed::local(413, None, "body_too_large"));
    }
    Ok(())
}

fn bad_chunk() -> Failed {
    Failed::local(400, None, "bad_chunked_body")
}

/// The forward stage's IO: connect (failing over on connection errors), send the request,
/// relay the response.
pub async fn forward(
    store: &Store,
    upstreams: &Upstreams,
    ex: &mut Exchange,
    d: &mut Down<'_>,
) -> Result<Next, Failed> {
    if ex
        .route()
        .is_some_and(|(_, _, pool)| pool.conf.protocol.is_h2())
    {
        return crate::engine::h1h2::forward(store, upstreams, ex, d).await;
    }
    let view = d.view();
    let resendable = outcome::may_resend(view.method(), d.body.framing().has_body());
    let mut fresh_only = false;
    loop {
        let (got, key, read_timeout) = connect(upstreams, ex, fresh_only).await?;
        let e = match got {
            Ok(conn) => match relay(store, ex, d, conn, read_timeout, key).await {
                Relayed::Done(next) => return Ok(next),
                Relayed::Failed(f) => return Err(f),
                Relayed::StaleConnection(e) => {
                    // A reused connection the backend had closed: nothing reached it, and no
                    // response byte came back.
                    if resendable {
                        fresh_only = true;
                        continue;
                    }
                    return Err(Failed::from(&e));
                }
                Relayed::Refused(e) => e,
            },
            Err(e) => e,
        };
        let client = d.client;
        fail_over(store, ex, &view, client, &e, &mut Watch::of(d)).await?;
        fresh_only = false;
    }
}

/// A connection for the exchange's current backend (the exchange holds it from now, its send
/// time set): a fresh one when `fresh_only`, else an idle one if any. With the backend's
/// connection key and read timeout.
pub(super) async fn connect(
    upstreams: &Upstreams,
    ex: &mut Exchange,
    fresh_only: bool,
) -> Result<(pingora::Result<Conn>, upstream::Key, Duration), Failed> {
    ex.hold();
    let (pool, u) = ex
        .upstream()
        .ok_or_else(|| Failed::internal("no_backend"))?;
    u.sent_at.get_or_insert_with(Instant::now);
    let b = &pool.backends[u.pick.backend as usize];
    let (key, read_timeout) = (b.conn_key, pool.conf.read_timeout);
    let got = if fresh_only {
        Box::pin(upstreams.fresh(&b.peer)).await
    } else {
        upstreams.get(key, &b.peer).await
    };
    Ok((got, key, read_timeout))
}

/// The backend's side of one attempt.
pub(super) struct Up {
    pub(super) stream: Stream,
    pub(super) reused: bool,
    pub(super) timeout: Duration,
    /// Response bytes read and not yet relayed.
    pub(super) rbuf: Option<Buf>,
    /// Request body bytes sent beyond the head's.
    pub(super) body_sent: bool,
}

impl Up {
    /// Reads more of the response, within the pool's `read_timeout`.
    /// Waits holding no buffer when none holds unread bytes (many requests may wait for their
    /// backends at once on one thread: HTTP/2 streams).
    pub(super) async fn read(&mut self) -> Result<usize, Box<Error>> {
        if let Some(b) = self.rbuf.as_mut().filter(|b| b.is_full()) {
            if b.capacity() >= MAX_RESPONSE_HEAD {
                return Err(wire::upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    "response head too large",
                    None,
                ));
            }
            b.grow(MAX_RESPONSE_HEAD);
        }
        let r = wire::within(
            Some(self.timeout),
            wire::read_pooled(&mut self.stream, &mut self.rbuf),
        )
        .await;
        buf::release_if_empty(&mut self.rbuf);
        timed(
            r,
            ErrorType::ReadTimedout,
            ErrorType::ReadError,
            "reading the response",
        )
    }

    /// Writes to the backend, within the pool's `read_timeout`.
    pub(super) async fn write(&mut self, a: &[u8], b: &[u8]) -> Result<(), Box<Error>> {
        let r = wire::within(Some(self.timeout), wire::write_two(&mut self.stream, a, b)).await;
        timed(
            r,
            ErrorType::WriteTimedout,
            ErrorType::WriteError,
            "writing the request",
        )
    }

    pub(super) fn data(&self) -> &[u8] {
        self.rbuf.as_ref().map_or(&[], |b| b.data())
    }

    pub(super) fn consume(&mut self, n: usize) {
        if let Some(b) = self.rbuf.as_mut() {
            b.consume(n);
        }
        buf::release_if_empty(&mut self.rbuf);
    }
}

/// An upstream IO step under a deadline, as the error the outcome rules read: `timeout` when
/// the deadline passed, `failed` (with the IO error as cause) when the IO failed.
fn timed<T>(
    r: Result<std::io::Result<T>, ()>,
    timeout: ErrorType,
    failed: ErrorType,
    what: &'static str,
) -> Result<T, Box<Error>> {
    match r {
        Err(()) => Err(wire::upstream_error(timeout, what, None)),
        Ok(Err(e)) => Err(wire::upstream_error(failed, what, Some(e))),
        Ok(Ok(v)) => Ok(v),
    }
}

/// What the response head parse found.
pub(super) enum Parsed {
    /// Not complete yet.
    Partial,
    /// An interim (1xx) head of this many bytes.
    Interim(usize),
    /// The final head, of this many bytes.
    Final(usize),
}

pub(super) fn parse(
    resp: &mut ResponseHead,
    up: &Up,
    head_request: bool,
) -> Result<Parsed, ResponseError> {
    match resp.parse(up.data(), head_request, MAX_RESPONSE_HEAD)? {
        None => Ok(Parsed::Partial),
        Some(n) if resp.is_interim() => Ok(Parsed::Interim(n)),
        Some(n) => Ok(Parsed::Final(n)),
    }
}

/// One attempt on `conn`: the request out, the response back.
async fn relay(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down<'_>,
    conn: Conn,
    read_timeout: Duration,
    key: upstream::Key,
) -> Relayed {
    let mut up = Up {
        stream: conn.stream,
        reused: conn.reused,
        timeout: read_timeout,
        rbuf: None,
        body_sent: false,
    };
    let view = d.view();
    let head_request = view.method() == b"HEAD";
    let upgrade_req = view.is_upgrade();
    // The head, from the client's bytes with the forward stage's edits, and the body bytes
    // that came with it: one write.
    let down = Downstream {
        client: d.client,
        tls: d.tls,
    };
    let mut out = buf::take();
    let written = forward::request_edits(ex, &view, &down, |e| {
        let edits = codec::Edits {
            drop_names: e.drop,
            drop_if: None,
            add: e.add,
            reframe: false,
        };
        write_head(&mut out, |o| {
            codec::write_request(d.head, d.hbuf.data(), &edits, o)
        })
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "request head could not be written upstream");
        return Relayed::Failed(Failed::internal("request_head"));
    }
    let body = d.head_body();
    let (a, b) = append(&mut out, body);
    if let Err(e) = up.write(a, b).await {
        return if up.reused {
            Relayed::StaleConnection(e)
        } else {
            upstream_failed(store, ex, e)
        };
    }
    out.consume(out.len());
    // The request body, while watching for an early (or interim) response.
    let mut resp: Boxed<ResponseHead> = Boxed::take();
    let mut final_len = None;
    while !d.body.is_done() && final_len.is_none() {
        tokio::select! {
            biased;
            r = up.read() => {
                match r {
                    Ok(n) if n > 0 => {}
                    Ok(_) => return response_failed(store, ex, d, &up, closed()),
                    Err(e) => return response_failed(store, ex, d, &up, e),
                }
                match interim_or_final(&mut resp, &mut up, d, &mut out, head_request).await {
                    Ok(f) => final_len = f,
                    Err(r) => return r,
                }
            }
            r = wire::within(Some(BODY_READ_TIMEOUT), wire::read_pooled(d.stream, &mut d.bbuf)) => {
                match r {
                    Ok(Ok(n)) if n > 0 => {}
                    // The client closed, failed or stalled mid-body.
                    _ => return Relayed::Failed(Failed::client()),
                }
                if let Err(r) = send_body(store, ex, d, &mut up).await {
                    return r;
                }
            }
        }
    }
    while final_len.is_none() {
        match up.read().await {
            Ok(n) if n > 0 => {}
            Ok(_) => return response_failed(store, ex, d, &up, closed()),
            Err(e) => return response_failed(store, ex, d, &up, e),
        }
        match interim_or_final(&mut resp, &mut up, d, &mut out, head_request).await {
            Ok(f) => final_len = f,
            Err(r) => return r,
        }
    }
    let head_len = final_len.unwrap_or(0);
    // The final response head.
    if let Some((pool, u)) = ex.upstream() {
        u.response_head();
        account::passive(store, pool, u.pick.backend, true);
    }
    let switching = upgrade_req && resp.is_switching_protocols();
    if resp.is_switching_protocols() && !switching {
        return upstream_failed(
            store,
            ex,
            wire::upstream_error(ErrorType::InvalidHTTPHeader, "101 without an upgrade", None),
        );
    }
    let up_keepalive = resp.keep_alive(up.data());
    // An HTTP/1.0 client cannot read a chunked body: it gets the data, delimited by the close.
    let dechunk = d.head.is_http10() && resp.framing() == Framing::Chunked;
    if !d.body.is_done()
        || (upgrade_req && !switching)
        || resp.framing() == Framing::UntilClose
        || dechunk
    {
        // The backend answered before the request body was done, refused an upgrade, or ends
        // its body with the close: deliver the answer, then close (the rest of the body, or
        // what was pipelined behind the upgrade request, is never read).
        d.keep_alive = false;
    }
    let close = !d.keep_alive && !switching;
    let http10_keepalive = d.keep_alive && d.head.is_http10();
    let rv = ResponseView {
        head: &resp,
        buf: up.data(),
    };
    let written = respond::response_edits(ex, &rv, |e| {
        let mut add: SmallVec<[(&[u8], &[u8]); 8]> = SmallVec::from_slice(e.add);
        if close {
            add.push((b"Connection", b"close"));
        } else if http10_keepalive {
            add.push((b"Connection", b"keep-alive"));
        }
        let edits = codec::Edits {
            drop_names: e.drop,
            drop_if: None,
            add: &add,
            reframe: dechunk,
        };
        write_head(&mut out, |o| {
            codec::write_response(&resp, rv.buf, &edits, o)
        })
    });
    if let Err(e) = written {
        return upstream_failed(
            store,
            ex,
            wire::upstream_error(ErrorType::InvalidHTTPHeader, e, None),
        );
    }
    d.written = Some(resp.status());
    up.consume(head_len);
    if switching {
        return tunnel(d, up, out).await;
    }
    // The response body: the bytes that came with the head go out with it.
    let mut body = Body::new(resp.framing());
    let mut first = true;
    loop {
        let mut ranges: SmallVec<[Range<usize>; 4]> = SmallVec::new();
        let step = match body.step(up.data(), dechunk.then_some(&mut ranges)) {
            Ok(s) => s,
            Err(_) => {
                // A malformed chunked response: nothing more is relayed, both close.
                d.keep_alive = false;
                return Relayed::Failed(Failed::from(&wire::upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    "bad chunked response body",
                    None,
                )));
            }
        };
        let data = up.data();
        let sent = if dechunk {
            let mut r = Ok(());
            if first || !out.is_empty() {
                r = wire::write_all(d.stream, out.data()).await;
            }
            for range in &ranges {
                if r.is_ok() {
                    r = wire::write_all(d.stream, &data[range.clone()]).await;
                }
            }
            r
        } else if first {
            let (a, b) = append(&mut out, &data[..step.consumed]);
            wire::write_two(d.stream, a, b).await
        } else if step.consumed > 0 {
            wire::write_all(d.stream, &data[..step.consumed]).await
        } else {
            Ok(())
        };
        if sent.is_err() {
            return Relayed::Failed(Failed::client());
        }
        if first {
            out.consume(out.len());
            first = false;
        }
        up.consume(step.consumed);
        if step.done {
            break;
        }
        match up.read().await {
            Ok(n) if n > 0 => {}
            Ok(_) if body.closed() => break,
            Ok(_) => return upstream_failed(store, ex, closed()),
            Err(e) => return upstream_failed(store, ex, e),
        }
    }
    drop(out);
    if upgrade_req {
        // Refused upgrade: whatever the client sent after its request is never read as a
        // request of its own.
        return Relayed::Done(Next::Close { unread: true });
    }
    // The connection goes back only when both messages ended cleanly and nothing more came.
    if up_keepalive
        && d.body.is_done()
        && up.data().is_empty()
        && resp.framing() != Framing::UntilClose
    {
        upstream::put(key, up.stream);
    }
    if d.keep_alive {
        Relayed::Done(Next::KeepAlive)
    } else {
        Relayed::Done(Next::Close {
            unread: !d.body.is_done(),
        })
    }
}

/// Writes a head into `out` with `write` (a pooled buffer; a larger one for a head that does
/// not fit): its length.
pub(super) fn write_head(
    out: &mut Buf,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, codec::WriteError>,
) -> Result<usize, &'static str> {
    loop {
        match write(out.spare_mut()) {
            Ok(n) => {
                out.filled(n);
                return Ok(n);
            }
            Err(codec::WriteError::NoRoom) if out.capacity() < 4 * MAX_RESPONSE_HEAD => {
                let size = out.capacity() * 4;
                out.grow(size);
            }
            Err(codec::WriteError::NoRoom) => return Err("head too large to write"),
            Err(codec::WriteError::Host) => return Err("request without exactly one Host"),
            Err(_) => return Err("invalid added field"),
        }
    }
}

/// The head in `out` and `body`: as one slice when the body fits after the head (copied
/// there), else as two.
fn append<'o>(out: &'o mut Buf, body: &'o [u8]) -> (&'o [u8], &'o [u8]) {
    if body.is_empty() {
        return (out.data(), &[]);
    }
    let room = out.spare_mut();
    if room.len() >= body.len() {
        room[..body.len()].copy_from_slice(body);
        out.filled(body.len());
        (out.data(), &[])
    } else {
        (out.data(), body)
    }
}

/// After a read of the response: relays every complete interim head (to an HTTP/1.1 client),
/// and says whether the final head is complete (its length).
async fn interim_or_final(
    resp: &mut ResponseHead,
    up: &mut Up,
    d: &mut Down<'_>,
    out: &mut Buf,
    head_request: bool,
) -> Result<Option<usize>, Relayed> {
    loop {
        match parse(resp, up, head_request) {
            Ok(Parsed::Partial) => return Ok(None),
            Ok(Parsed::Final(n)) => return Ok(Some(n)),
            Ok(Parsed::Interim(n)) => {
                if !d.head.is_http10() {
                    let edits = codec::Edits::default();
                    let data = up.data();
                    let w = write_head(out, |o| codec::write_response(resp, data, &edits, o));
                    if w.is_ok() && wire::write_all(d.stream, out.data()).await.is_err() {
                        return Err(Relayed::Failed(Failed::client()));
                    }
                    out.consume(out.len());
                }
                up.consume(n);
            }
            Err(e) => {
                return Err(Relayed::Failed(Failed::from(&wire::upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    response_error(e),
                    None,
                ))))
            }
        }
    }
}

pub(super) fn response_error(e: ResponseError) -> &'static str {
    match e {
        ResponseError::HeadTooLarge => "response head too large",
        ResponseError::TooManyHeaders => "too many response header fields",
        _ => "invalid response head",
    }
}

/// Relays the request body bytes just read (into `d.bbuf`) to the backend.
async fn send_body(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down<'_>,
    up: &mut Up,
) -> Result<(), Relayed> {
    let Some(b) = d.bbuf.as_mut() else {
        return Ok(());
    };
    let step = d
        .body
        .step(b.data(), None)
        .map_err(|_| Relayed::Failed(bad_chunk()))?;
    d.body_read = d.body.data_len(d.body_read + step.consumed as u64);
    if d.body.framing() == Framing::Chunked && outcome::body_exceeds(store, ex, d.body_read) {
        // A chunked body grew past the limit: the request ends here (the backend's connection
        // is dropped with it).
        return Err(Relayed::Failed(Failed::local(413, None, "body_too_large")));
    }
    if step.consumed > 0 {
        up.body_sent = true;
        let data = &b.data()[..step.consumed];
        if let Err(e) = up.write(data, &[]).await {
            return Err(upstream_failed(store, ex, e));
        }
        b.consume(step.consumed);
    }
    buf::release_if_empty(&mut d.bbuf);
    Ok(())
}

/// The response head could not be read.
fn response_failed(
    store: &Store,
    ex: &mut Exchange,
    d: &Down<'_>,
    up: &Up,
    e: Box<Error>,
) -> Relayed {
    head_failed(store, ex, up, d.in_head > 0 || up.body_sent, e)
}

/// The response head could not be read; `body_read`: some of the request body was taken from
/// the client (the request cannot be sent again).
pub(super) fn head_failed(
    store: &Store,
    ex: &mut Exchange,
    up: &Up,
    body_read: bool,
    e: Box<Error>,
) -> Relayed {
    let nothing_read = up.data().is_empty()
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
    if up.reused && nothing_read && !body_read {
        return Relayed::StaleConnection(e);
    }
    if outcome::refused_at_connect(&e, up.reused, body_read) {
        return Relayed::Refused(e);
    }
    upstream_failed(store, ex, e)
}

/// After a `101`: bytes flow both ways until both sides are done. Each direction ends on its
/// own (a half-close is passed on), and the tunnel lasts until both have: bytes the backend
/// wrote right after its `101` (already read, behind the head) go to the client with the head,
/// so there is no window in which the tunnel can be closed by its own first bytes; bytes the
/// client sent right after its request go to the backend first.
async fn tunnel(d: &mut Down<'_>, mut up: Up, mut out: Buf) -> Relayed {
    let early = up.data();
    let (a, b) = append(&mut out, early);
    if wire::write_two(d.stream, a, b).await.is_err() {
        return Relayed::Failed(Failed::client());
    }
    drop(out);
    up.rbuf = None;
    // What the client sent after its upgrade request (in the head's buffer, or read later).
    let hbuf = d.hbuf;
    let after = &hbuf.data()[d.head_len + d.in_head..];
    let later = d.bbuf.take();
    let extra = d.extra.take();
    for part in [
        Some(after),
        later.as_ref().map(|b| b.data()),
        extra.as_ref().map(|b| b.data()),
    ]
    .into_iter()
    .flatten()
    {
        if !part.is_empty() && wire::write_all(&mut up.stream, part).await.is_err() {
            return Relayed::Done(Next::Close { unread: false });
        }
    }
    // A quiet tunnel is not an error: WebSockets idle for long stretches (the peers' own pings
    // keep them alive).
    let _ = tokio::io::copy_bidirectional(d.stream, &mut up.stream).await;
    Relayed::Done(Next::Close { unread: false })
}
