//! The client's side of one HTTP/2 stream (DESIGN.md §20): what the stream's request path
//! (`stream`) and an HTTP/2 backend's relay (`h2up`) hold of it — the response handle, the
//! request body, the response body's stream once started — how a stream waiting in a breaker
//! queue notices its client leaving, and DATA sent within the client's flow-control window.
//!
//! Owns: the client stream's state and its flow-controlled sends. Must not touch: decisions.

use std::future::poll_fn;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use pingora::ErrorType;

use crate::engine::attempt::{self, Relayed};
use crate::engine::down::{Failed, BODY_READ_TIMEOUT};
use crate::engine::wire;
use crate::path::exchange::Exchange;
use crate::path::head::ClientIp;
use crate::path::pick;
use crate::snapshot::Store;

/// The client's side of one stream.
pub(super) struct Down {
    pub(super) respond: SendResponse<Bytes>,
    pub(super) body: RecvStream,
    /// The response body's stream, once the response head was sent with a body to follow.
    pub(super) send: Option<SendStream<Bytes>>,
    pub(super) client: ClientIp,
    pub(super) tls: bool,
    /// The request is gRPC: tether's own answers are gRPC statuses (DESIGN.md §21).
    pub(super) grpc: bool,
    /// The request body has ended (END_STREAM seen).
    pub(super) body_done: bool,
    /// Request body bytes received so far.
    pub(super) body_read: u64,
    /// The request body goes to the backend chunked (no `content-length` was given).
    pub(super) chunked_up: bool,
    /// The status of the final response head sent, once one was.
    pub(super) written: Option<u16>,
}

/// The client side of a stream waiting in a breaker queue: gone once it resets the stream.
pub(super) struct Reset<'a>(pub(super) &'a mut SendResponse<Bytes>);

impl pick::Client for Reset<'_> {
    async fn gone(&mut self) {
        let _ = poll_fn(|cx| self.0.poll_reset(cx)).await;
    }
}

impl Down {
    /// Sends the client the response head built from the backend's (`built`, or why the
    /// backend's head could not be relayed: an upstream failure) with `status`; `end`: no body
    /// follows. `None` when sent, else how the attempt ends.
    pub(super) fn send_head(
        &mut self,
        store: &Store,
        ex: &mut Exchange,
        built: Result<http::Response<()>, &'static str>,
        status: u16,
        end: bool,
    ) -> Option<Relayed> {
        let head = match built {
            Ok(h) => h,
            Err(what) => {
                return Some(attempt::upstream_failed(
                    store,
                    ex,
                    wire::upstream_error(ErrorType::InvalidHTTPHeader, what, None),
                ))
            }
        };
        match self.respond.send_response(head, end) {
            Ok(send) => {
                if !end {
                    self.send = Some(send);
                }
            }
            Err(_) => return Some(Relayed::Failed(Failed::client())),
        }
        self.written = Some(status);
        None
    }
}

/// The largest last DATA frame sent without waiting for window.
const SMALL_LAST_FRAME: usize = 16 * 1024;

/// Sends `data` within the stream's flow-control window (waiting for the client to open it, at
/// most [`BODY_READ_TIMEOUT`] at a time); `end`: the last frame.
pub(super) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), ()> {
    if end && data.len() <= SMALL_LAST_FRAME {
        // A small last frame is handed to `h2` as it is (it holds it until the window opens):
        // memory stays bounded, and the common response needs no wait for the window.
        return send.send_data(data, true).map_err(|_| ());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        // `h2` assigns what the windows allow at once: most frames need no wait (and no timer).
        if send.capacity() >= data.len() {
            return send.send_data(data, end).map_err(|_| ());
        }
        let cap = match wire::within(
            Some(BODY_READ_TIMEOUT),
            poll_fn(|cx| send.poll_capacity(cx)),
        )
        .await
        {
            Ok(Some(Ok(c))) => c,
            _ => return Err(()),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, end && data.is_empty())
            .map_err(|_| ())?;
    }
    Ok(())
}

/// One field a stage adds, as an HTTP/2 field: the names tether adds on every request are
/// taken from static storage (no allocation, no lower-casing), and values new on every request
/// (the request id, the trace context) are marked never-indexed, so that HPACK sends them as
/// literals instead of churning the connection's dynamic table out of the fields that repeat.
pub(super) fn added_field(
    name: &[u8],
    value: &[u8],
) -> Result<(http::HeaderName, http::HeaderValue), &'static str> {
    const KNOWN: [&str; 9] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "traceparent",
        "tracestate",
        "cookie",
        "set-cookie",
        "cache-control",
    ];
    let n = match KNOWN
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
    {
        Some(k) => http::HeaderName::from_static(k),
        None => http::HeaderName::from_bytes(name).map_err(|_| "invalid added field name")?,
    };
    let mut v = http::HeaderValue::from_bytes(value).map_err(|_| "invalid added field")?;
    if matches!(n.as_str(), "x-request-id" | "traceparent" | "tracestate") {
        v.set_sensitive(true);
    }
    Ok((n, v))
}
