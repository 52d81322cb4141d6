//! The HTTP/1.1 fast path (DESIGN.md §11): tether's own loop on pingora-core's primitives — the
//! listener's `Stream`, the HTTP/1 server session to read requests and write responses, the
//! HTTP/1 client session upstream — sequential per connection: read head → route → limit → pick →
//! write head upstream → copy body → read response head → write it downstream → copy body →
//! reuse both connections. No task, channel or watcher per request or idle connection.
//!
//! Owns: the order of IO on one downstream connection. Decisions are the stages' (`route`,
//! `authenticate`, `limit`, `pick`, `forward`, `respond`, `account`), and how a request ends —
//! its answers, failover statuses, the resend rule, error → status, blame — is `outcome`'s, the
//! same calls the pingora engine makes; HTTP/2 (ALPN `h2`) is handed to the pingora-proxy
//! engine. Must not touch: selection rules, configuration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::ServerApp;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};

use crate::engine::proxy::Proxy;
use crate::path::account::{self, End};
use crate::path::exchange::Exchange;
use crate::path::forward::{self, Downstream};
use crate::path::head::ClientIp;
use crate::path::outcome::{self, AfterFailure, Front};
use crate::path::pick;
use crate::path::read::{self, NoHead, Reject};
use crate::path::respond;
use crate::path::route::{self, RequestIds};
use crate::snapshot::Store;
use crate::state::backend::Exchanged;
use crate::state::upstream::{self, Conn, Upstreams};

/// How long a read of the request body may wait for the client.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The fast-path service: one per process, shared by every worker thread.
pub struct Fast {
    store: Arc<Store>,
    ids: Arc<RequestIds>,
    upstreams: Upstreams,
    /// The pingora-proxy engine, for HTTP/2 connections.
    h2: Arc<HttpProxy<Proxy>>,
}

impl Fast {
    pub fn new(store: Arc<Store>, ids: Arc<RequestIds>, h2: HttpProxy<Proxy>) -> Fast {
        Fast {
            store,
            ids,
            upstreams: Upstreams::new(),
            h2: Arc::new(h2),
        }
    }
}

#[async_trait]
impl ServerApp for Fast {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.h2.process_new(stream, shutdown).await;
        }
        self.serve(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        upstream::clear();
    }
}

/// What became of the downstream connection after one exchange.
enum Next {
    /// It may carry another request.
    KeepAlive,
    /// It must be closed.
    Close,
}

/// Why a request could not be answered by its backend.
struct Failed {
    /// What the client gets, if nothing was sent to it yet (0: nothing can be sent).
    status: u16,
    retry_after: Option<u64>,
    error: &'static str,
    /// What to hold against the backend (outlier detection), if anything.
    backend: Option<Exchanged>,
}

impl Failed {
    /// The backend's side failed after the connection was made: 502, or 504 on a timeout.
    fn from(e: &Error) -> Failed {
        Failed {
            status: outcome::upstream_status(e),
            retry_after: None,
            error: e.etype().as_str(),
            backend: Some(Exchanged::Failed),
        }
    }

    /// Nothing to hold against a backend (already counted, or not its fault).
    fn local(status: u16, retry_after: Option<u64>, error: &'static str) -> Failed {
        Failed {
            status,
            retry_after,
            error,
            backend: None,
        }
    }
}

