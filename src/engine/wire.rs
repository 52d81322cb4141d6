//! The byte IO of the HTTP/1.1 loop (DESIGN.md §19): reads into pooled buffers (a buffer is
//! taken only when bytes are there to read, and handed back when nothing is left in it), writes
//! with a flush, deadlines, the wait for a keep-alive connection's next request, the lingering
//! close, and IO failures as the `pingora::Error`s the outcome rules read.
//!
//! Owns: how bytes move between a socket and a buffer. Must not touch: HTTP (the codec's), what
//! a request becomes (the stages').

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::h1::buf::{self, Buf};

/// Reads into `slot`'s buffer, taking one from the thread's pool when the slot is empty; a
/// buffer that stays empty (nothing was ready, an error, the end) goes straight back. Ready
/// with the number of bytes read (0: the peer closed its side). `slot`'s buffer must have room.
pub fn poll_read_pooled(
    stream: &mut Stream,
    slot: &mut Option<Buf>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut b = slot.take().unwrap_or_else(buf::take);
    let r = poll_read_into(stream, &mut b, cx);
    if !b.is_empty() {
        *slot = Some(b);
    }
    r
}

/// Reads into the free room of `b` (which must have some), committing what came at once: a
/// future made of this may be dropped at any time without losing a byte.
pub fn poll_read_into(
    stream: &mut Stream,
    b: &mut Buf,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let spare = b.spare_mut();
    debug_assert!(!spare.is_empty(), "a read needs room");
    let mut rb = ReadBuf::new(spare);
    match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            b.filled(n);
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// [`poll_read_into`] as a future.
pub fn read_into<'a>(
    stream: &'a mut Stream,
    b: &'a mut Buf,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| poll_read_into(stream, b, cx))
}

/// [`poll_read_pooled`] as a future.
pub fn read_pooled<'a>(
    stream: &'a mut Stream,
    slot: &'a mut Option<Buf>,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| poll_read_pooled(stream, slot, cx))
}

/// Writes all of `bytes` and flushes (a stream may buffer writes).
pub async fn write_all(stream: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Writes `a` then `b` (a head and body bytes that did not fit after it in its buffer) and
/// flushes; with `b` empty, one write.
pub async fn write_two(stream: &mut Stream, a: &[u8], b: &[u8]) -> io::Result<()> {
    if b.is_empty() {
        return write_all(stream, a).await;
    }
    stream.write_all(a).await?;
    stream.write_all(b).await?;
    stream.flush().await
}

/// `fut` within `limit`, if there is one: `Err(())` when it ran out.
pub async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Result<T, ()> {
    // tokio's timer: the entry lives in the future itself (pingora's fast timeout boxes one
    // per call that waits: an allocation per upstream read).
    match limit {
        Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| ()),
        None => Ok(fut.await),
    }
}

/// An upstream IO failure as the error the outcome rules read: `what` names the step.
pub fn upstream_error(etype: ErrorType, what: &'static str, e: Option<io::Error>) -> Box<Error> {
    let cause = e.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
    Error::create(etype, ErrorSource::Upstream, Some(what.into()), cause)
}

/// How a keep-alive connection's wait for its next request ended.
pub enum Wait {
    /// Bytes came (they are in the slot's buffer).
    Bytes,
    /// The client closed, failed, stayed idle past the keep-alive timeout, or the server is
    /// shutting down: close.
    Done,
}

/// How long a connection accepted before a graceful shutdown began still waits for its first
/// request once it has: a client that connected just before the listener closed is served.
pub const FIRST_REQUEST_AFTER_SHUTDOWN: Duration = Duration::from_secs(1);

/// Waits for the first bytes of the next request, holding no buffer until they come. A
/// request already there is read at once, without arming a timer; a shutdown closes an idle
/// keep-alive connection (a client retries a request on a reused connection that closes), but
/// a new one (`fresh`) was accepted for a request that may still be on its way and gets
/// [`FIRST_REQUEST_AFTER_SHUTDOWN`] for it.
pub async fn wait_first(
    stream: &mut Stream,
    slot: &mut Option<Buf>,
    shutdown: &ShutdownWatch,
    keepalive: Duration,
    fresh: bool,
) -> Wait {
    let ready = {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        poll_read_pooled(stream, slot, &mut cx)
    };
    match ready {
        Poll::Ready(Ok(n)) if n > 0 => return Wait::Bytes,
        Poll::Ready(_) => return Wait::Done,
        Poll::Pending => {}
    }
    if *shutdown.borrow() && !fresh {
        return Wait::Done;
    }
    let mut shutdown = shutdown.clone();
    let stop = async move {
        if !*shutdown.borrow_and_update() {
            let _ = shutdown.changed().await;
        }
        if fresh {
            tokio::time::sleep(FIRST_REQUEST_AFTER_SHUTDOWN).await;
        }
    };
    tokio::select! {
        r = read_pooled(stream, slot) => match r {
            Ok(n) if n > 0 => Wait::Bytes,
            _ => Wait::Done,
        },
        _ = tokio::time::sleep(keepalive) => Wait::Done,
        _ = stop => Wait::Done,
    }
}

/// How long, and how much, a close waits for and discards what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes a client connection. With request bytes still unread (an answer before the body
/// ended, a refused head), a plain close would make the kernel reset the connection, and a
/// reset can destroy the answer on its way to the client: so first end the sending side, then
/// read and discard what still comes for a short while (a lingering close, like NGINX's).
pub async fn close(stream: &mut Stream, unread: bool) {
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    if !unread {
        return;
    }
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            let mut slot = None;
            match read_pooled(stream, &mut slot).await {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            }
        }
    })
    .await;
}
