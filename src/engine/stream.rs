//! One HTTP/2 stream on tether's loop (DESIGN.md §11, §20): the request the `h2` crate decoded
//! walks the same stages as an HTTP/1.1 request (`route::start`, `outcome::front`, the breaker
//! queue, the failover rules, `account`), and goes to its backend over tether's HTTP/1.1 codec
//! and the thread's upstream connections — the head written from the stream's fields with the
//! forward stage's edits, the body framed by its `content-length` or chunked, the response head
//! parsed by the codec and sent back as HTTP/2 fields with the respond stage's edits, its body
//! as DATA frames within the client's flow-control window.
//!
//! Owns: the order of IO for one stream, and when its upstream connection may be reused.
//! Decisions are the stages' and `outcome`'s; nothing here knows more of HTTP/2 than the
//! framing (`h2`'s request, body, response and reset). Must not touch: the connection (`h2`'s
//! loop), selection rules, where an HTTP/1.1 message ends (the codec's, walked by `body`).

use std::future::poll_fn;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderName, HeaderValue};
use pingora::ErrorType;
use smallvec::SmallVec;

use crate::config::Limits;
use crate::engine::body::Body;
use crate::engine::down::{Failed, BODY_READ_TIMEOUT};
use crate::engine::h2down::{send_data, Down, Reset};
use crate::engine::relay::{self, Parsed, Relayed, Up};
use crate::engine::shared::Shared;
use crate::engine::wire;
use crate::h1::buf::{self, Boxed};
use crate::h1::head::Bits;
use crate::h1::{self as codec, Framing, Known, ResponseHead, ResponseView};
use crate::http::Head;
use crate::path::account::{self, End};
use crate::path::exchange::{Active, Exchange, CLIENT_CLOSED};
use crate::path::forward::{self, Downstream};
use crate::path::grpc;
use crate::path::head::ClientIp;
use crate::path::outcome::{self, Front};
use crate::path::pick;
use crate::path::read::Reject;
use crate::path::respond::{self, Local};
use crate::path::route;
use crate::snapshot::Store;
use crate::state::upstream::{self, Conn};

/// Serves one stream to its end and accounts it.
pub async fn serve(
    fast: Arc<Shared>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    client: ClientIp,
    tls: bool,
    limits: Limits,
) {
    let _active = Active::begin();
    let (parts, body) = req.into_parts();
    let mut d = Down {
        respond,
        body_done: body.is_end_stream(),
        body,
        send: None,
        client,
        tls,
        grpc: grpc::is_grpc(&parts),
        body_read: 0,
        chunked_up: false,
        written: None,
    };
    if let Some(r) = edge(&parts, &limits) {
        fast.store.metrics().rejected[r.index()].inc();
        tracing::debug!(reason = r.reason(), "HTTP/2 request refused");
        if d.grpc {
            let ex = route::start(&fast.store, &fast.ids, &parts);
            let resp = grpc::answer(&ex, r.status(), r.reason(), None);
            let _ = d.respond.send_response(resp, true);
            return;
        }
        let _ = send_plain(
            &mut d,
            r.status(),
            r.message(),
            parts.method == http::Method::HEAD,
        );
        return;
    }
    let store = &fast.store;
    let mut ex = route::start(store, &fast.ids, &parts);
    let (status, error, backend) = match stages(&fast, &mut ex, &parts, &mut d).await {
        Ok(()) => {
            let status = d.written.unwrap_or(0);
            (status, None, outcome::blame(&ex, status, None))
        }
        Err(f) => {
            let status = if let Some(s) = d.written {
                // The response had started: the client sees the stream reset, or a gRPC
                // client the status UNAVAILABLE in trailers (its retry policy's signal).
                if let Some(send) = d.send.as_mut() {
                    if !(d.grpc && f.status != 0)
                        || send
                            .send_trailers(grpc::failed_trailers("the backend failed mid-stream"))
                            .is_err()
                    {
                        send.send_reset(Reason::INTERNAL_ERROR);
                    }
                }
                s
            } else if f.status == 0 {
                CLIENT_CLOSED // the client went away: nobody to answer
            } else if d.grpc {
                // A 504 after the call's own deadline ran out is that deadline's end.
                let expired = f.status == 504
                    && grpc::timeout(&parts).is_some_and(|t| ex.start.elapsed() >= t);
                let resp = if expired {
                    grpc::deadline_exceeded(&ex)
                } else {
                    grpc::answer(&ex, f.status, f.error, f.retry_after)
                };
                let _ = d.respond.send_response(resp, true);
                f.status
            } else {
                if let Ok(l) = outcome::local(&ex, f.status, f.retry_after) {
                    let _ = write_local(&mut d, &l, parts.method == http::Method::HEAD);
                }
                f.status
            };
            (status, Some(f.error), f.backend)
        }
    };
    let status = outcome::final_status(&ex, Some(status));
    let end = End {
        status,
        error,
        backend,
    };
    account::account(store, &mut ex, &parts, client, end);
}

