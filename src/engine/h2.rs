//! The HTTP/2 connection loop (DESIGN.md §12, §20): a client connection that negotiated `h2`
//! by ALPN (or sent the cleartext prior-knowledge preface on a plain listener with
//! `[server] h2c = true`) is served by the `h2` crate's server connection, with tether's limits
//! as its settings, and each stream it accepts becomes a task of its own (`stream`).
//!
//! Owns: the connection's settings and life — `max_header_size` as
//! `SETTINGS_MAX_HEADER_LIST_SIZE` (enforced by `h2`: `431` on the stream),
//! `max_concurrent_streams`, the handshake and every header block within `header_timeout`
//! (the client's frames are scanned as they arrive: [`Watched`]), GOAWAY after
//! `keepalive_timeout` without a stream and at a graceful shutdown, and the count of
//! connections closed for a protocol error or a flood (rapid reset and CONTINUATION floods are
//! caught by `h2` itself, which answers GOAWAY) as `h2_protocol`. Must not touch: what a stream
//! does (the stages', through `stream`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::engine::shared::Shared;
use crate::engine::stream;
use crate::engine::wire;
use crate::h1::buf::Buf;
use crate::path::exchange::Active;
use crate::path::head::ClientIp;
use crate::path::read::Reject;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many streams a client may reset before tether accepts them (`h2`'s rapid-reset guard,
/// CVE-2023-44487): past this the connection is closed with GOAWAY.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// What the stream tasks of one connection tell its loop: how many run, and when the last one
/// ended (milliseconds since the connection began).
struct Streams {
    active: AtomicUsize,
    last_end_ms: AtomicU64,
}

/// Counts a stream for as long as it runs.
struct Running {
    streams: Arc<Streams>,
    epoch: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.streams.last_end_ms.fetch_max(ms, Ordering::Relaxed);
        self.streams.active.fetch_sub(1, Ordering::Release);
    }
}

/// [`serve`], its state on the heap. The HTTP/1.1 loop hands a connection over to HTTP/2 with
/// this: inline, the HTTP/2 connection's state (about 4.5 KiB: `h2`'s codec and tables, the
/// timers) would size every connection's task, and an idle HTTP/1.1 connection would hold it.
pub async fn serve_boxed<S>(
    fast: Arc<Shared>,
    io: S,
    pre: Option<Buf>,
    client: ClientIp,
    tls: bool,
    shutdown: &ShutdownWatch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    Box::pin(serve(fast, io, pre, client, tls, shutdown)).await
}

