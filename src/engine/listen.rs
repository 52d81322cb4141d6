//! Plain-TCP listeners of the HTTP/1.1 loop, accepted by tether itself (DESIGN.md §19): each
//! accepted connection becomes one small task running `Fast::serve`, nothing else. pingora's
//! listening service spawns, per connection, a task sized for its whole life including a
//! TLS-capable handshake under a timeout, and boxes the app's future on top: most of what an idle
//! keep-alive connection cost. TLS listeners stay on pingora's service (the handshake is theirs).
//!
//! Owns: binding the plain listeners (or taking them over from the process being upgraded,
//! through pingora's table of listening fds, to which a new bind is added so that the next
//! upgrade hands it on), the accept loops, and stopping them at shutdown. Must not touch: HTTP.

use std::os::unix::io::{AsRawFd, FromRawFd};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::protocols::Stream;
use pingora::server::{ListenFds, ShutdownWatch};
use tokio::net::{TcpListener, TcpSocket};

use crate::engine::fast::Fast;
use crate::state::tcp::Tcp;

/// The listen backlog (pingora's).
const BACKLOG: u32 = 65535;

/// The plain-TCP listeners and the loop that serves them.
pub struct Plain {
    addrs: Vec<String>,
    fast: Arc<Fast>,
    threads: usize,
}

impl Plain {
    pub fn new(addrs: Vec<String>, fast: Fast, threads: usize) -> Plain {
        Plain {
            addrs,
            fast: Arc::new(fast),
            threads,
        }
    }
}

#[async_trait]
impl pingora::services::Service for Plain {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut loops = Vec::new();
        for addr in &self.addrs {
            let listener = match listener(addr, fds.as_ref()).await {
                Ok(l) => l,
                Err(e) => {
                    // As pingora's own listeners do: a listener that cannot be had is fatal.
                    tracing::error!("cannot listen on {addr}: {e}");
                    std::process::exit(1);
                }
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                self.fast.clone(),
                shutdown.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
    }

    fn name(&self) -> &str {
        "tether http"
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }
}

/// The listener for `addr`: the one the process being upgraded handed over, else a new one
/// (recorded in the table, for the next upgrade).
#[allow(unsafe_code)]
async fn listener(addr: &str, fds: Option<&ListenFds>) -> std::io::Result<TcpListener> {
    if let Some(fd) = fds.and_then(|f| f.lock().get(addr).copied()) {
        // SAFETY: the fd came from pingora's table of listening sockets, handed over by the
        // process being upgraded for this address; nothing else in this process owns it.
        let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std.set_nonblocking(true)?;
        return TcpListener::from_std(std);
    }
    let sock_addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = if sock_addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(sock_addr)?;
    let listener = socket.listen(BACKLOG)?;
    if let Some(f) = fds {
        f.lock().add(addr.to_string(), listener.as_raw_fd());
    }
    Ok(listener)
}

/// Accepts until the shutdown: each connection a task of its own, holding its stream and the
/// HTTP/1.1 loop's state only.
async fn accept_loop(listener: TcpListener, fast: Arc<Fast>, mut shutdown: ShutdownWatch) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            changed = shutdown.changed() => {
                // The server is shutting down (or gone): stop accepting.
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off a little rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // tokio's stream as it is (no pingora l4 wrapper: nothing per poll but the read).
        let stream: Stream = Box::new(Tcp::new(tcp));
        let (fast, shutdown) = (fast.clone(), shutdown.clone());
        tokio::spawn(async move { fast.serve(stream, &shutdown).await });
    }
}