impl Fast {
    /// Serves HTTP/1.x requests on one client connection until it closes.
    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut prefix: Option<BytesMut> = None;
        // A new connection is a request on its way: until that first request is answered it
        // counts as one in progress (a graceful shutdown waits for it), and its first bytes are
        // read even when the shutdown began after it was accepted.
        let mut fresh = Some(crate::path::exchange::Active::begin());
        loop {
            let limits = self.store.limits();
            // The next request's first bytes (unless pipelined ones are waiting): an idle
            // keep-alive connection holds only its stream until they come.
            let head = match prefix.take() {
                Some(p) => p,
                None => {
                    let wait = first_bytes(
                        &mut stream,
                        shutdown,
                        limits.keepalive_timeout,
                        fresh.is_some(),
                    );
                    match wait.await {
                        Some(b) => b,
                        None => return,
                    }
                }
            };
            // Everything about the request lives in its own allocation, freed when it is done:
            // the connection's task keeps only the small state of the wait above. (Boxed in a
            // statement of its own: a temporary in the awaited expression would be kept in
            // this future's state, making every idle connection as large as a request.)
            let request = Box::pin(self.request(stream, head, limits, shutdown));
            let next = request.await;
            // The first request is done: from here on the connection is an idle keep-alive one
            // between requests, which a shutdown closes.
            fresh = None;
            match next {
                Some((st, p)) => {
                    stream = st;
                    prefix = p;
                }
                None => return,
            }
        }
    }

    /// One request on `stream`, whose first bytes are `head`: returns the stream (and bytes
    /// pipelined after the request) when the connection may carry another one.
    async fn request(
        &self,
        mut stream: Stream,
        mut head: BytesMut,
        limits: crate::config::Limits,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Option<BytesMut>)> {
        // The read stage: the whole head, within its deadline and limits, checked.
        match read::read_head(&mut stream, &mut head, &limits).await {
            Ok(_) => {}
            Err(NoHead::Closed) => return None,
            Err(NoHead::Rejected(r)) => {
                self.reject(&mut stream, r).await;
                return None;
            }
        }
        // The HTTP/1 session parses the head from what was read (no further read).
        let mut s = ServerSession::new(stream);
        s.set_pipelining_enabled(true);
        s.set_pipelined_prefix(head);
        s.set_read_timeout(Some(BODY_READ_TIMEOUT));
        s.set_server_keepalive(Some(limits.keepalive_timeout.as_secs().max(1)));
        match s.read_request().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    self.store.metrics().rejected[Reject::BadRequest("").index()].inc();
                }
                bad_request(&mut s, &e).await;
                return None;
            }
        }
        if *shutdown.borrow() {
            // Answer this one, then close: the process is going away.
            s.set_server_keepalive(None);
        }
        if let Next::Close = self.exchange(&mut s).await {
            let unread = !s.is_body_done();
            let mut stream = s.into_inner();
            close(&mut stream, unread).await;
            return None;
        }
        match s.reuse().await {
            Ok(Some(r)) => Some(r.into_parts()),
            _ => None,
        }
    }

    /// Answers a head refused by the read stage (408, 431, 400), counts it, and closes: nothing
    /// of it reached a backend.
    async fn reject(&self, stream: &mut Stream, r: Reject) {
        use tokio::io::AsyncWriteExt;
        self.store.metrics().rejected[r.index()].inc();
        let body = r.message();
        let reason = match r.status() {
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            413 => "Content Too Large",
            _ => "Bad Request",
        };
        let resp = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.status(),
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.flush().await;
        })
        .await;
        // What the client sent beyond the refused head is still unread.
        close(stream, true).await;
        tracing::debug!(reason = r.reason(), "request refused");
    }

    /// One request: the stages in order, then the account. Returns whether the client
    /// connection may go on.
    async fn exchange(&self, s: &mut ServerSession) -> Next {
        let client: ClientIp = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let mut ex = route::start(&self.store, &self.ids, s.req_header());
        let (status, error, backend, next) = match self.stages(&mut ex, s, client).await {
            Ok(next) => {
                let status = s.response_written().map_or(0, |r| r.status.as_u16());
                (status, None, outcome::blame(&ex, status, None), next)
            }
            Err(f) => {
                let status = if let Some(r) = s.response_written() {
                    // The response had started: the client sees it cut short.
                    r.status.as_u16()
                } else if f.status == 0 {
                    0 // the client went away: nobody to answer
                } else {
                    if let Ok(l) = outcome::local(&ex, f.status, f.retry_after) {
                        s.set_server_keepalive(None);
                        let _ = write_local(s, l).await;
                    }
                    f.status
                };
                (status, Some(f.error), f.backend, Next::Close)
            }
        };
        let status = outcome::final_status(&ex, Some(status));
        let end = End {
            status,
            error,
            backend,
        };
        account::account(&self.store, &mut ex, s.req_header(), client, end);
        next
    }

    async fn stages(
        &self,
        ex: &mut Exchange,
        s: &mut ServerSession,
        client: ClientIp,
    ) -> Result<Next, Failed> {
        match outcome::front(&self.store, ex, s.req_header(), client)
            .await
            .map_err(|e| Failed::from(&e))?
        {
            Front::Forward => {}
            Front::Queued => {
                if let Err(r) = pick::admit(ex, s, client).await {
                    return match outcome::queue_refusal(r) {
                        None => Err(Failed::local(0, None, r.as_str())),
                        Some((status, retry_after)) => {
                            local_answer(ex, s, status, Some(retry_after)).await
                        }
                    };
                }
            }
            Front::Answer { local, close } => {
                if close {
                    s.set_server_keepalive(None);
                }
                write_local(s, *local)
                    .await
                    .map_err(|e| client_failed(&e))?;
                return Ok(if close { Next::Close } else { Next::KeepAlive });
            }
        }
        self.forward(ex, s, client).await
    }

    /// The forward stage's IO: connect (failing over on connection errors), send the request,
    /// relay the response.
    async fn forward(
        &self,
        ex: &mut Exchange,
        s: &mut ServerSession,
        client: ClientIp,
    ) -> Result<Next, Failed> {
        let down = Downstream {
            client,
            tls: s.digest().ssl_digest.is_some(),
        };
        let has_body = !s.is_body_empty();
        let resendable = outcome::may_resend(&s.req_header().method, has_body);
        let mut fresh_only = false;
        loop {
            ex.hold();
            let (pool, u) = ex.upstream().ok_or_else(internal)?;
            u.sent_at.get_or_insert_with(Instant::now);
            let b = &pool.backends[u.pick.backend as usize];
            let (key, read_timeout) = (b.conn_key, pool.conf.read_timeout);
            let got = if fresh_only {
                self.upstreams.fresh(&b.peer).await
            } else {
                self.upstreams.get(key, &b.peer).await
            };
            let e = match got {
                Ok(conn) => {
                    let mut req = Box::new(s.req_header().clone());
                    forward::request_headers(ex, &mut req, &down, true)
                        .map_err(|e| Failed::from(&e))?;
                    match self.relay(ex, s, conn, req, read_timeout, key).await {
                        Relayed::Done(next) => return Ok(next),
                        Relayed::Failed(f) => return Err(f),
                        Relayed::StaleConnection(e) => {
                            // A reused connection the backend had closed: nothing reached it,
                            // and no response byte came back.
                            if resendable {
                                fresh_only = true;
                                continue;
                            }
                            return Err(Failed::from(&e));
                        }
                        Relayed::Refused(e) => e,
                    }
                }
                Err(e) => e,
            };
            match outcome::after_connect_failure(&self.store, ex, s.req_header(), client, &e) {
                AfterFailure::Next => {
                    fresh_only = false;
                    // The new backend's circuit-breaker slot, waiting for it if full.
                    if let Err(r) = pick::admit(ex, s, client).await {
                        let (status, retry_after) = outcome::queue_refusal(r).unzip();
                        return Err(Failed::local(status.unwrap_or(0), retry_after, r.as_str()));
                    }
                    continue;
                }
                // Each failed connection was counted when it failed.
                AfterFailure::Answer {
                    status,
                    retry_after,
                } => return Err(Failed::local(status, retry_after, e.etype().as_str())),
            }
        }
    }

    /// Sends the request on `conn` and relays the response.
    async fn relay(
        &self,
        ex: &mut Exchange,
        s: &mut ServerSession,
        conn: Conn,
        req: Box<RequestHeader>,
        read_timeout: Duration,
        key: upstream::Key,
    ) -> Relayed {
        let reused = conn.reused;
        let mut c = ClientSession::new(conn.stream);
        c.read_timeout = Some(read_timeout);
        c.write_timeout = Some(read_timeout);
        let upgrade_req = s.is_upgrade_req();
        let mut body_sent: u64 = 0;
        if let Err(e) = c.write_request_header(req).await {
            return if reused {
                Relayed::StaleConnection(e)
            } else {
                self.upstream_failed(ex, &e)
            };
        }
        // The request body, while watching for an early (or 1xx) response.
        let mut final_head = false;
        let mut body_done = s.is_body_done();
        while !body_done && !final_head {
            tokio::select! {
                biased;
                r = c.read_response() => {
                    if let Err(e) = r {
                        return self.response_failed(ex, s, reused, e);
                    }
                    match self.interim(s, &c).await {
                        Ok(true) => {}
                        Ok(false) => final_head = true,
                        Err(f) => return Relayed::Failed(f),
                    }
                }
                chunk = s.read_body_bytes() => match chunk {
                    // An empty read (e.g. only a chunk's CRLF arrived) must not be written: an
                    // empty chunk would end a chunked body.
                    Ok(Some(data)) if data.is_empty() => {}
                    Ok(Some(data)) => {
                        body_sent += data.len() as u64;
                        if outcome::body_exceeds(&self.store, ex, body_sent) {
                            // A chunked body grew past the limit: the request ends here (the
                            // backend's connection is dropped with it).
                            return Relayed::Failed(Failed::local(413, None, "body_too_large"));
                        }
                        if let Err(e) = c.write_body(&data).await {
                            return self.upstream_failed(ex, &e);
                        }
                    }
                    Ok(None) => {
                        body_done = true;
                        if let Err(e) = c.finish_body().await {
                            return self.upstream_failed(ex, &e);
                        }
                    }
                    Err(e) => return Relayed::Failed(client_failed(&e)),
                },
            }
        }
        while !final_head {
            if let Err(e) = c.read_response().await {
                return self.response_failed(ex, s, reused, e);
            }
            match self.interim(s, &c).await {
                Ok(true) => {}
                Ok(false) => final_head = true,
                Err(f) => return Relayed::Failed(f),
            }
        }
        // The final response head.
        let Some(head) = c.resp_header() else {
            return Relayed::Failed(Failed::from(&internal_error()));
        };
        let mut resp = Box::new(head.clone());
        if let Some((pool, u)) = ex.upstream() {
            u.response_head();
            account::passive(&self.store, pool, u.pick.backend, true);
        }
        if resp
            .headers
            .contains_key(&crate::path::head::names::KEEP_ALIVE)
        {
            resp.remove_header(&crate::path::head::names::KEEP_ALIVE);
        }
        // Downstream speaks HTTP/1.1 whatever the backend's version (framing is re-derived).
        resp.set_version(http::Version::HTTP_11);
        if let Err(e) = respond::response_headers(ex, &mut resp) {
            return Relayed::Failed(Failed::from(&e));
        }
        let switching = upgrade_req && resp.status == 101;
        if !body_done || (upgrade_req && !switching) {
            // The backend answered before the request body was done, or refused an upgrade:
            // deliver the answer, then close both connections (the rest of the body, or what
            // was pipelined behind the upgrade request, is never read).
            s.set_server_keepalive(None);
        }
        if let Err(e) = s.write_response_header(resp).await {
            return Relayed::Failed(client_failed(&e));
        }
        if switching {
            return tunnel(s, c).await;
        }
        // The response body.
        loop {
            match c.read_body_bytes().await {
                Ok(Some(data)) if data.is_empty() => {}
                Ok(Some(data)) => {
                    if let Err(e) = s.write_body(&data).await {
                        return Relayed::Failed(client_failed(&e));
                    }
                }
                Ok(None) => break,
                Err(e) => return self.upstream_failed(ex, &e),
            }
        }
        if let Err(e) = s.finish_body().await {
            return Relayed::Failed(client_failed(&e));
        }
        if upgrade_req {
            // Refused upgrade: whatever the client sent after its request is never read as a
            // request of its own.
            return Relayed::Done(Next::Close);
        }
        if body_done {
            // The response said whether the connection may be reused (read after the body,
            // once the body's framing is known).
            c.respect_keepalive();
            if let Some(stream) = c.reuse().await {
                upstream::put(key, stream);
            }
            Relayed::Done(Next::KeepAlive)
        } else {
            Relayed::Done(Next::Close)
        }
    }

    /// Relays an informational response (1xx but 101) to the client; returns whether the head
    /// just read was one (so the final one is still to come).
    async fn interim(&self, s: &mut ServerSession, c: &ClientSession) -> Result<bool, Failed> {
        let Some(head) = c.resp_header() else {
            return Err(Failed::from(&internal_error()));
        };
        if !head.status.is_informational() || head.status == 101 {
            return Ok(false);
        }
        s.write_response_header(Box::new(head.clone()))
            .await
            .map_err(|e| client_failed(&e))?;
        Ok(true)
    }

    /// The response head could not be read.
    fn response_failed(
        &self,
        ex: &mut Exchange,
        s: &ServerSession,
        reused: bool,
        e: Box<Error>,
    ) -> Relayed {
        let nothing_read = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if reused && nothing_read && s.body_bytes_read() == 0 {
            return Relayed::StaleConnection(e);
        }
        if outcome::refused_at_connect(&e, reused, s.body_bytes_read() > 0) {
            return Relayed::Refused(e);
        }
        self.upstream_failed(ex, &e)
    }

    /// A failure of the backend's side after the connection was made: an upstream timeout
    /// counts toward passive health.
    fn upstream_failed(&self, ex: &mut Exchange, e: &Error) -> Relayed {
        if outcome::timed_out(e) {
            if let Some((pool, u)) = ex.upstream() {
                account::passive(&self.store, pool, u.pick.backend, false);
            }
        }
        Relayed::Failed(Failed::from(e))
    }
}

