//! One HTTP/2 stream to a backend of a pool with `protocol = "h2c"` or `"h2"` (DESIGN.md §21),
//! for a client's HTTP/2 stream: the request's head as HTTP/2 fields with the forward stage's
//! edits, its body and trailers relayed as they come, the response's head with the respond
//! stage's edits, its body and trailers (`grpc-status`) relayed back — both directions at once,
//! so a bidirectional RPC flows, and for the whole life of a streaming RPC the request stays
//! one exchange (its breaker slot, in-flight count and pinned backend held).
//!
//! Owns: the order of IO of one stream on an upstream HTTP/2 connection, and when a stream the
//! backend never processed is sent again. Decisions (statuses, failover, blame) are
//! `outcome`'s; connections are `state::upstream_h2`'s. Must not touch: the client connection.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use pingora::{Error, ErrorType};

use crate::config::Protocol;
use crate::engine::attempt::{self as relay, Relayed};
use crate::engine::down::{Failed, Next};
use crate::engine::h2down::{added_field, send_data, Down, Reset};
use crate::engine::shared::Shared;
use crate::engine::wire;
use crate::path::account;
use crate::path::exchange::Exchange;
use crate::path::forward::{self, Downstream};
use crate::path::grpc;
use crate::path::outcome;
use crate::path::respond;
use crate::snapshot::Store;
use crate::state::upstream::Upstreams;
use crate::state::upstream_h2::{self, Lease};

/// Streams the backend refused unprocessed (GOAWAY, `REFUSED_STREAM`) sent again, at most: on
/// another connection after a GOAWAY (that one is retired), on any with room after a refusal.
const MAX_RESENDS: u32 = 3;

/// Fields that never cross into an HTTP/2 message (RFC 9113 §8.2.2), and `host` (the
/// `:authority` carries it).
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Connect (failing over on connection errors), send the stream, relay both ways: the loop of
/// `stream::forward`, on an HTTP/2 connection.
pub(super) async fn forward(
    store: &Store,
    fast: &Shared,
    ex: &mut Exchange,
    parts: &http::request::Parts,
    d: &mut Down,
) -> Result<(), Failed> {
    // `grpc-timeout` caps the pool's read timeout for this request.
    let deadline = if d.grpc { grpc::timeout(parts) } else { None };
    let mut replay = Replay::default();
    let mut resends = 0;
    loop {
        let (got, up) = connect(&fast.upstreams, ex, deadline).await?;
        let e = match got {
            Ok(lease) => match relay(store, ex, parts, d, &mut replay, lease, up).await {
                Relayed::Done(_) => return Ok(()),
                Relayed::Failed(f) => return Err(f),
                Relayed::StaleConnection(e) => {
                    resend(&mut resends, &e)?;
                    continue;
                }
                Relayed::Refused(e) => e,
            },
            Err(e) => e,
        };
        relay::fail_over(store, ex, parts, d.client, &e, &mut Reset(&mut d.respond)).await?;
    }
}

/// A stream slot on the exchange's current backend (which the exchange holds from now, its
/// send time set), with how the attempt talks to it: `deadline`, a gRPC call's, caps the
/// pool's read timeout by what is left of it.
pub(super) async fn connect(
    upstreams: &Upstreams,
    ex: &mut Exchange,
    deadline: Option<Duration>,
) -> Result<(pingora::Result<Lease>, Upstream), Failed> {
    // What is left of the client's deadline after the time spent in tether (a breaker queue,
    // an earlier attempt): the cap, and what the backend is told.
    let remaining = deadline.map(|g| g.saturating_sub(ex.start.elapsed()).max(MIN_LEFT));
    ex.hold();
    let (pool, u) = ex
        .upstream()
        .ok_or_else(|| Failed::internal("no_backend"))?;
    u.sent_at.get_or_insert_with(Instant::now);
    let b = &pool.backends[u.pick.backend as usize];
    let up = Upstream {
        timeout: remaining.map_or(pool.conf.read_timeout, |g| g.min(pool.conf.read_timeout)),
        tls: pool.conf.protocol == Protocol::H2,
        grpc_timeout: remaining,
    };
    let got = upstream_h2::get(upstreams, b.conn_key, &b.peer).await;
    Ok((got, up))
}

/// After an attempt whose stream the backend never processed: the count of such attempts, or
/// the failure once there were [`MAX_RESENDS`].
pub(super) fn resend(resends: &mut u32, e: &Error) -> Result<(), Failed> {
    if *resends < MAX_RESENDS {
        *resends += 1;
        return Ok(());
    }
    Err(Failed::from(e))
}

