//! An HTTP/1.1 client's request on a backend of a pool with `protocol = "h2c"` or `"h2"`
//! (DESIGN.md §21): the head becomes HTTP/2 fields (`Host` → `:authority`, hop-by-hop and
//! `Connection`-named fields dropped, the forward stage's edits), the body goes out as DATA
//! frames (de-chunked), and the response comes back as an HTTP/1.1 head with the respond
//! stage's edits — framed by its `content-length`, else chunked (its trailers in the last
//! chunk), else (an HTTP/1.0 client) by the close.
//!
//! Owns: the translation of one exchange between the two framings. Decisions (failover,
//! statuses) are `outcome`'s, connections `state::upstream_h2`'s. Not supported: an
//! `Upgrade` (WebSocket) over an HTTP/2 backend (RFC 8441): the request goes without it, and
//! request trailers of a chunked HTTP/1.1 body (validated, not forwarded).

use std::io::Write as _;
use std::ops::Range;

use bytes::Bytes;
use h2::SendStream;
use http::{HeaderName, HeaderValue};
use pingora::ErrorType;
use smallvec::SmallVec;

use crate::engine::attempt::{self as relay, Relayed};
use crate::engine::body::Body;
use crate::engine::down::{Down, Failed, Next, Watch, BODY_READ_TIMEOUT};
use crate::engine::h2down::send_data;
use crate::engine::h2up::{self, h2_error, Replay, Upstream};
use crate::engine::wire;
use crate::h1::{self as codec, Framing};
use crate::http::Head;
use crate::path::exchange::Exchange;
use crate::path::forward::{self, Downstream};
use crate::path::respond;
use crate::snapshot::Store;
use crate::state::upstream::Upstreams;
use crate::state::upstream_h2::Lease;

/// Response fields that never go to an HTTP/1.1 client from an HTTP/2 message, and the
/// framing ones tether writes itself.
const NOT_RELAYED: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// Connect (failing over on connection errors), send, relay: `relay::forward`'s loop on an
/// HTTP/2 connection.
pub(super) async fn forward(
    store: &Store,
    upstreams: &Upstreams,
    ex: &mut Exchange,
    d: &mut Down<'_>,
) -> Result<Next, Failed> {
    let view = d.view();
    let mut resends = 0;
    let mut taken = Taken {
        body: Body::new(d.body.framing()),
        replay: Replay::default(),
        head_walked: false,
        continued: false,
    };
    loop {
        let (got, up) = h2up::connect(upstreams, ex, None).await?;
        let e = match got {
            Ok(lease) => match relay(store, ex, d, &mut taken, lease, up).await {
                Relayed::Done(next) => return Ok(next),
                Relayed::Failed(f) => return Err(f),
                Relayed::StaleConnection(e) => {
                    h2up::resend(&mut resends, &e)?;
                    continue;
                }
                Relayed::Refused(e) => e,
            },
            Err(e) => e,
        };
        let client = d.client;
        relay::fail_over(store, ex, &view, client, &e, &mut Watch::of(d)).await?;
    }
}

/// The request body taken from the client, across attempts: where its framing is, and its data
/// (de-chunked) while small enough to be sent again on another connection.
struct Taken {
    body: Body,
    replay: Replay,
    /// The body bytes that came with the head were taken.
    head_walked: bool,
    /// `100 Continue` was sent.
    continued: bool,
}

impl Taken {
    /// Walks `input` (body bytes as the client framed them): how many belong to the body, and
    /// their data, which is also kept for a resend while it fits.
    fn take(&mut self, input: &[u8]) -> Result<(usize, SmallVec<[Bytes; 4]>), Relayed> {
        let mut ranges: SmallVec<[Range<usize>; 4]> = SmallVec::new();
        let step = self
            .body
            .step(input, Some(&mut ranges))
            .map_err(|_| Relayed::Failed(Failed::local(400, None, "bad_chunked_body")))?;
        if self.body.framing() != Framing::Chunked {
            ranges.push(0..step.consumed);
        }
        let mut data = SmallVec::new();
        for r in ranges.into_iter().filter(|r| r.start < r.end) {
            let b = Bytes::copy_from_slice(&input[r]);
            self.replay.keep(&b);
            data.push(b);
        }
        Ok((step.consumed, data))
    }
}

/// Sends body data to the backend, and the end of the stream once the body is done.
async fn send_chunks(
    up: &mut SendStream<Bytes>,
    data: impl IntoIterator<Item = Bytes>,
    done: bool,
) -> Result<(), Relayed> {
    let failed = || {
        Relayed::Failed(Failed::from(&wire::upstream_error(
            ErrorType::WriteError,
            "writing the request body",
            None,
        )))
    };
    for b in data {
        send_data(up, b, false).await.map_err(|_| failed())?;
    }
    if done {
        up.send_data(Bytes::new(), true).map_err(|_| failed())?;
    }
    Ok(())
}