/// The §12 limits a decoded HTTP/2 head is held to beyond what `h2` enforces itself (the header
/// list size, advertised as `SETTINGS_MAX_HEADER_LIST_SIZE`, answered by `h2` and counted by
/// `h2::Oversize`): the number of fields. `CONNECT` is not proxied.
fn edge(parts: &http::request::Parts, limits: &Limits) -> Option<Reject> {
    if parts.headers.len() > limits.max_headers {
        return Some(Reject::TooManyHeaders);
    }
    if parts.method == http::Method::CONNECT {
        return Some(Reject::BadRequest("CONNECT is not supported\n"));
    }
    None
}

async fn stages(
    fast: &Shared,
    ex: &mut Exchange,
    parts: &http::request::Parts,
    d: &mut Down,
) -> Result<(), Failed> {
    let store = &fast.store;
    match outcome::front(store, ex, parts, d.client)
        .await
        .map_err(|e| Failed::from(&e))?
    {
        Front::Forward => {}
        Front::Queued => {
            let w = pick::waiting(ex, parts, d.client);
            if let Err(r) = pick::admit(ex, w, &mut Reset(&mut d.respond)).await {
                return match outcome::queue_refusal(r) {
                    None => Err(Failed::local(0, None, r.as_str())),
                    Some((status, retry_after)) if d.grpc => {
                        write_grpc(d, ex, status, r.as_str(), Some(retry_after))
                    }
                    Some((status, retry_after)) => {
                        let l = outcome::local(ex, status, Some(retry_after))
                            .map_err(|e| Failed::from(&e))?;
                        write_local(d, &l, parts.method == http::Method::HEAD)
                    }
                };
            }
        }
        Front::Answer { local, .. } if d.grpc => {
            let retry_after = local
                .head
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let status = local.head.status.as_u16();
            return write_grpc(d, ex, status, "", retry_after);
        }
        Front::Answer { local, .. } => {
            return write_local(d, &local, parts.method == http::Method::HEAD);
        }
    }
    let h2_pool = ex
        .route()
        .is_some_and(|(_, _, pool)| pool.conf.protocol.is_h2());
    if h2_pool {
        return crate::engine::h2up::forward(store, fast, ex, parts, d).await;
    }
    forward(store, fast, ex, parts, d).await
}