/// The client side of a request waiting in the circuit-breaker queue: a client that closes its
/// connection is seen once its request body is done (reading for that then takes nothing that
/// would be forwarded: bytes of a pipelined next request are kept for it).
impl pick::Client for ServerSession {
    fn head(&self) -> &RequestHeader {
        self.req_header()
    }

    async fn gone(&mut self) {
        if self.is_body_done() {
            // Resolves only with an error: the client closed (or broke) the connection.
            let _ = self.read_body_or_idle(true).await;
        } else {
            std::future::pending::<()>().await
        }
    }
}

enum Relayed {
    Done(Next),
    Failed(Failed),
    /// A reused connection failed before any response byte.
    StaleConnection(Box<Error>),
    /// A fresh TLS connection the backend refused after the handshake (TLS 1.3 client
    /// certificate), before any request body was read: a connect failure.
    Refused(Box<Error>),
}

/// How long, and how much, a close waits for and discards what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes a client connection. With request bytes still unread (an answer before the body
/// ended, a refused head), a plain close would make the kernel reset the connection, and a
/// reset can destroy the answer on its way to the client: so first end the sending side, then
/// read and discard what still comes for a short while (a lingering close, like NGINX's).
async fn close(stream: &mut Stream, unread: bool) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    if !unread {
        return;
    }
    let mut drained = 0;
    let _ = pingora::time::fast_timeout::fast_timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            match std::future::poll_fn(|cx| read::poll_discard(stream, cx)).await {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            }
        }
    })
    .await;
}

