//! The HTTP/2 floor for benches/h2load.sh (issue 15): the least a proxy on tokio-rustls + the
//! `h2` crate + httparse does per request, with no application logic — what tether's HTTP/2 is
//! measured against, in the same run as HAProxy.
//!
//!   floor-h2 LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR [BACKEND_ADDR...]
//!
//! Build: `cargo build --release --example floor-h2` (the release profile's fat LTO applies).
//! One thread (a current-thread runtime), mimalloc, like tether's one worker. Accepts TCP, TLS
//! with rustls (ring; ALPN `h2` and `http/1.1` offered, a connection that did not choose `h2` is
//! closed), `h2::server::handshake`, one task per stream. Per stream: a backend — `N % backends`
//! when a Cookie carries `bench_sid=N` (what benches/h2load.sh's cookie scenario sends: the
//! floor's stand-in for affinity, no cookie of its own), else round robin — and an idle upstream
//! connection from a per-thread list (or a new one); an HTTP/1.1 request head (method, path,
//! `Host` from `:authority`, the request's headers with Cookie crumbs joined, one appended
//! `X-Forwarded-For`) in one write from a pooled buffer; a request body, if any, copied with its
//! Content-Length or else chunked. The response head is read with httparse into a pooled 16 KiB
//! buffer and sent as HTTP/2 with its status and headers minus the hop-by-hop ones, the
//! Content-Length body after it (within the stream's flow-control window), and the upstream
//! connection goes back to the list. What it does not do (a floor, not a proxy): chunked
//! responses (a 502), close-delimited ones are relayed until the backend closes; request
//! trailers and `Expect` are dropped, 1xx responses not relayed; no timeouts, no validation
//! beyond h2's and httparse's, no retry but one for a bodiless request on a reused connection the
//! backend had closed.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::LocalKey;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUF: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

type Pool = RefCell<Vec<Vec<u8>>>;
thread_local! {
    /// Response buffers (BUF long) and request-head buffers not in use.
    static BUFFERS: Pool = const { RefCell::new(Vec::new()) };
    static HEADS: Pool = const { RefCell::new(Vec::new()) };
    /// Idle upstream connections, by backend index.
    static IDLE: RefCell<Vec<Vec<TcpStream>>> = const { RefCell::new(Vec::new()) };
}

fn take(pool: &'static LocalKey<Pool>) -> Vec<u8> {
    pool.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

fn give(pool: &'static LocalKey<Pool>, b: Vec<u8>) {
    pool.with(|p| {
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

struct Ctx {
    backends: Vec<SocketAddr>,
    next: Cell<usize>,
}

fn main() -> io::Result<()> {
    let usage = "usage: floor-h2 LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR [BACKEND_ADDR...]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 4, "{usage}");
    let listen: SocketAddr = args[0].parse().expect(usage);
    let certs =
        rustls_pemfile::certs(&mut &std::fs::read(&args[1])?[..]).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut &std::fs::read(&args[2])?[..])?.expect("a key");
    let backends = args[3..]
        .iter()
        .map(|a| a.parse().expect("a backend address"))
        .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let ctx = Rc::new(Ctx {
        backends,
        next: Cell::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (s, peer) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tokio::task::spawn_local(connection(s, peer, acceptor.clone(), ctx.clone()));
        }
    })
}

async fn connection(s: TcpStream, peer: SocketAddr, tls: tokio_rustls::TlsAcceptor, ctx: Rc<Ctx>) {
    let Ok(tls) = tls.accept(s).await else { return };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return; // HTTP/1.1 or no ALPN: not served by this floor
    }
    let Ok(mut conn) = h2::server::handshake(tls).await else {
        return;
    };
    let xff: Rc<str> = format!("X-Forwarded-For: {}\r\n\r\n", peer.ip()).into();
    // Polling accept() also drives the connection (the streams' frames in both directions).
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::task::spawn_local(stream(req, respond, xff.clone(), ctx.clone()));
    }
}

async fn stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    xff: Rc<str>,
    ctx: Rc<Ctx>,
) {
    let (mut head, mut buf) = (take(&HEADS), take(&BUFFERS));
    if let Err(e) = exchange(req, &mut respond, &mut head, &mut buf, &xff, &ctx).await {
        // Before the response: a 502; after it, dropping the stream resets it.
        let bad = Response::builder().status(502).body(()).expect("a 502");
        let _ = respond.send_response(bad, true);
        eprintln!("floor-h2: {e}");
    }
    give(&HEADS, head);
    give(&BUFFERS, buf);
}

