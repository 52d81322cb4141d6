//! The tokio floor for benches/load.sh and benches/idle.sh (DESIGN.md §10, §19): the least a
//! proxy on tokio + httparse can do per request, with no application logic — what tether's own
//! HTTP/1.1 codec is measured against.
//!
//!   floor-tokio LISTEN_ADDR BACKEND_ADDR [BACKEND_ADDR...]
//!
//! Build: `cargo build --release --example floor-tokio` (the release profile's fat LTO applies).
//! One thread (a current-thread runtime), mimalloc, like tether's one worker. Per client
//! connection one task that waits for readability holding only its `TcpStream` (the request's
//! state is boxed while it runs, one allocation per request); when bytes
//! arrive it takes a 16 KiB buffer from a per-thread pool, reads the request head, forwards it
//! as its own bytes with one header appended (`X-Forwarded-For`), round-robin over the backends,
//! on an idle upstream connection from a per-thread list (or a new one), copies a
//! `Content-Length` request body, reads the response head with httparse and copies it and its
//! `Content-Length` body back, gives the buffers back and waits again. What it does not do (a
//! floor, not a proxy): chunked or close-delimited bodies (the connection is closed), pipelined
//! requests (closed), any header edit but the one appended, any validation beyond httparse's.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUF: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

thread_local! {
    /// Buffers not in use; a connection holds one only while it has bytes in flight.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Idle upstream connections, by backend index.
    static IDLE: RefCell<Vec<Vec<TcpStream>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUF])
}

fn give_buf(b: Vec<u8>) {
    BUFFERS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 256 {
            p.push(b);
        }
    });
}

fn take_idle(i: usize) -> Option<TcpStream> {
    IDLE.with(|l| l.borrow_mut().get_mut(i).and_then(Vec::pop))
}

fn give_idle(i: usize, s: TcpStream) {
    IDLE.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() <= i {
            l.resize_with(i + 1, Vec::new);
        }
        l[i].push(s);
    });
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: floor-tokio LISTEN_ADDR BACKEND_ADDR [BACKEND_ADDR...]");
    let backends: Rc<[SocketAddr]> = args
        .map(|a| a.parse().expect("a backend address"))
        .collect();
    assert!(!backends.is_empty(), "at least one backend");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        let next = Rc::new(Cell::new(0usize));
        loop {
            let (s, peer) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tokio::task::spawn_local(connection(s, peer, backends.clone(), next.clone()));
        }
    })
}

async fn connection(
    mut down: TcpStream,
    peer: SocketAddr,
    backends: Rc<[SocketAddr]>,
    next: Rc<Cell<usize>>,
) {
    let xff = format!("X-Forwarded-For: {}\r\n\r\n", peer.ip());
    loop {
        if down.readable().await.is_err() {
            return;
        }
        let (mut a, mut b) = (take_buf(), take_buf());
        // Boxed in a statement of its own: the request's state lives in its own allocation, so
        // the task's future (what an idle connection holds) is only the wait above.
        let request = Box::pin(exchange(&mut down, &mut a, &mut b, &xff, &backends, &next));
        let keep = request.await;
        give_buf(a);
        give_buf(b);
        if !matches!(keep, Ok(true)) {
            return;
        }
    }
}

/// One request: returns whether the client connection may carry another.
async fn exchange(
    down: &mut TcpStream,
    buf: &mut [u8],
    rbuf: &mut [u8],
    xff: &str,
    backends: &[SocketAddr],
    next: &Cell<usize>,
) -> io::Result<bool> {
    // The request head.
    let mut n = 0;
    let (head_len, body_len, close) = loop {
        let r = down.read(&mut buf[n..]).await?;
        if r == 0 {
            return Ok(false);
        }
        n += r;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(h)) => {
                let cl = content_length(req.headers);
                let close = req.version == Some(0) || has_token(req.headers, b"close");
                break (h, cl, close);
            }
            Ok(httparse::Status::Partial) if n < buf.len() => continue,
            _ => return Ok(false),
        }
    };
    if n > head_len + body_len as usize {
        return Ok(false); // pipelined: not handled by the floor
    }
    // Round robin, once the request is there (a readable close is not a request).
    let i = next.get() % backends.len();
    next.set(next.get().wrapping_add(1));
    let addr = backends[i];
    // Upstream: the head as its own bytes (without its last CRLF) plus one header, one write.
    let (mut up, reused) = match take_idle(i) {
        Some(s) => (s, true),
        None => (connect(addr).await?, false),
    };
    // Built in the response buffer, still unused: no allocation per request.
    let body_here = n - head_len;
    let Some(out_len) = outgoing(buf, rbuf, head_len, n, xff) else {
        return Ok(false);
    };
    if up.write_all(&rbuf[..out_len]).await.is_err() {
        if !reused {
            return Ok(false);
        }
        up = connect(addr).await?;
        up.write_all(&rbuf[..out_len]).await?;
    }
    let mut left = body_len - body_here as u64;
    while left > 0 {
        let r = down.read(&mut buf[..]).await?;
        if r == 0 {
            return Ok(false);
        }
        up.write_all(&buf[..r]).await?;
        left = left.saturating_sub(r as u64);
    }
    // The response head, then its body, copied through.
    let mut m = 0;
    let mut retried = !reused || body_len > 0;
    let (rhead, rbody) = loop {
        let r = up.read(&mut rbuf[m..]).await.unwrap_or(0);
        if r == 0 && m == 0 && !retried {
            // A reused connection the backend had closed: send once more on a fresh one.
            retried = true;
            up = connect(addr).await?;
            let out_len = outgoing(buf, rbuf, head_len, n, xff).unwrap_or(0);
            up.write_all(&rbuf[..out_len]).await?;
            continue;
        }
        if r == 0 {
            return Ok(false);
        }
        m += r;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&rbuf[..m]) {
            Ok(httparse::Status::Complete(h)) => {
                let code = resp.code.unwrap_or(0);
                let bodiless = (100..200).contains(&code) || code == 204 || code == 304;
                if bodiless {
                    break (h, 0);
                }
                let framed = resp
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("content-length"));
                if !framed {
                    return Ok(false); // chunked or close-delimited: not relayed by the floor
                }
                break (h, content_length(resp.headers));
            }
            Ok(httparse::Status::Partial) if m < rbuf.len() => continue,
            _ => return Ok(false),
        }
    };
    down.write_all(&rbuf[..m]).await?;
    let mut left = (rhead as u64 + rbody).saturating_sub(m as u64);
    while left > 0 {
        let r = up.read(&mut rbuf[..]).await?;
        if r == 0 {
            return Ok(false);
        }
        down.write_all(&rbuf[..r]).await?;
        left = left.saturating_sub(r as u64);
    }
    give_idle(i, up);
    Ok(!close)
}

/// The upstream request (the head without its last CRLF, the appended header, the body bytes
/// already read) built in `out`; its length, or `None` when it does not fit.
fn outgoing(buf: &[u8], out: &mut [u8], head_len: usize, n: usize, xff: &str) -> Option<usize> {
    let len = head_len - 2 + xff.len() + (n - head_len);
    if len > out.len() {
        return None;
    }
    out[..head_len - 2].copy_from_slice(&buf[..head_len - 2]);
    out[head_len - 2..head_len - 2 + xff.len()].copy_from_slice(xff.as_bytes());
    out[head_len - 2 + xff.len()..len].copy_from_slice(&buf[head_len..n]);
    Some(len)
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn content_length(headers: &[httparse::Header<'_>]) -> u64 {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

fn has_token(headers: &[httparse::Header<'_>], token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| {
            h.value
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
}