/// Waits for the first bytes of the next request: `None` when the client closes, stays idle
/// past the keep-alive timeout, or the server shuts down. A request already there is read at
/// once, without arming a timer.
async fn first_bytes(
    stream: &mut Stream,
    shutdown: &ShutdownWatch,
    keepalive: Duration,
    fresh: bool,
) -> Option<BytesMut> {
    // Bytes that are already there are a request sent before the connection was closed: read
    // them, shutdown or not.
    let ready = {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        read::poll_first_read(stream, &mut cx)
    };
    if let std::task::Poll::Ready(r) = ready {
        return r.ok().flatten();
    }
    if *shutdown.borrow() && !fresh {
        return None;
    }
    let mut shutdown = shutdown.clone();
    // An idle keep-alive connection is closed when the shutdown starts (a client retries a
    // request on a reused connection that closes); a new one was accepted for a request that
    // may still be on its way, and gets FIRST_REQUEST_AFTER_SHUTDOWN for it.
    let stop = async move {
        if !*shutdown.borrow_and_update() {
            let _ = shutdown.changed().await;
        }
        if fresh {
            pingora::time::fast_timeout::fast_sleep(FIRST_REQUEST_AFTER_SHUTDOWN).await;
        }
    };
    tokio::select! {
        r = std::future::poll_fn(|cx| read::poll_first_read(stream, cx)) => r.ok().flatten(),
        _ = pingora::time::fast_timeout::fast_sleep(keepalive) => None,
        _ = stop => None,
    }
}

