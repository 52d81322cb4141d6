//! A plain TCP connection as pingora's stream type (DESIGN.md §19): tokio's `TcpStream` and its
//! socket digest, nothing else — no buffering layers and no per-poll timing bookkeeping (pingora's
//! `l4::Stream` reads the clock on every pending and every ready poll). Used for the fast
//! engine's plain-TCP client connections and its plain-TCP backends; TLS goes through pingora's
//! streams.
//!
//! Owns: the adapter. Must not touch: HTTP, connection reuse.

use std::io;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A plain TCP connection, as a `pingora::protocols::Stream` when boxed.
#[derive(Debug)]
pub struct Tcp {
    stream: TcpStream,
    digest: Arc<SocketDigest>,
}

impl Tcp {
    /// Wraps a connected stream (with `TCP_NODELAY`: heads and bodies are written whole).
    pub fn new(stream: TcpStream) -> Tcp {
        let _ = stream.set_nodelay(true);
        let digest = Arc::new(SocketDigest::from_raw_fd(stream.as_raw_fd()));
        Tcp { stream, digest }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Tcp {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.stream).await;
    }
}

impl UniqueID for Tcp {
    fn id(&self) -> UniqueIDType {
        self.stream.as_raw_fd() as UniqueIDType
    }
}

impl Ssl for Tcp {}

impl GetTimingDigest for Tcp {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Tcp {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Tcp {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

#[async_trait]
impl Peek for Tcp {}