/// Serves one HTTP/2 connection until it closes. `pre`: its first bytes, when the HTTP/1.1
/// loop already read them (the prior-knowledge preface on a plain listener).
pub async fn serve<S>(
    fast: Arc<Shared>,
    io: S,
    pre: Option<Buf>,
    client: ClientIp,
    tls: bool,
    shutdown: &ShutdownWatch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Until its first stream comes, a new connection is a request on its way (a graceful
    // shutdown waits for it), as on HTTP/1.1.
    let mut fresh = Some(Active::begin());
    let limits = fast.store.limits();
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_size.min(u32::MAX as usize) as u32)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
    let clock = Arc::new(HeadClock {
        epoch: Instant::now(),
        open_since: AtomicU64::new(0),
        opened: tokio::sync::Notify::new(),
    });
    let io = Watched {
        io,
        pre,
        scan: FrameScan {
            preface_left: PREFACE.len(),
            ..FrameScan::default()
        },
        clock: clock.clone(),
    };
    let handshake = wire::within(
        Some(limits.header_timeout),
        builder.handshake::<_, Bytes>(io),
    )
    .await;
    let mut conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if !e.is_io() {
                refused(&fast, Reject::H2Protocol, &e);
            }
            return;
        }
        Err(()) => {
            fast.store.metrics().rejected[Reject::HeaderTimeout.index()].inc();
            return;
        }
    };
    let epoch = Instant::now();
    let streams = Arc::new(Streams {
        active: AtomicUsize::new(0),
        last_end_ms: AtomicU64::new(0),
    });
    let idle = limits.keepalive_timeout;
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    // Armed while a header block is open: `header_timeout` from its first byte.
    let head_timer = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(head_timer);
    let mut head_armed = false;
    // tether closed the connection itself (its GOAWAY is not the client's protocol error).
    let mut timed_out = false;
    let mut shutdown = shutdown.clone();
    // A shutdown that began while the connection was being set up: its first streams (sent
    // before they see the GOAWAY) are still served.
    let mut closing = *shutdown.borrow_and_update();
    if closing {
        conn.graceful_shutdown();
    }
    loop {
        tokio::select! {
            biased;
            accepted = conn.accept() => match accepted {
                Some(Ok((req, respond))) => {
                    fresh = None;
                    streams.active.fetch_add(1, Ordering::Relaxed);
                    let running = Running { streams: streams.clone(), epoch };
                    let fast = fast.clone();
                    tokio::spawn(async move {
                        let _running = running;
                        stream::serve(fast, req, respond, client, tls, limits).await;
                    });
                }
                Some(Err(e)) => {
                    // `h2` closed the connection itself (GOAWAY): a protocol error or a flood.
                    if e.is_go_away() && e.is_library() && !timed_out {
                        refused(&fast, Reject::H2Protocol, &e);
                    }
                    break;
                }
                None => break,
            },
            _ = &mut timer, if !closing => {
                // Idle: no stream ran for `keepalive_timeout`.
                if streams.active.load(Ordering::Acquire) > 0 {
                    timer.as_mut().reset(Instant::now() + idle);
                } else {
                    let last = epoch + Duration::from_millis(streams.last_end_ms.load(Ordering::Relaxed));
                    if last + idle <= Instant::now() {
                        conn.graceful_shutdown();
                        closing = true;
                    } else {
                        timer.as_mut().reset(last + idle);
                    }
                }
            }
            _ = clock.opened.notified(), if !closing => {
                if let Some(t) = clock.open_since() {
                    head_timer.as_mut().reset(t + limits.header_timeout);
                    head_armed = true;
                }
            }
            _ = &mut head_timer, if head_armed && !closing => {
                head_armed = false;
                if let Some(t) = clock.open_since() {
                    if t + limits.header_timeout <= Instant::now() {
                        // A header block that did not complete in time: the connection goes,
                        // as an HTTP/1.1 one would with 408.
                        fast.store.metrics().rejected[Reject::HeaderTimeout.index()].inc();
                        tracing::debug!(reason = "header_timeout", "HTTP/2 connection closed");
                        conn.abrupt_shutdown(h2::Reason::PROTOCOL_ERROR);
                        closing = true;
                        timed_out = true;
                    } else {
                        head_timer.as_mut().reset(t + limits.header_timeout);
                        head_armed = true;
                    }
                }
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    // In-flight streams finish (and those the client sent before it sees the
                    // GOAWAY); no new ones are taken.
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    drop(fresh);
}

fn refused(fast: &Shared, r: Reject, e: &h2::Error) {
    fast.store.metrics().rejected[r.index()].inc();
    tracing::debug!(reason = r.reason(), error = %e, "HTTP/2 connection closed");
}

/// The `tracing` target of the `h2` event that tells of a header list over
/// `SETTINGS_MAX_HEADER_LIST_SIZE`, and the words it carries.
const H2_RECV_TARGET: &str = "h2::proto::streams::recv";
const OVERSIZE_WORDS: &str = "REQUEST_HEADER_FIELDS_TOO_LARGE";

/// Where [`Oversize`] counts (the `header_too_large` refusals).
static OVERSIZE: std::sync::OnceLock<prometheus::IntCounter> = std::sync::OnceLock::new();

/// Counts the `431`s `h2` sends itself. A header list over `max_header_size` (advertised as
/// `SETTINGS_MAX_HEADER_LIST_SIZE`) is answered by the crate, which never hands that stream to
/// tether: its one trace is the crate's own diagnostic event, which this `tracing` layer —
/// enabled for that target only ([`Oversize::targets`]) — turns into a `header_too_large`
/// refusal, like HTTP/1.1's. (`tests/http2_edge.rs` holds the count, so an `h2` upgrade that
/// changes the event is caught.)
pub struct Oversize;

impl Oversize {
    /// Where the refusals are counted (once per process).
    pub fn count_into(c: prometheus::IntCounter) {
        let _ = OVERSIZE.set(c);
    }

    /// The events this layer reads: `h2`'s stream-receive diagnostics, nothing else.
    pub fn targets() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new()
            .with_target(H2_RECV_TARGET, tracing::Level::DEBUG)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Oversize {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" && format!("{v:?}").contains(OVERSIZE_WORDS) {
                    self.0 = true;
                }
            }
        }
        if event.metadata().target() != H2_RECV_TARGET {
            return;
        }
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            if let Some(c) = OVERSIZE.get() {
                c.inc();
            }
        }
    }
}