/// Connect (failing over on connection errors), send the request, relay the response: the
/// same loop as HTTP/1.1's (`relay::forward`), over a stream.
async fn forward(
    store: &Store,
    fast: &Shared,
    ex: &mut Exchange,
    parts: &http::request::Parts,
    d: &mut Down,
) -> Result<(), Failed> {
    let resendable = outcome::may_resend(parts.method.as_str().as_bytes(), !d.body_done);
    let mut fresh_only = false;
    loop {
        let (got, key, read_timeout) = relay::connect(&fast.upstreams, ex, fresh_only).await?;
        let e = match got {
            Ok(conn) => match relay(store, ex, parts, d, conn, read_timeout, key).await {
                Relayed::Done(_) => return Ok(()),
                Relayed::Failed(f) => return Err(f),
                Relayed::StaleConnection(e) => {
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
        relay::fail_over(store, ex, parts, d.client, &e, &mut Reset(&mut d.respond)).await?;
        fresh_only = false;
    }
}

/// Methods whose body-less request still says so with `content-length: 0` upstream (a backend
/// may refuse a POST without a length).
fn length_expected(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// One attempt on `conn`: the request out, the response back.
async fn relay(
    store: &Store,
    ex: &mut Exchange,
    parts: &http::request::Parts,
    d: &mut Down,
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
    let head_request = parts.method == http::Method::HEAD;
    // How the body is framed upstream: its declared length (which `h2` holds the stream to),
    // else chunked; none when the stream ended with its head.
    let declared = parts.headers.get(http::header::CONTENT_LENGTH);
    let framing: Option<(&[u8], &[u8])> = if d.body_done {
        (declared.is_some() || length_expected(&parts.method)).then_some((b"Content-Length", b"0"))
    } else if let Some(n) = declared {
        // As sent: `h2` refuses a stream whose `content-length` is not one number.
        Some((b"Content-Length", n.as_bytes()))
    } else {
        d.chunked_up = true;
        Some((b"Transfer-Encoding", b"chunked"))
    };
    let target = (parts as &dyn Head).path_and_query();
    let down = Downstream {
        client: d.client,
        tls: d.tls,
    };
    let mut out = buf::take();
    let written = forward::request_edits(ex, parts, &down, |e| {
        let edits = codec::Edits {
            drop_names: e.drop,
            drop_if: None,
            add: e.add,
            reframe: true,
        };
        let fields = || {
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
        };
        relay::write_head(&mut out, |o| {
            codec::write_request_fields(
                parts.method.as_str().as_bytes(),
                target,
                fields,
                framing,
                &edits,
                o,
            )
        })
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "HTTP/2 request head could not be written upstream");
        return Relayed::Failed(Failed::local(400, None, "request_head"));
    }
    let sent = up.write(out.data(), &[]).await;
    // The buffer goes back at once: many streams may wait for their backends at once.
    drop(out);
    if let Err(e) = sent {
        return if up.reused {
            Relayed::StaleConnection(e)
        } else {
            relay::upstream_failed(store, ex, e)
        };
    }
    // The request body, while watching for an early (or interim) response.
    // The response head's table is taken when its first bytes come: streams waiting for their
    // backends hold none.
    let mut resp: Option<Boxed<ResponseHead>> = None;
    let mut final_len = None;
    while !d.body_done && final_len.is_none() {
        tokio::select! {
            biased;
            r = up.read() => {
                match response_read(store, ex, d, &mut up, &mut resp, head_request, r) {
                    Ok(f) => final_len = f,
                    Err(r) => return r,
                }
            }
            r = wire::within(Some(BODY_READ_TIMEOUT), d.body.data()) => {
                if let Err(r) = body_step(store, ex, d, &mut up, r).await {
                    return r;
                }
            }
        }
    }
    while final_len.is_none() {
        tokio::select! {
            biased;
            r = up.read() => {
                match response_read(store, ex, d, &mut up, &mut resp, head_request, r) {
                    Ok(f) => final_len = f,
                    Err(r) => return r,
                }
            }
            // A client that resets the stream while the backend thinks: the request is
            // abandoned (and its upstream connection with it).
            _ = poll_fn(|cx| d.respond.poll_reset(cx)) => {
                return Relayed::Failed(Failed::client());
            }
        }
    }
    let head_len = final_len.unwrap_or(0);
    let resp = resp.expect("a final head was parsed");
    if let Some((pool, u)) = ex.upstream() {
        u.response_head();
        account::passive(store, pool, u.pick.backend, true);
    }
    if resp.is_switching_protocols() {
        return relay::upstream_failed(
            store,
            ex,
            wire::upstream_error(
                ErrorType::InvalidHTTPHeader,
                "101 on an HTTP/2 stream",
                None,
            ),
        );
    }
    let up_keepalive = resp.keep_alive(up.data());
    let no_body = head_request || !resp.framing().has_body();
    // The head's bytes (and the body bytes that came with them, when that is all of a small
    // body) are copied once: the fields' values and the first DATA frame share that copy.
    let inline = match resp.framing() {
        Framing::Length(n) if !no_body && up.data().len() - head_len >= n as usize => n as usize,
        _ => 0,
    };
    let shared = Bytes::copy_from_slice(&up.data()[..head_len + inline]);
    let rv = ResponseView {
        head: &resp,
        buf: &shared,
    };
    let built = respond::response_edits(ex, &rv, |e| response_head(&resp, &shared, e));
    if let Some(r) = d.send_head(store, ex, built, resp.status(), no_body) {
        return r;
    }
    up.consume(head_len);
    if inline > 0 {
        // The whole body came with the head: one frame.
        let send = d
            .send
            .as_mut()
            .expect("a response with a body has its stream");
        if send_data(send, shared.slice(head_len..head_len + inline), true)
            .await
            .is_err()
        {
            return Relayed::Failed(Failed::client());
        }
        up.consume(inline);
    } else if !no_body {
        if let Err(r) = response_body(store, ex, d, &mut up, resp.framing()).await {
            return r;
        }
    }
    // The connection goes back only when both messages ended cleanly and nothing more came.
    if up_keepalive && d.body_done && up.data().is_empty() && resp.framing() != Framing::UntilClose
    {
        upstream::put(key, up.stream);
    }
    Relayed::Done(crate::engine::down::Next::KeepAlive)
}

/// After a read of the response (`r`): the head's length once the final head is complete.
fn response_read(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down,
    up: &mut Up,
    resp: &mut Option<Boxed<ResponseHead>>,
    head_request: bool,
    r: Result<usize, Box<pingora::Error>>,
) -> Result<Option<usize>, Relayed> {
    match r {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err(head_failed(store, ex, d, up, relay::closed())),
        Err(e) => return Err(head_failed(store, ex, d, up, e)),
    }
    interim_or_final(resp, up, d, head_request)
}

/// The response head could not be read.
fn head_failed(
    store: &Store,
    ex: &mut Exchange,
    d: &Down,
    up: &Up,
    e: Box<pingora::Error>,
) -> Relayed {
    relay::head_failed(store, ex, up, d.body_read > 0 || up.body_sent, e)
}

/// One read of the request body (`r`: DATA, its end, a reset or the read deadline) relayed to
/// the backend, the flow-control window given back once it is written.
async fn body_step(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down,
    up: &mut Up,
    r: Result<Option<Result<Bytes, h2::Error>>, ()>,
) -> Result<(), Relayed> {
    match r {
        Ok(Some(Ok(data))) => {
            let n = data.len();
            d.body_read += n as u64;
            if outcome::body_exceeds(store, ex, d.body_read) {
                return Err(Relayed::Failed(Failed::local(413, None, "body_too_large")));
            }
            if n > 0 {
                let sent = if d.chunked_up {
                    let mut size = [0u8; 20];
                    let head = chunk_size(n, up.body_sent, &mut size);
                    up.write(head, &data).await
                } else {
                    up.write(&data, &[]).await
                };
                up.body_sent = true;
                if let Err(e) = sent {
                    return Err(relay::upstream_failed(store, ex, e));
                }
                let _ = d.body.flow_control().release_capacity(n);
            }
            Ok(())
        }
        Ok(None) => {
            // The body ended: its trailers, if any, end a chunked body.
            d.body_done = true;
            if d.chunked_up {
                // The last data chunk's CRLF, then the last chunk.
                let last: &[u8] = if up.body_sent { b"\r\n0\r\n" } else { b"0\r\n" };
                let mut end: Vec<u8> = last.to_vec();
                if let Ok(Some(trailers)) = d.body.trailers().await {
                    for (n, v) in trailers.iter() {
                        if v.as_bytes().iter().all(|&c| codec::head::is_field_vchar(c)) {
                            end.extend_from_slice(n.as_str().as_bytes());
                            end.extend_from_slice(b": ");
                            end.extend_from_slice(v.as_bytes());
                            end.extend_from_slice(b"\r\n");
                        }
                    }
                }
                end.extend_from_slice(b"\r\n");
                if let Err(e) = up.write(&end, &[]).await {
                    return Err(relay::upstream_failed(store, ex, e));
                }
            }
            Ok(())
        }
        // The client reset the stream, or stalled mid-body.
        Ok(Some(Err(_))) | Err(()) => Err(Relayed::Failed(Failed::client())),
    }
}

/// `{n:x}\r\n` into `out`, after the CRLF that ends the previous chunk's data when
/// `after_chunk` (so that a chunk's size line and data go out in one write).
fn chunk_size(n: usize, after_chunk: bool, out: &mut [u8; 20]) -> &[u8] {
    let start = if after_chunk {
        out[..2].copy_from_slice(b"\r\n");
        2
    } else {
        0
    };
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, o) in out[start..].iter_mut().take(digits).enumerate() {
        let nibble = (n >> ((digits - 1 - i) * 4)) & 0xf;
        *o = b"0123456789abcdef"[nibble];
    }
    let end = start + digits;
    out[end..end + 2].copy_from_slice(b"\r\n");
    &out[..end + 2]
}

/// After a read of the response: sends every complete interim head (`100 Continue` and the
/// like) to the client as an informational response, and says whether the final head is
/// complete (its length).
fn interim_or_final(
    resp: &mut Option<Boxed<ResponseHead>>,
    up: &mut Up,
    d: &mut Down,
    head_request: bool,
) -> Result<Option<usize>, Relayed> {
    let resp = resp.get_or_insert_with(Boxed::take);
    loop {
        match relay::parse(resp, up, head_request) {
            Ok(Parsed::Partial) => return Ok(None),
            Ok(Parsed::Final(n)) => return Ok(Some(n)),
            Ok(Parsed::Interim(n)) => {
                if let Ok(s) = http::StatusCode::from_u16(resp.status()) {
                    let mut info = http::Response::new(());
                    *info.status_mut() = s;
                    let _ = d.respond.send_informational(info);
                }
                up.consume(n);
            }
            Err(e) => {
                return Err(Relayed::Failed(Failed::from(&wire::upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    relay::response_error(e),
                    None,
                ))))
            }
        }
    }
}

/// The backend's response head as an HTTP/2 one: the status, the fields but the hop-by-hop
/// and framing ones (and those `Connection` names), less the respond stage's dropped fields,
/// plus its added ones.
fn response_head(
    resp: &ResponseHead,
    shared: &Bytes,
    e: &crate::path::edits::Edits<'_>,
) -> Result<http::Response<()>, &'static str> {
    let buf: &[u8] = shared;
    let mut out = http::Response::new(());
    *out.status_mut() =
        http::StatusCode::from_u16(resp.status()).map_err(|_| "invalid response status")?;
    let fields = resp.fields();
    // The HTTP/1.1 writer's rule (hop-by-hop, `Connection`-named, the stage's drops), plus
    // `Transfer-Encoding`: HTTP/2 frames the body itself.
    let edits = codec::Edits {
        drop_names: e.drop,
        ..codec::Edits::default()
    };
    let dropped =
        codec::write::dropped(fields, buf, &edits, false) | fields.mask(Known::TransferEncoding);
    let headers = out.headers_mut();
    headers.reserve(fields.len() + e.add.len());
    for i in Bits(fields.all_mask() & !dropped) {
        let f = &fields.as_slice()[i];
        let name = f.name.get(buf);
        let n = HeaderName::from_bytes(name).map_err(|_| "invalid response field name")?;
        let span = f.value.start as usize..f.value.end as usize;
        let v = HeaderValue::from_maybe_shared(shared.slice(span))
            .map_err(|_| "invalid response field")?;
        headers.append(n, v);
    }
    for (n, v) in e.add {
        let (n, v) = crate::engine::h2down::added_field(n, v)?;
        headers.append(n, v);
    }
    Ok(out)
}

/// Relays the response body as DATA frames: the bytes that came with the head first, then
/// what the backend sends, de-chunked, the last frame carrying END_STREAM.
async fn response_body(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down,
    up: &mut Up,
    framing: Framing,
) -> Result<(), Relayed> {
    let send = d
        .send
        .as_mut()
        .expect("a response with a body has its stream");
    let mut body = Body::new(framing);
    loop {
        let mut ranges: SmallVec<[Range<usize>; 4]> = SmallVec::new();
        let step = match body.step(up.data(), Some(&mut ranges)) {
            Ok(s) => s,
            Err(_) => {
                return Err(Relayed::Failed(Failed::from(&wire::upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    "bad chunked response body",
                    None,
                ))))
            }
        };
        let data = up.data();
        if framing != Framing::Chunked {
            ranges.push(0..step.consumed);
        }
        ranges.retain(|r| r.start < r.end);
        let last = ranges.len();
        for (i, r) in ranges.iter().enumerate() {
            let end = step.done && i + 1 == last;
            let bytes = Bytes::copy_from_slice(&data[r.clone()]);
            if send_data(send, bytes, end).await.is_err() {
                return Err(Relayed::Failed(Failed::client()));
            }
        }
        if step.done && last == 0 && send.send_data(Bytes::new(), true).is_err() {
            return Err(Relayed::Failed(Failed::client()));
        }
        up.consume(step.consumed);
        if step.done {
            return Ok(());
        }
        match up.read().await {
            Ok(n) if n > 0 => {}
            Ok(_) if body.closed() => {
                let _ = send.send_data(Bytes::new(), true);
                return Ok(());
            }
            Ok(_) => return Err(relay::upstream_failed(store, ex, relay::closed())),
            Err(e) => return Err(relay::upstream_failed(store, ex, e)),
        }
    }
}