/// Opens the request's stream on `lease`'s connection (`end`: no body follows). A connection
/// that is closing or gone retires, and the request may go again (nothing was sent).
pub(super) fn open(
    lease: &Lease,
    req: http::Request<()>,
    end: bool,
) -> Result<(h2::client::ResponseFuture, SendStream<Bytes>), Relayed> {
    let mut sender = lease.send.clone();
    match sender.send_request(req, end) {
        Ok(x) => Ok(x),
        Err(e) if e.is_go_away() || e.is_io() => {
            lease.retire();
            Err(Relayed::StaleConnection(h2_error(
                ErrorType::ConnectionClosed,
                "opening a stream",
                e,
            )))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the backend's HTTP/2 connection refused the request");
            Err(Relayed::Failed(Failed::local(502, None, "h2_request")))
        }
    }
}

/// The response head's wait (`got`: the head, the stream's error, or the read timeout) as the
/// response, counted as the backend's answer, or how the attempt ends: sent again when the
/// backend never processed the stream and `resendable` (all of the body taken is kept).
pub(super) fn response_head_of(
    store: &Store,
    ex: &mut Exchange,
    lease: &Lease,
    got: Result<Result<http::Response<RecvStream>, h2::Error>, ()>,
    resendable: bool,
) -> Result<http::Response<RecvStream>, Relayed> {
    let what = "reading the response head";
    match got {
        Ok(Ok(r)) => {
            if let Some((pool, u)) = ex.upstream() {
                u.response_head();
                account::passive(store, pool, u.pick.backend, true);
            }
            Ok(r)
        }
        Ok(Err(e)) => {
            if e.is_go_away() || e.is_io() {
                lease.retire();
            }
            if upstream_h2::never_processed(&e) && resendable {
                return Err(Relayed::StaleConnection(h2_error(
                    ErrorType::ConnectionClosed,
                    "the stream was refused",
                    e,
                )));
            }
            Err(relay::upstream_failed(
                store,
                ex,
                h2_error(ErrorType::ReadError, what, e),
            ))
        }
        Err(()) => Err(relay::upstream_failed(
            store,
            ex,
            wire::upstream_error(ErrorType::ReadTimedout, what, None),
        )),
    }
}

/// The largest request body kept to be sent again when the backend refuses a stream unprocessed
/// (a gRPC message, a small POST).
const REPLAY_MAX: usize = 64 * 1024;

/// The request body taken from the client so far (shared `Bytes`, no copy), while it is small
/// enough to be sent again on another connection.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<http::HeaderMap>,
    /// More was taken than is kept: the request can no longer be sent again.
    pub(super) overflowed: bool,
}

