//! HTTP/2 connections to backends of pools with `protocol = "h2c"` or `"h2"` (DESIGN.md §21):
//! a few per backend and worker thread, each carrying as many streams at once as the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` allows; another connection is opened only when every one
//! is full.
//!
//! Owns: the client connections (the `h2` crate's, over a connection from [`Upstreams`]), their
//! tasks, and which connection a new stream goes on. A connection the backend sent GOAWAY on,
//! or that failed, takes no new stream: its streams in flight finish on it (the `h2` crate
//! keeps driving it) and it is forgotten. Must not touch: HTTP semantics (the request path's).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use tokio::sync::Notify;

use crate::state::upstream::{Key, Upstreams};

/// Connections kept per backend and worker thread. Beyond this, new streams share the least
/// busy connection (the `h2` crate queues a stream until the backend allows it to open).
const MAX_CONNS: usize = 16;
/// A connection that carried no stream for this long is closed when next looked at.
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);
/// Streams assumed per connection until the backend's SETTINGS say otherwise.
const DEFAULT_STREAMS: usize = 100;
/// Flow-control windows tether offers a backend: a stream's response may run ahead of a slow
/// client by this much (per stream), all streams of a connection by the connection's.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 4 * 1024 * 1024;

struct Shared {
    /// Streams of tether's in flight on the connection.
    streams: AtomicUsize,
    /// The connection ended or refused a stream (GOAWAY, error): no new stream goes on it.
    closed: AtomicBool,
}

struct H2Conn {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
    idle_since: Instant,
}

/// How long a new connection waits for the backend's answer to its first PING (its SETTINGS come
/// first); past it, the connection is used with the limit as known then.
const SETTINGS_WAIT: Duration = Duration::from_secs(1);

/// How often the connections of every key are looked over (on the way to a new stream).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static SWEPT: std::cell::Cell<Instant> = std::cell::Cell::new(Instant::now());
    static CONNS: RefCell<HashMap<Key, Vec<H2Conn>>> = RefCell::new(HashMap::new());
    /// Connections being opened, per key: how many, how the streams waiting for them are
    /// woken, and how many streams wait.
    static CONNECTING: RefCell<HashMap<Key, Opening>> = RefCell::new(HashMap::new());
}

struct Opening {
    conns: usize,
    wake: Arc<Notify>,
    waiting: usize,
}

/// Counts one connection being opened under a key until dropped (opened, failed, or the
/// stream that opened it went away), then wakes the streams that waited for it.
struct Connecting(Key);

impl Connecting {
    fn start(key: Key) -> Connecting {
        CONNECTING.with(|c| {
            let mut c = c.borrow_mut();
            let e = c.entry(key).or_insert_with(|| Opening {
                conns: 0,
                wake: Arc::new(Notify::new()),
                waiting: 0,
            });
            e.conns += 1;
        });
        Connecting(key)
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        CONNECTING.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(e) = c.get_mut(&self.0) {
                e.conns -= 1;
                e.wake.notify_waiters();
                if e.conns == 0 && e.waiting == 0 {
                    c.remove(&self.0);
                }
            }
        });
    }
}

/// A place on a connection being opened under `key`, if one has room: a stream waits for it
/// rather than opening one of its own, so a burst on a cold thread shares the new connections
/// (as many streams as the backend allows on each, as its open connections say, else
/// [`DEFAULT_STREAMS`]). Counted as waiting until dropped.
struct Waiting(Key);

impl Waiting {
    fn join(key: Key, per_conn: usize) -> Option<(Waiting, Arc<Notify>)> {
        CONNECTING.with(|c| {
            let mut c = c.borrow_mut();
            let e = c.get_mut(&key)?;
            // Each connection's first stream is its opener's.
            if e.waiting >= e.conns * per_conn.saturating_sub(1) {
                return None;
            }
            e.waiting += 1;
            Some((Waiting(key), e.wake.clone()))
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        CONNECTING.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(e) = c.get_mut(&self.0) {
                e.waiting -= 1;
                if e.conns == 0 && e.waiting == 0 {
                    c.remove(&self.0);
                }
            }
        });
    }
}

/// The streams the backend under `key` allows per connection, as this thread's open
/// connections to it know (their SETTINGS), else [`DEFAULT_STREAMS`].
fn per_conn(key: Key) -> usize {
    CONNS.with(|conns| {
        conns
            .borrow()
            .get(&key)
            .and_then(|l| l.iter().map(|c| c.send.current_max_send_streams()).min())
            .filter(|n| *n != usize::MAX)
            .map_or(DEFAULT_STREAMS, |n| n.max(1))
    })
}

/// The right to open one stream on a connection; the connection counts it until dropped.
pub struct Lease {
    pub send: SendRequest<Bytes>,
    /// The connection carried streams before this one (a failure before any response byte may
    /// be a connection the backend was closing).
    pub reused: bool,
    shared: Arc<Shared>,
}