/// How long a connection accepted before a graceful shutdown began still waits for its first
/// request once it has: a client that connected just before the listener closed is served.
pub const FIRST_REQUEST_AFTER_SHUTDOWN: Duration = Duration::from_secs(1);

/// After a `101`: bytes flow both ways until both sides are done. Each direction ends on its
/// own (a half-close is passed on), and the tunnel lasts until both have: a backend that
/// writes right after its `101` is read like any other tunnel data, so there is no window in
/// which the tunnel can be closed by its own first bytes.
async fn tunnel(s: &mut ServerSession, mut c: ClientSession) -> Relayed {
    // From here on, bytes pass through as they are in both directions, and a quiet tunnel is
    // not an error: WebSockets idle for long stretches (the peers' own pings keep them alive).
    c.maybe_upgrade_body_writer();
    s.set_read_timeout(None);
    c.read_timeout = None;
    let (mut down_open, mut up_open) = (true, true);
    while down_open || up_open {
        tokio::select! {
            d = s.read_body_bytes(), if down_open => match d {
                Ok(Some(data)) if data.is_empty() => {}
                Ok(Some(data)) => {
                    if c.write_body(&data).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => {
                    // The client is done sending: pass the half-close on, keep relaying the
                    // backend's bytes. (The client session's `finish_body` would also end the
                    // backend's side: not used here.)
                    down_open = false;
                    c.shutdown().await;
                }
            },
            u = c.read_body_bytes(), if up_open => match u {
                Ok(Some(data)) if data.is_empty() => {}
                Ok(Some(data)) => {
                    if s.write_body(&data).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => {
                    up_open = false;
                    let _ = s.finish_body().await;
                    s.shutdown().await;
                }
            },
        }
    }
    Relayed::Done(Next::Close)
}

async fn local_answer(
    ex: &mut Exchange,
    s: &mut ServerSession,
    status: u16,
    retry_after: Option<u64>,
) -> Result<Next, Failed> {
    let l = outcome::local(ex, status, retry_after).map_err(|e| Failed::from(&e))?;
    write_local(s, l).await.map_err(|e| client_failed(&e))?;
    Ok(Next::KeepAlive)
}

async fn write_local(s: &mut ServerSession, l: respond::Local) -> pingora::Result<()> {
    s.write_response_header(Box::new(l.head)).await?;
    s.write_body(l.body.as_bytes()).await?;
    s.finish_body().await?;
    Ok(())
}

/// Answers a request head that could not be read or parsed: `400`, and the connection closes.
async fn bad_request(s: &mut ServerSession, e: &Error) {
    if !matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
        return; // the client went away or timed out mid-head
    }
    let Ok(mut head) = ResponseHeader::build(400, Some(3)) else {
        return;
    };
    let body = Bytes::from_static(b"bad request\n");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = head.insert_header(http::header::CONNECTION, "close");
    s.set_server_keepalive(None);
    if s.write_response_header(Box::new(head)).await.is_ok() {
        let _ = s.write_body(&body).await;
        let _ = s.finish_body().await;
    }
}

/// The client's side failed (it went away): nothing more can be sent to it.
fn client_failed(e: &Error) -> Failed {
    Failed::local(0, None, e.etype().as_str())
}

fn internal_error() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "no response header")
}

fn internal() -> Failed {
    Failed::from(&internal_error())
}