impl Replay {
    pub(super) fn keep(&mut self, data: &Bytes) {
        if self.overflowed {
            return;
        }
        self.len += data.len();
        if self.len > REPLAY_MAX {
            self.overflowed = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }
}

/// The smallest `grpc-timeout` sent on: a deadline already spent still gets a moment.
const MIN_LEFT: Duration = Duration::from_millis(1);

/// How one attempt talks to its backend.
pub(super) struct Upstream {
    /// The pool's read timeout, capped by the call's remaining deadline.
    pub(super) timeout: Duration,
    pub(super) tls: bool,
    /// A gRPC call's remaining deadline, sent as its `grpc-timeout`.
    grpc_timeout: Option<Duration>,
}

/// One attempt on `lease`'s connection.
async fn relay(
    store: &Store,
    ex: &mut Exchange,
    parts: &http::request::Parts,
    d: &mut Down,
    replay: &mut Replay,
    lease: Lease,
    up_opts: Upstream,
) -> Relayed {
    let Upstream {
        timeout,
        tls,
        grpc_timeout,
    } = up_opts;
    let req = match request(ex, parts, d, tls, grpc_timeout) {
        Ok(r) => r,
        Err(what) => {
            tracing::warn!(
                error = what,
                "HTTP/2 request could not be built for the backend"
            );
            return Relayed::Failed(Failed::local(400, None, "request_head"));
        }
    };
    let end = d.body_done && replay.is_empty();
    let (mut resp_fut, up) = match open(&lease, req, end) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut up_body = (!end).then_some(up);
    if let Some(up) = up_body.as_mut() {
        // A second attempt: what was taken of the body goes first.
        for c in &replay.chunks {
            if send_data(up, c.clone(), false).await.is_err() {
                return relay::upstream_failed(
                    store,
                    ex,
                    wire::upstream_error(ErrorType::WriteError, "writing the request body", None),
                );
            }
        }
        if d.body_done {
            let sent = match replay.trailers.clone() {
                Some(t) => up.send_trailers(t),
                None => up.send_data(Bytes::new(), true),
            };
            if let Err(e) = sent {
                return relay::upstream_failed(
                    store,
                    ex,
                    h2_error(ErrorType::WriteError, "ending the request body", e),
                );
            }
            up_body = None;
        }
    }

    // The request body while waiting for the response head; the head's wait restarts with each
    // step of the body (a client-streaming RPC is answered once its client is done).
    let got = loop {
        let step = tokio::select! {
            biased;
            r = wire::within(Some(timeout), &mut resp_fut) => break r,
            r = d.body.data(), if up_body.is_some() => r,
            _ = poll_fn(|cx| d.respond.poll_reset(cx)), if up_body.is_none() => {
                return Relayed::Failed(Failed::client());
            }
        };
        if let Err(r) = body_step(store, ex, d, replay, &mut up_body, step).await {
            return r;
        }
    };
    let response = match response_head_of(store, ex, &lease, got, !replay.overflowed) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (rparts, mut rbody) = response.into_parts();
    let built = respond::response_edits(ex, &rparts.headers, |e| response_head(&rparts, e));
    let end = rbody.is_end_stream();
    if let Some(r) = d.send_head(store, ex, built, rparts.status.as_u16(), end) {
        return r;
    }
    if end {
        return Relayed::Done(Next::KeepAlive);
    }
    match response_body(
        store,
        ex,
        d,
        replay,
        &mut up_body,
        &mut rbody,
        &lease,
        timeout,
    )
    .await
    {
        Ok(()) => Relayed::Done(Next::KeepAlive),
        Err(r) => r,
    }
}

/// The response's body and trailers to the client, while the request's body (a bidirectional
/// RPC's) keeps flowing to the backend. The wait for the backend restarts with any progress
/// either way: a stream idle both ways for the read timeout ends.
#[allow(clippy::too_many_arguments)]
async fn response_body(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down,
    replay: &mut Replay,
    up_body: &mut Option<SendStream<Bytes>>,
    rbody: &mut RecvStream,
    lease: &Lease,
    timeout: Duration,
) -> Result<(), Relayed> {
    enum Ev {
        Resp(Result<Option<Result<Bytes, h2::Error>>, ()>),
        Req(Option<Result<Bytes, h2::Error>>),
        Gone,
    }
    loop {
        let send = d
            .send
            .as_mut()
            .expect("a response with a body has its stream");
        let ev = tokio::select! {
            biased;
            r = wire::within(Some(timeout), rbody.data()) => Ev::Resp(r),
            r = d.body.data(), if up_body.is_some() => Ev::Req(r),
            _ = poll_fn(|cx| send.poll_reset(cx)) => Ev::Gone,
        };
        match ev {
            Ev::Resp(Ok(Some(Ok(data)))) => {
                let n = data.len();
                let send = d
                    .send
                    .as_mut()
                    .expect("a response with a body has its stream");
                if send_data(send, data, false).await.is_err() {
                    return Err(Relayed::Failed(Failed::client()));
                }
                let _ = rbody.flow_control().release_capacity(n);
            }
            Ev::Resp(Ok(None)) => break,
            Ev::Resp(Ok(Some(Err(e)))) => {
                if e.is_go_away() || e.is_io() {
                    lease.retire();
                }
                return Err(relay::upstream_failed(
                    store,
                    ex,
                    h2_error(ErrorType::ReadError, "reading the response body", e),
                ));
            }
            Ev::Resp(Err(())) => {
                return Err(relay::upstream_failed(
                    store,
                    ex,
                    wire::upstream_error(
                        ErrorType::ReadTimedout,
                        "reading the response body",
                        None,
                    ),
                ))
            }
            Ev::Req(step) => body_step(store, ex, d, replay, up_body, step).await?,
            Ev::Gone => return Err(Relayed::Failed(Failed::client())),
        }
    }
    let trailers = wire::within(Some(timeout), rbody.trailers()).await;
    let send = d
        .send
        .as_mut()
        .expect("a response with a body has its stream");
    let sent = match trailers {
        Ok(Ok(Some(t))) => send.send_trailers(t),
        Ok(Ok(None)) => send.send_data(Bytes::new(), true),
        Ok(Err(e)) => {
            return Err(relay::upstream_failed(
                store,
                ex,
                h2_error(ErrorType::ReadError, "reading the response trailers", e),
            ))
        }
        Err(()) => {
            return Err(relay::upstream_failed(
                store,
                ex,
                wire::upstream_error(
                    ErrorType::ReadTimedout,
                    "reading the response trailers",
                    None,
                ),
            ))
        }
    };
    sent.map_err(|_| Relayed::Failed(Failed::client()))
}

/// One read of the request body (`r`: DATA, its end, or a reset) relayed to the backend within
/// its flow-control window, the client's window given back once the backend took it; at the
/// end, the request's trailers (or an empty last frame).
async fn body_step(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down,
    replay: &mut Replay,
    up_body: &mut Option<SendStream<Bytes>>,
    r: Option<Result<Bytes, h2::Error>>,
) -> Result<(), Relayed> {
    let Some(up) = up_body.as_mut() else {
        return Ok(());
    };
    match r {
        Some(Ok(data)) => {
            let n = data.len();
            d.body_read += n as u64;
            if outcome::body_exceeds(store, ex, d.body_read) {
                return Err(Relayed::Failed(Failed::local(413, None, "body_too_large")));
            }
            if n > 0 {
                replay.keep(&data);
                if send_data(up, data, false).await.is_err() {
                    return Err(relay::upstream_failed(
                        store,
                        ex,
                        wire::upstream_error(
                            ErrorType::WriteError,
                            "writing the request body",
                            None,
                        ),
                    ));
                }
                let _ = d.body.flow_control().release_capacity(n);
            }
            Ok(())
        }
        None => {
            d.body_done = true;
            let sent = match d.body.trailers().await {
                Ok(Some(t)) => {
                    replay.trailers = Some(t.clone());
                    up.send_trailers(t)
                }
                _ => up.send_data(Bytes::new(), true),
            };
            *up_body = None;
            sent.map_err(|e| {
                relay::upstream_failed(
                    store,
                    ex,
                    h2_error(ErrorType::WriteError, "ending the request body", e),
                )
            })
        }
        Some(Err(_)) => Err(Relayed::Failed(Failed::client())),
    }
}

/// The request as the backend gets it: `:scheme` of the pool's protocol, the client's
/// `:authority` (or `Host`), the path, the fields less the connection-specific ones (`te`
/// only as `trailers`, which gRPC servers ask for), with the forward stage's edits.
fn request(
    ex: &Exchange,
    parts: &http::request::Parts,
    d: &Down,
    tls: bool,
    grpc_timeout: Option<Duration>,
) -> Result<http::Request<()>, &'static str> {
    let authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => match parts.headers.get(http::header::HOST) {
            Some(h) => http::uri::Authority::try_from(h.as_bytes()).map_err(|_| "bad host")?,
            None => http::uri::Authority::from_static("localhost"),
        },
    };
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut req = request_line(parts.method.clone(), authority, pq, tls)?;
    let down = Downstream {
        client: d.client,
        tls: d.tls,
    };
    forward::request_edits(ex, parts, &down, |e| {
        let h = req.headers_mut();
        h.reserve(parts.headers.len() + e.add.len());
        for (n, v) in parts.headers.iter() {
            let name = n.as_str();
            if CONNECTION_SPECIFIC.contains(&name)
                || e.drop
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(name.as_bytes()))
                || (name == "te" && !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
                || (name == "grpc-timeout" && grpc_timeout.is_some())
            {
                continue;
            }
            h.append(n.clone(), v.clone());
        }
        if let Some(left) = grpc_timeout {
            if let Ok(v) = http::HeaderValue::from_str(&grpc::format_timeout(left)) {
                h.append(http::HeaderName::from_static("grpc-timeout"), v);
            }
        }
        add_fields(h, e.add)
    })?;
    Ok(req)
}