async fn relay(
    store: &Store,
    ex: &mut Exchange,
    d: &mut Down<'_>,
    taken: &mut Taken,
    lease: Lease,
    up_opts: Upstream,
) -> Relayed {
    let Upstream { timeout, tls, .. } = up_opts;
    let head_request = d.view().method() == b"HEAD";
    let req = match request(ex, d, tls) {
        Ok(r) => r,
        Err(what) => {
            tracing::warn!(
                error = what,
                "request could not be built for an HTTP/2 backend"
            );
            return Relayed::Failed(Failed::local(400, None, "request_head"));
        }
    };
    if !taken.head_walked {
        taken.head_walked = true;
        if let Err(r) = taken.take(d.head_body()) {
            return r;
        }
    }
    let end = taken.body.is_done() && taken.replay.chunks.is_empty();
    let (mut resp_fut, up) = match h2up::open(&lease, req, end) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut up_body = (!end).then_some(up);
    if !taken.body.is_done() && !taken.continued && d.in_head == 0 && expects_continue(d) {
        // An HTTP/2 backend sends no `100 Continue` through `h2`: tether invites the body.
        taken.continued = true;
        if wire::write_all(d.stream, b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
        {
            return Relayed::Failed(Failed::client());
        }
    }
    if let Some(up) = up_body.as_mut() {
        // What was taken of the body so far (all of it on a first attempt: the head's bytes).
        let done = taken.body.is_done();
        if let Err(r) = send_chunks(up, taken.replay.chunks.iter().cloned(), done).await {
            return r;
        }
        if done {
            up_body = None;
        }
    }
    let got = loop {
        tokio::select! {
            biased;
            r = wire::within(Some(timeout), &mut resp_fut) => break r,
            r = wire::within(Some(BODY_READ_TIMEOUT), wire::read_pooled(d.stream, &mut d.bbuf)), if up_body.is_some() => {
                match r {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Relayed::Failed(Failed::client()),
                }
                let Some(b) = d.bbuf.as_mut() else { continue };
                let Some(up) = up_body.as_mut() else { continue };
                let (n, data) = match taken.take(b.data()) {
                    Ok(x) => x,
                    Err(r) => return r,
                };
                b.consume(n);
                crate::h1::buf::release_if_empty(&mut d.bbuf);
                d.body_read = taken.body.data_len(d.body_read + n as u64);
                if taken.body.framing() == Framing::Chunked && outcome_exceeds(store, ex, d.body_read) {
                    return Relayed::Failed(Failed::local(413, None, "body_too_large"));
                }
                let done = taken.body.is_done();
                if let Err(r) = send_chunks(up, data, done).await {
                    return r;
                }
                if done {
                    up_body = None;
                }
            }
        }
    };
    let response = match h2up::response_head_of(store, ex, &lease, got, !taken.replay.overflowed) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // The request's own body is left behind once the backend answered before it ended.
    let body_done = taken.body.is_done();
    drop(up_body);
    d.body = std::mem::replace(&mut taken.body, Body::new(Framing::None));
    if !body_done {
        d.keep_alive = false;
    }
    let (rparts, mut rbody) = response.into_parts();
    let no_body = head_request
        || rparts.status == http::StatusCode::NO_CONTENT
        || rparts.status == http::StatusCode::NOT_MODIFIED;
    let length = rparts.headers.get(http::header::CONTENT_LENGTH).cloned();
    let chunked = !no_body && length.is_none() && !d.head.is_http10();
    if !no_body && length.is_none() && d.head.is_http10() {
        // Delimited by the close.
        d.keep_alive = false;
    }
    let close = !d.keep_alive;
    let mut head = Vec::with_capacity(512);
    let built = respond::response_edits(ex, &rparts.headers, |e| {
        response_head(&mut head, &rparts, e, chunked, close, d.head.is_http10())
    });
    if let Err(what) = built {
        return relay::upstream_failed(
            store,
            ex,
            wire::upstream_error(ErrorType::InvalidHTTPHeader, what, None),
        );
    }
    if wire::write_all(d.stream, &head).await.is_err() {
        return Relayed::Failed(Failed::client());
    }
    d.written = Some(rparts.status.as_u16());
    if !no_body || !rbody.is_end_stream() {
        loop {
            match wire::within(Some(timeout), rbody.data()).await {
                Ok(Some(Ok(data))) => {
                    let n = data.len();
                    if !no_body && n > 0 {
                        let r = if chunked {
                            let size = format!("{n:x}\r\n");
                            wire::write_two(d.stream, size.as_bytes(), &data)
                                .await
                                .and(wire::write_all(d.stream, b"\r\n").await)
                        } else {
                            wire::write_all(d.stream, &data).await
                        };
                        if r.is_err() {
                            return Relayed::Failed(Failed::client());
                        }
                    }
                    let _ = rbody.flow_control().release_capacity(n);
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    if e.is_go_away() || e.is_io() {
                        lease.retire();
                    }
                    d.keep_alive = false;
                    return relay::upstream_failed(
                        store,
                        ex,
                        h2_error(ErrorType::ReadError, "reading the response body", e),
                    );
                }
                Err(()) => {
                    d.keep_alive = false;
                    return relay::upstream_failed(
                        store,
                        ex,
                        wire::upstream_error(
                            ErrorType::ReadTimedout,
                            "reading the response body",
                            None,
                        ),
                    );
                }
            }
        }
        if chunked {
            let mut end = b"0\r\n".to_vec();
            if let Ok(Ok(Some(t))) = wire::within(Some(timeout), rbody.trailers()).await {
                for (n, v) in t.iter() {
                    if v.as_bytes().iter().all(|&c| codec::head::is_field_vchar(c)) {
                        end.extend_from_slice(n.as_str().as_bytes());
                        end.extend_from_slice(b": ");
                        end.extend_from_slice(v.as_bytes());
                        end.extend_from_slice(b"\r\n");
                    }
                }
            }
            end.extend_from_slice(b"\r\n");
            if wire::write_all(d.stream, &end).await.is_err() {
                return Relayed::Failed(Failed::client());
            }
        }
    }
    if d.keep_alive {
        Relayed::Done(Next::KeepAlive)
    } else {
        Relayed::Done(Next::Close {
            unread: !d.body.is_done(),
        })
    }
}

fn expects_continue(d: &Down<'_>) -> bool {
    let buf = d.hbuf.data();
    d.head
        .fields()
        .all(codec::Known::Expect)
        .any(|f| f.value.get(buf).eq_ignore_ascii_case(b"100-continue"))
}

fn outcome_exceeds(store: &Store, ex: &Exchange, read: u64) -> bool {
    crate::path::outcome::body_exceeds(store, ex, read)
}

/// The HTTP/1.1 request as an HTTP/2 one: `:authority` from `Host` (or an absolute-form
/// target), the fields less the hop-by-hop ones, those `Connection` names, `Host`, the framing
/// ones (HTTP/2 frames the body; a `content-length` stays) and `te`, with the forward stage's
/// edits.
fn request(ex: &Exchange, d: &Down<'_>, tls: bool) -> Result<http::Request<()>, &'static str> {
    let view = d.view();
    let buf = d.hbuf.data();
    let host = match (&view as &dyn Head).authority() {
        Some(a) => a,
        None => crate::http::host_header(&view),
    };
    let authority = http::uri::Authority::try_from(host).map_err(|_| "bad host")?;
    let pq = (&view as &dyn Head).path_and_query();
    let pq = if pq == b"*" { &b"/"[..] } else { pq };
    let method = http::Method::from_bytes(view.method()).map_err(|_| "bad method")?;
    let mut req = h2up::request_line(method, authority, pq, tls)?;
    let down = Downstream {
        client: d.client,
        tls: d.tls,
    };
    let fields = d.head.fields();
    forward::request_edits(ex, &view, &down, |e| {
        let edits = codec::Edits {
            drop_names: e.drop,
            ..codec::Edits::default()
        };
        let dropped = codec::write::dropped(fields, buf, &edits, false)
            | fields.mask(codec::Known::Host)
            | fields.mask(codec::Known::TransferEncoding)
            | fields.mask(codec::Known::Te)
            | fields.mask(codec::Known::Expect);
        let h = req.headers_mut();
        h.reserve(fields.len() + e.add.len());
        for i in codec::head::Bits(fields.all_mask() & !dropped) {
            let f = &fields.as_slice()[i];
            let n = HeaderName::from_bytes(f.name.get(buf)).map_err(|_| "bad field name")?;
            let v = HeaderValue::from_bytes(f.value.get(buf)).map_err(|_| "bad field value")?;
            h.append(n, v);
        }
        // `TE: trailers` crosses (a gRPC server asks for it); other codings are per hop.
        let trailers = fields
            .all(codec::Known::Te)
            .flat_map(|f| codec::head::list_items(f.value.get(buf)))
            .any(|t| t.eq_ignore_ascii_case(b"trailers"));
        if trailers {
            h.append(http::header::TE, HeaderValue::from_static("trailers"));
        }
        for (n, v) in e.add {
            let (n, v) = crate::engine::h2down::added_field(n, v)?;
            h.append(n, v);
        }
        Ok::<(), &'static str>(())
    })?;
    Ok(req)
}

/// The HTTP/1.1 response head for the client.
fn response_head(
    out: &mut Vec<u8>,
    r: &http::response::Parts,
    e: &crate::path::edits::Edits<'_>,
    chunked: bool,
    close: bool,
    http10: bool,
) -> Result<(), &'static str> {
    let reason = r.status.canonical_reason().unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", r.status.as_u16());
    for (n, v) in r.headers.iter() {
        let name = n.as_str();
        if NOT_RELAYED.contains(&name)
            || e.drop
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (n, v) in e.add {
        if !n.iter().all(|&c| codec::head::is_tchar(c))
            || !v
                .iter()
                .all(|&c| codec::head::is_field_vchar(c) || c == b' ' || c == b'\t')
        {
            return Err("invalid added field");
        }
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}