/// Writes one of tether's own answers on the stream.
fn write_local(d: &mut Down, l: &Local, head_request: bool) -> Result<(), Failed> {
    let status = l.head.status;
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = l.head.headers.clone();
    let end = head_request || l.body.is_empty();
    let mut send = d
        .respond
        .send_response(resp, end)
        .map_err(|_| Failed::client())?;
    d.written = Some(status.as_u16());
    if !end {
        send.send_data(Bytes::from_static(l.body.as_bytes()), true)
            .map_err(|_| Failed::client())?;
    }
    Ok(())
}

/// One of tether's own answers to a gRPC request: a trailers-only gRPC status.
fn write_grpc(
    d: &mut Down,
    ex: &Exchange,
    status: u16,
    reason: &str,
    retry_after: Option<u64>,
) -> Result<(), Failed> {
    let resp = grpc::answer(ex, status, reason, retry_after);
    d.respond
        .send_response(resp, true)
        .map_err(|_| Failed::client())?;
    // Accounted as the HTTP status it stands for (the access log and metrics agree with an
    // HTTP client's refusal).
    d.written = Some(status);
    Ok(())
}

/// A refusal at the edge: `status` with a one-line text body.
fn send_plain(d: &mut Down, status: u16, body: &'static str, head_request: bool) -> Result<(), ()> {
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).map_err(|_| ())?;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut send = d
        .respond
        .send_response(resp, head_request)
        .map_err(|_| ())?;
    if !head_request {
        send.send_data(Bytes::from_static(body.as_bytes()), true)
            .map_err(|_| ())?;
    }
    Ok(())
}