impl Lease {
    /// The backend refused this connection for new streams (GOAWAY, or a connection error when
    /// the stream was sent): no later stream is put on it.
    pub fn retire(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream slot to the backend `peer` under `key`: on a connection of this thread with room,
/// else a new connection (cleartext prior knowledge, or TLS with ALPN `h2` when the peer is
/// TLS). A stream sent again after a refusal comes here too: the connection that went away
/// (GOAWAY, an IO error) was retired and is never taken again, while one that refused a single
/// stream (`REFUSED_STREAM`) stays, within the per-backend connection cap.
pub async fn get(upstreams: &Upstreams, key: Key, peer: &HttpPeer) -> pingora::Result<Lease> {
    // Bounded: each pass waits for a connection being opened to finish, and a stream waits at
    // most as many times as there are connections allowed per backend.
    for _ in 0..MAX_CONNS {
        if let Some(l) = take(key) {
            return Ok(l);
        }
        let Some((_waiting, wake)) = Waiting::join(key, per_conn(key)) else {
            break;
        };
        // Registered before this task yields: on this thread's runtime the connection cannot
        // finish in between. If it failed, the next pass finds no room and this stream opens
        // its own (and fails over as usual).
        wake.notified().await;
    }
    let _connecting = Connecting::start(key);
    let c = Box::pin(connect(upstreams, peer)).await?;
    let lease = lease(&c, false);
    CONNS.with(|conns| conns.borrow_mut().entry(key).or_default().push(c));
    Ok(lease)
}

fn lease(c: &H2Conn, reused: bool) -> Lease {
    c.shared.streams.fetch_add(1, Ordering::AcqRel);
    Lease {
        send: c.send.clone(),
        reused,
        shared: c.shared.clone(),
    }
}

/// A slot on a live connection with room (or, with `MAX_CONNS` connections open, on the least
/// busy one); forgets closed and long-idle connections on the way.
fn take(key: Key) -> Option<Lease> {
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        let now = Instant::now();
        if SWEPT.with(|s| now.duration_since(s.get()) >= SWEEP_EVERY) {
            // Every key, not only this one: connections to backends no request asks for any
            // more (removed by a reload, or long quiet) are closed too.
            SWEPT.with(|s| s.set(now));
            conns.retain(|_, list| {
                list.retain_mut(|c| alive(c, now));
                !list.is_empty()
            });
        }
        let list = conns.get_mut(&key)?;
        list.retain_mut(|c| alive(c, now));
        let room = |c: &H2Conn| {
            let max = match c.send.current_max_send_streams() {
                usize::MAX => DEFAULT_STREAMS,
                n => n.max(1),
            };
            c.shared.streams.load(Ordering::Acquire) < max
        };
        if let Some(c) = list.iter_mut().find(|c| room(c)) {
            c.idle_since = now;
            return Some(lease(c, true));
        }
        // Connections being opened count toward the cap.
        let opening = CONNECTING.with(|c| c.borrow().get(&key).map_or(0, |e| e.conns));
        if list.len() + opening >= MAX_CONNS {
            let c = list
                .iter_mut()
                .min_by_key(|c| c.shared.streams.load(Ordering::Acquire))?;
            c.idle_since = now;
            return Some(lease(c, true));
        }
        None
    })
}

/// Whether a kept connection may take new streams: not closed, and busy or idle for less than
/// [`MAX_IDLE_TIME`] (a forgotten idle connection closes once its last handle is dropped).
fn alive(c: &mut H2Conn, now: Instant) -> bool {
    let busy = c.shared.streams.load(Ordering::Acquire);
    if busy > 0 {
        c.idle_since = now;
    }
    !c.shared.closed.load(Ordering::Acquire)
        && (busy > 0 || now.duration_since(c.idle_since) < MAX_IDLE_TIME)
}

/// A new HTTP/2 connection to `peer`, its connection task spawned on this thread's runtime.
async fn connect(upstreams: &Upstreams, peer: &HttpPeer) -> pingora::Result<H2Conn> {
    use pingora::upstreams::peer::Peer;
    let conn = upstreams.fresh(peer).await?;
    let stream = conn.stream;
    if peer.tls() && stream.selected_alpn_proto() != Some(ALPN::H2) {
        return Err(Error::explain(
            ErrorType::ConnectProxyFailure,
            format!(
                "the backend at {} did not negotiate HTTP/2 (ALPN h2) over TLS",
                peer.address()
            ),
        ));
    }
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(256 * 1024)
        .enable_push(false)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| {
            Error::because(
                ErrorType::ConnectError,
                format!("HTTP/2 handshake with {}", peer.address()),
                e,
            )
        })?;
    let shared = Arc::new(Shared {
        streams: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    });
    let watch = shared.clone();
    let addr = peer.address().to_string();
    let ping = connection.ping_pong();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(backend = %addr, error = %e, "HTTP/2 connection to the backend ended");
        }
        watch.closed.store(true, Ordering::Release);
    });
    // Until the backend's SETTINGS arrive its stream limit is unknown (unlimited, per RFC 9113),
    // and the streams of a burst waiting for this connection would all go on it, to be
    // refused beyond the real limit and sent again elsewhere. A backend sends its SETTINGS
    // before it answers anything, so once it answers a PING the limit is known.
    if let Some(mut ping) = ping {
        let _ = tokio::time::timeout(SETTINGS_WAIT, ping.ping(h2::Ping::opaque())).await;
    }
    Ok(H2Conn {
        send,
        shared,
        idle_since: Instant::now(),
    })
}

/// Drops every connection of this thread (shutdown): streams in flight keep theirs.
pub fn clear() {
    CONNS.with(|conns| conns.borrow_mut().clear())
}

/// Whether an error on a stream means the backend never processed it (refused before it was
/// looked at: GOAWAY past its id, `REFUSED_STREAM`): safe to send again on another connection.
pub fn never_processed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_streams_may_be_sent_again() {
        let refused: h2::Error = h2::Reason::REFUSED_STREAM.into();
        assert!(never_processed(&refused));
        let reset: h2::Error = h2::Reason::INTERNAL_ERROR.into();
        assert!(!never_processed(&reset));
    }
}