/// An HTTP/2 request head without fields: `method`, `:scheme` of the pool (`tls`), `authority`
/// and `pq` (both client protocols build theirs on it).
pub(super) fn request_line<A, P>(
    method: http::Method,
    authority: A,
    pq: P,
    tls: bool,
) -> Result<http::Request<()>, &'static str>
where
    http::uri::Authority: TryFrom<A>,
    http::uri::PathAndQuery: TryFrom<P>,
    <http::uri::Authority as TryFrom<A>>::Error: Into<http::Error>,
    <http::uri::PathAndQuery as TryFrom<P>>::Error: Into<http::Error>,
{
    let uri = http::Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| "bad target")?;
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    Ok(req)
}

/// The backend's response head for the client: its status and fields (an HTTP/2 backend sends
/// no connection-specific ones; any that came are dropped) with the respond stage's edits.
fn response_head(
    r: &http::response::Parts,
    e: &crate::path::edits::Edits<'_>,
) -> Result<http::Response<()>, &'static str> {
    let mut out = http::Response::new(());
    *out.status_mut() = r.status;
    let h = out.headers_mut();
    h.reserve(r.headers.len() + e.add.len());
    for (n, v) in r.headers.iter() {
        let name = n.as_str();
        if CONNECTION_SPECIFIC.contains(&name)
            || name == "te"
            || e.drop
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        h.append(n.clone(), v.clone());
    }
    add_fields(h, e.add)?;
    Ok(out)
}

/// Appends the stage's added fields.
fn add_fields(h: &mut http::HeaderMap, add: &[(&[u8], &[u8])]) -> Result<(), &'static str> {
    for (n, v) in add {
        let (n, v) = added_field(n, v)?;
        h.append(n, v);
    }
    Ok(())
}

/// An `h2` error as the error the outcome rules read.
pub(super) fn h2_error(etype: ErrorType, what: &'static str, e: h2::Error) -> Box<Error> {
    let mut err = wire::upstream_error(etype, what, None);
    err.set_cause(e);
    err
}