/// Whether a client's header block is open (a HEADERS frame begun and its block not yet
/// ended), and since when: what `header_timeout` holds on HTTP/2, read off the frames as they
/// arrive ([`Watched`]). The connection loop is told when one stays open past a read.
struct HeadClock {
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 when the open block began; 0: none open.
    open_since: AtomicU64,
    opened: tokio::sync::Notify,
}

impl HeadClock {
    fn open_since(&self) -> Option<Instant> {
        match self.open_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }
}

/// Where the scan of the client's bytes is: the preface still to skip, a frame header being
/// read, the payload left of the current frame, and whether a header block is open.
#[derive(Default)]
struct FrameScan {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
    /// The current frame ends its header block (END_HEADERS on HEADERS or CONTINUATION).
    ends_block: bool,
    in_block: bool,
}

impl FrameScan {
    const HEADERS: u8 = 0x1;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;

    fn scan(&mut self, mut data: &[u8]) {
        let skip = self.preface_left.min(data.len());
        self.preface_left -= skip;
        data = &data[skip..];
        while !data.is_empty() {
            if self.payload_left > 0 {
                let k = self.payload_left.min(data.len());
                self.payload_left -= k;
                data = &data[k..];
                if self.payload_left == 0 && self.ends_block {
                    self.in_block = false;
                }
                continue;
            }
            let k = (9 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + k].copy_from_slice(&data[..k]);
            self.header_len += k;
            data = &data[k..];
            if self.header_len < 9 {
                break;
            }
            self.header_len = 0;
            let h = &self.header;
            self.payload_left = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
            self.ends_block = false;
            if h[3] == Self::HEADERS || h[3] == Self::CONTINUATION {
                self.in_block = true;
                self.ends_block = h[4] & Self::END_HEADERS != 0;
                if self.payload_left == 0 && self.ends_block {
                    self.in_block = false;
                }
            }
        }
    }

    /// A header block is open, or a frame header is half read (it may begin one).
    fn open(&self) -> bool {
        self.in_block || self.header_len > 0
    }
}

/// The client's stream — after the bytes already read of it, if any — its incoming frames
/// scanned for header blocks left open ([`HeadClock`]).
struct Watched<S> {
    io: S,
    pre: Option<Buf>,
    scan: FrameScan,
    clock: Arc<HeadClock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = out.filled().len();
        let r = match this.pre.as_mut() {
            Some(pre) => {
                let n = pre.len().min(out.remaining());
                out.put_slice(&pre.data()[..n]);
                pre.consume(n);
                if pre.is_empty() {
                    this.pre = None;
                }
                Poll::Ready(Ok(()))
            }
            None => Pin::new(&mut this.io).poll_read(cx, out),
        };
        if matches!(r, Poll::Ready(Ok(()))) && out.filled().len() > before {
            let was_open = this.scan.open();
            this.scan.scan(&out.filled()[before..]);
            match (was_open, this.scan.open()) {
                (false, true) => {
                    let ms = this.clock.epoch.elapsed().as_millis() as u64 + 1;
                    this.clock.open_since.store(ms, Ordering::Relaxed);
                    this.clock.opened.notify_one();
                }
                (true, false) => this.clock.open_since.store(0, Ordering::Relaxed),
                _ => {}
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