/// One request and its response.
async fn exchange(
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    head: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    xff: &str,
    ctx: &Ctx,
) -> io::Result<()> {
    let (parts, mut body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let chunked = has_body && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
    // The backend: bench_sid=N picks N % backends (the cookie scenario), else round robin.
    let sid = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| {
            let v = v.to_str().ok()?;
            let n = &v[v.find("bench_sid=")? + 10..];
            n[..n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len())]
                .parse::<usize>()
                .ok()
        });
    let i = sid.unwrap_or_else(|| ctx.next.replace(ctx.next.get().wrapping_add(1)))
        % ctx.backends.len();
    let addr = ctx.backends[i];
    // The upstream request head, one write.
    head.clear();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    write!(head, "{} {path} HTTP/1.1\r\n", parts.method)?;
    if let Some(a) = parts.uri.authority() {
        write!(head, "Host: {a}\r\n")?;
    }
    for (name, value) in &parts.headers {
        let skip = (name == http::header::HOST && parts.uri.authority().is_some())
            || name == http::header::TE
            || name == http::header::EXPECT
            || name == http::header::COOKIE;
        if !skip {
            for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                head.extend_from_slice(part);
            }
        }
    }
    // HTTP/2 may split the Cookie header into crumbs: HTTP/1.1 wants them on one line.
    for (n, crumb) in parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .enumerate()
    {
        head.extend_from_slice(if n == 0 { b"cookie: " } else { b"; " });
        head.extend_from_slice(crumb.as_bytes());
    }
    if parts.headers.contains_key(http::header::COOKIE) {
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    head.extend_from_slice(xff.as_bytes());
    let (mut up, mut reused) = match take_idle(i) {
        Some(s) => (s, true),
        None => (connect(addr).await?, false),
    };
    // The response head; a reused connection the backend had closed gets the request once more.
    buf.resize(BUF, 0);
    let mut m = 0;
    let (rhead, code, close, framing, mut headers) = loop {
        if m == 0 {
            let sent = up.write_all(head).await.is_ok();
            if sent && has_body {
                reused = false; // the body is consumed: no retry
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.map_err(io::Error::other)?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if chunked {
                        up.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await?;
                    }
                    up.write_all(&chunk).await?;
                    if chunked {
                        up.write_all(b"\r\n").await?;
                    }
                }
                if chunked {
                    up.write_all(b"0\r\n\r\n").await?;
                }
            }
            let r = if sent {
                up.read(&mut buf[..]).await.unwrap_or(0)
            } else {
                0
            };
            if r == 0 && reused {
                (up, reused) = (connect(addr).await?, false);
                continue;
            }
            m = r;
        } else {
            let r = up.read(&mut buf[m..]).await?;
            m = if r == 0 { 0 } else { m + r };
        }
        if m == 0 {
            return Err(io::Error::other(
                "backend closed before a whole response head",
            ));
        }
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf[..m]) {
            Ok(httparse::Status::Complete(h)) => {
                let code = resp.code.unwrap_or(502);
                let mut out = http::HeaderMap::with_capacity(resp.headers.len());
                let (mut cl, mut close, mut te) = (None, resp.version == Some(0), false);
                for hd in resp.headers.iter() {
                    let name =
                        HeaderName::from_bytes(hd.name.as_bytes()).map_err(io::Error::other)?;
                    if name == http::header::CONTENT_LENGTH {
                        cl = std::str::from_utf8(hd.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    } else if name == http::header::TRANSFER_ENCODING {
                        te = true;
                    } else if name == http::header::CONNECTION {
                        close |= hd.value.eq_ignore_ascii_case(b"close");
                    }
                    if !HOP_BY_HOP.contains(&name.as_str()) {
                        out.append(
                            name,
                            HeaderValue::from_bytes(hd.value).map_err(io::Error::other)?,
                        );
                    }
                }
                let bodiless = (100..200).contains(&code) || code == 204 || code == 304;
                // None: close-delimited.
                let framing = if bodiless || parts.method == http::Method::HEAD {
                    Some(0)
                } else if te {
                    return Err(io::Error::other(
                        "chunked response: not relayed by the floor",
                    ));
                } else {
                    cl
                };
                break (h, code, close, framing, out);
            }
            Ok(httparse::Status::Partial) if m < buf.len() => continue,
            _ => return Err(io::Error::other("bad or oversized response head")),
        }
    };
    let mut response = Response::builder()
        .status(code)
        .body(())
        .map_err(io::Error::other)?;
    std::mem::swap(response.headers_mut(), &mut headers);
    let mut left = framing.unwrap_or(u64::MAX);
    let here = (m - rhead).min(usize::try_from(left).unwrap_or(usize::MAX));
    left -= here as u64;
    let mut send = respond
        .send_response(response, framing == Some(0))
        .map_err(io::Error::other)?;
    if framing == Some(0) {
        pool(i, up, close);
        return Ok(());
    }
    send_all(&mut send, &buf[rhead..rhead + here], left == 0).await?;
    while left > 0 {
        let r = up.read(&mut buf[..]).await?;
        let r = r.min(usize::try_from(left).unwrap_or(usize::MAX));
        if r == 0 && framing.is_some() {
            return Err(io::Error::other(
                "backend closed inside a Content-Length body",
            ));
        }
        left = if r == 0 { 0 } else { left - r as u64 };
        send_all(&mut send, &buf[..r], left == 0).await?;
    }
    if framing.is_some() {
        pool(i, up, close);
    }
    Ok(())
}

/// Sends `data` on the stream within its flow-control window, ending the stream if `end`.
async fn send_all(send: &mut SendStream<Bytes>, mut data: &[u8], end: bool) -> io::Result<()> {
    loop {
        if data.is_empty() {
            return if end {
                send.send_data(Bytes::new(), true).map_err(io::Error::other)
            } else {
                Ok(())
            };
        }
        send.reserve_capacity(data.len());
        let cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(cap) => cap.map_err(io::Error::other)?,
            None => return Err(io::Error::other("stream closed by the client")),
        };
        let (now, rest) = data.split_at(cap.min(data.len()));
        let last = end && rest.is_empty();
        send.send_data(Bytes::copy_from_slice(now), last)
            .map_err(io::Error::other)?;
        if last {
            return Ok(());
        }
        data = rest;
    }
}

/// The upstream connection back to the idle list, unless the backend is closing it.
fn pool(i: usize, up: TcpStream, close: bool) {
    if !close {
        give_idle(i, up);
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}
