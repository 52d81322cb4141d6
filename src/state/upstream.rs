//! Upstream connections of the HTTP/1.1 fast path (DESIGN.md §11): new ones through Pingora's
//! connector, idle ones kept per worker thread for reuse.
//!
//! Owns: the idle connections. Each worker thread keeps its own (a thread-local list per
//! [`Key`] — backend address and TLS identity — most recently used first), so taking one is a pop with no lock and no task watches
//! an idle connection: a connection the backend closed while idle is found when it is taken (one
//! non-blocking read poll), and a request that then gets no response byte on a reused connection
//! is retried on a fresh one by the caller when it is idempotent. Must not touch: HTTP.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, ReadBuf};

/// Idle connections kept per backend and worker thread. HTTP/2 clients bring many requests in
/// flight at once (100 streams per connection by default), all to one backend for a sticky
/// session: with 128, 640 streams in flight to one backend closed and reopened most of their
/// connections (h2load cookie scenario: 1.6x HAProxy's CPU per request instead of 1.1x).
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed instead of reused (most servers close idle
/// keep-alive connections after 5–75 s; this keeps tether from racing their timer).
const MAX_IDLE_TIME: Duration = Duration::from_secs(4);

/// Which idle connections a request may take: the backend's address and the TLS identity of its
/// pool (`0` for plain HTTP; see [`crate::state::upstream_tls::PoolTls::identity`]), so a plain and a
/// TLS pool to the same address, or two pools with different SNI, CA or client certificate,
/// never share a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub addr: SocketAddr,
    pub tls: u64,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A connection to a backend, and whether it was reused (which makes a failure before any
/// response byte retryable).
pub struct Conn {
    pub stream: Stream,
    pub reused: bool,
}

/// Makes connections.
pub struct Upstreams {
    connector: TransportConnector,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

impl Upstreams {
    pub fn new() -> Upstreams {
        Upstreams {
            connector: TransportConnector::new(None),
        }
    }

    /// An idle connection under `key` (`peer`'s address and TLS identity) if this thread has a
    /// live one, else a new one (with the peer's connect timeout).
    pub async fn get(&self, key: Key, peer: &HttpPeer) -> pingora::Result<Conn> {
        if let Some(stream) = take(key) {
            return Ok(Conn {
                stream,
                reused: true,
            });
        }
        // Boxed: the connector's future (TCP connect, TLS handshake) is several KiB, and a
        // request that reuses a connection should not carry it in its state.
        Box::pin(self.fresh(peer)).await
    }

    /// A new connection: a plain one straight on tokio's `TcpStream` (within the peer's
    /// connect timeout), a TLS one through pingora's connector.
    pub async fn fresh(&self, peer: &HttpPeer) -> pingora::Result<Conn> {
        use pingora::upstreams::peer::Peer;
        let stream: Stream = match (peer.tls(), peer.address().as_inet()) {
            (false, Some(addr)) => Box::new(crate::state::tcp::Tcp::new(
                connect(*addr, peer.connection_timeout()).await?,
            )),
            _ => self.connector.new_stream(peer).await?,
        };
        Ok(Conn {
            stream,
            reused: false,
        })
    }
}

/// Keeps a connection whose last exchange ended cleanly for the next request under `key` on
/// this thread.
pub fn put(key: Key, stream: Stream) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    })
}

/// Drops every idle connection of this thread (shutdown).
pub fn clear() {
    IDLE.with(|idle| idle.borrow_mut().clear())
}

fn take(key: Key) -> Option<Stream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        while let Some(mut c) = list.pop() {
            if c.since.elapsed() < MAX_IDLE_TIME && still_open(&mut c.stream) {
                return Some(c.stream);
            }
        }
        None
    })
}

/// Whether an idle connection is still usable: a read must find nothing to read yet. End of
/// stream, an error or unexpected bytes (a late response, a server's goodbye) all disqualify it.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(&mut *stream).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

/// Connects to a plain-TCP backend, as pingora's connector would fail: `ConnectTimedout` after
/// `limit`, `ConnectRefused`, `ConnectNoRoute`, else `ConnectError`.
async fn connect(
    addr: SocketAddr,
    limit: Option<Duration>,
) -> pingora::Result<tokio::net::TcpStream> {
    use pingora::{Error, ErrorType};
    let attempt = tokio::net::TcpStream::connect(addr);
    let r = match limit {
        Some(d) => match tokio::time::timeout(d, attempt).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::explain(
                    ErrorType::ConnectTimedout,
                    format!("connecting to {addr} timed out"),
                ))
            }
        },
        None => attempt.await,
    };
    r.map_err(|e| {
        let etype = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
            std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                ErrorType::ConnectNoRoute
            }
            _ => ErrorType::ConnectError,
        };
        Error::because(etype, format!("connecting to {addr}"), e)
    })
}
