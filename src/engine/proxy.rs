//! The pingora-proxy engine (`ProxyHttp`): HTTP/2, and whatever the HTTP/1.1 fast path
//! ([`crate::engine::fast`]) does not take. Glue only: each callback calls a stage (DESIGN.md §11) —
//! read and route, authenticate, limit, pick, forward, respond, account — and how a request ends
//! is the `outcome` stage's, as on the fast path: it holds no decision of its own.
//!
//! Owns: the mapping of Pingora's callbacks onto the stages. Must not touch: configuration,
//! selection rules or the snapshot store's writes.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;

use crate::path::account::{self, End};
use crate::path::exchange::{Exchange, Stage};
use crate::path::forward::{self, Downstream};
use crate::path::head::ClientIp;
use crate::path::outcome::{self, AfterFailure, Front};
use crate::path::pick;
use crate::path::respond;
use crate::path::route::{self, RequestIds};
use crate::snapshot::Store;

pub use crate::path::exchange::ACTIVE_REQUESTS;

/// The proxy service. Cheap to share: everything lives behind the store.
pub struct Proxy {
    store: Arc<Store>,
    ids: Arc<RequestIds>,
}

impl Proxy {
    pub fn new(store: Arc<Store>, ids: Arc<RequestIds>) -> Proxy {
        Proxy { store, ids }
    }
}

/// Per-request state: the exchange, from `request_filter` on (a request that fails before it
/// is never counted, as Pingora answers it itself).
pub type Ctx = Option<Exchange>;

fn client_ip(session: &Session) -> ClientIp {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn is_tls(d: Option<&Digest>) -> bool {
    d.is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default adds a disabled compression module whose
    /// per-request context and filter calls cost CPU for nothing (tether never compresses).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        None
    }

    /// Pipelined requests are answered in order, as on the fast path (Pingora's default closes a
    /// connection that has bytes after the request).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        session.as_downstream_mut().set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let client = client_ip(session);
        let ex = ctx.insert(route::start(&self.store, &self.ids, session.req_header()));
        match outcome::front(&self.store, ex, session.req_header(), client).await? {
            Front::Forward => Ok(false),
            Front::Queued => {
                let w = pick::waiting(ex, session.req_header(), client);
                match pick::admit(ex, w, session).await {
                    Ok(()) => Ok(false),
                    Err(r) => match outcome::queue_refusal(r) {
                        None => Err(client_gone()),
                        Some((status, retry_after)) => {
                            let l = outcome::local(ex, status, Some(retry_after))?;
                            write_local(session, l).await
                        }
                    },
                }
            }
            Front::Answer { local, close } => {
                if close {
                    session.set_keepalive(None);
                }
                write_local(session, *local).await
            }
        }
    }

    /// A request body that streams past `max_request_body` (no declared length, or HTTP/2
    /// DATA beyond it): the request ends with 413, as on the HTTP/1.1 loop.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(ex), Some(b)) = (ctx.as_mut(), body.as_ref()) else {
            return Ok(());
        };
        ex.body_bytes += b.len() as u64;
        if outcome::body_exceeds(&self.store, ex, ex.body_bytes) {
            return Err(Error::explain(ErrorType::HTTPStatus(413), "body_too_large"));
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let ex = ctx.as_mut().ok_or_else(|| internal("no exchange"))?;
        // After a connect failure, the new backend's circuit-breaker slot (waiting if full).
        let client = client_ip(session);
        let w = pick::waiting(ex, session.req_header(), client);
        if let Err(r) = pick::admit(ex, w, session).await {
            let Some((status, retry_after)) = outcome::queue_refusal(r) else {
                return Err(client_gone());
            };
            let l = outcome::local(ex, status, Some(retry_after))?;
            write_local(session, l).await?;
            return Err(Error::explain(ErrorType::HTTPStatus(status), r.as_str()));
        }
        ex.hold();
        let (pool, u) = ex.upstream().ok_or_else(|| internal("no backend"))?;
        u.sent_at.get_or_insert_with(Instant::now);
        Ok(Box::new(
            pool.backends[u.pick.backend as usize].peer.clone(),
        ))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(ex) = ctx.as_mut() else {
            return e;
        };
        let client = client_ip(session);
        match outcome::after_connect_failure(&self.store, ex, session.req_header(), client, &e) {
            AfterFailure::Next => {
                e.set_retry(true);
                e
            }
            // 502: the connect error itself is answered as one (an upstream error).
            AfterFailure::Answer { status: 502, .. } => e,
            AfterFailure::Answer { status, .. } => {
                Error::explain(ErrorType::HTTPStatus(status), "no backend left to retry")
            }
        }
    }

    /// A request that failed on a reused connection is sent again on a fresh one by the outcome
    /// stage's rule (idempotent and bodiless, as on the HTTP/1.1 loop); a fresh TLS connection
    /// the backend refused after the handshake (TLS 1.3 client certificate) is a connect
    /// failure, failed over as in `fail_to_connect`.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let has_body = !session.as_downstream_mut().is_body_empty();
        let body_sent = session.as_ref().body_bytes_read() > 0;
        match ctx.as_mut() {
            Some(ex) if outcome::refused_at_connect(&e, client_reused, body_sent) => {
                let client = client_ip(session);
                let next = outcome::after_connect_failure(
                    &self.store,
                    ex,
                    session.req_header(),
                    client,
                    &e,
                );
                e.set_retry(next == AfterFailure::Next);
            }
            _ if !outcome::may_resend(
                session.req_header().method.as_str().as_bytes(),
                has_body,
            ) =>
            {
                e.set_retry(false)
            }
            _ => e.retry.decide_reuse(client_reused),
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let ex = ctx.as_ref().ok_or_else(|| internal("no exchange"))?;
        let down = Downstream {
            client: client_ip(session),
            tls: is_tls(session.digest()),
        };
        forward::request_headers(ex, upstream, &down)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some((pool, u)) = ctx.as_mut().and_then(|ex| ex.upstream()) {
            u.response_head();
            account::passive(&self.store, pool, u.pick.backend, true);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        match ctx {
            Some(ex) => respond::response_headers(ex, resp),
            None => Ok(()),
        }
    }

    /// Pingora's error answer, with tether's statuses (504 for an upstream timeout, as on the
    /// fast path) and tether's own body, `X-Request-Id` and, for 503, `Retry-After`.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> pingora::proxy::FailToProxy {
        let code = outcome::error_status(e);
        if code > 0 && session.response_written().is_none() {
            let written = match ctx.as_ref() {
                Some(ex) => {
                    let retry_after = (code == 503).then(|| outcome::retry_after(ex));
                    match outcome::local(ex, code, retry_after) {
                        Ok(l) => write_local(session, l).await.is_ok(),
                        Err(_) => false,
                    }
                }
                None => false,
            };
            if !written {
                let _ = session.respond_error(code).await;
            }
        }
        pingora::proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(ex) = ctx.as_mut() else {
            return;
        };
        let written = session.response_written().map(|r| r.status.as_u16());
        let status = outcome::final_status(ex, written);
        let upstream_error = e.filter(|e| e.esource() == &pingora::ErrorSource::Upstream);
        if let Some(err) = upstream_error {
            if let (true, Some((pool, u))) = (outcome::timed_out(err), ex.upstream()) {
                account::passive(&self.store, pool, u.pick.backend, false);
            }
        }
        if matches!(ex.stage, Stage::Read) {
            return;
        }
        let client = client_ip(session);
        let backend = match e {
            Some(_) if upstream_error.is_none() => None,
            _ => outcome::blame(ex, status, upstream_error),
        };
        account::account(
            &self.store,
            ex,
            session.req_header(),
            client,
            End {
                status,
                error: e.map(|e| e.etype().as_str()),
                backend,
            },
        );
    }
}

/// The client went away (while its request waited in the circuit-breaker queue).
fn client_gone() -> Box<Error> {
    Error::create(
        ErrorType::ConnectionClosed,
        pingora::ErrorSource::Downstream,
        Some("client went away while queued".into()),
        None,
    )
}

/// The client side of a request waiting in the circuit-breaker queue: HTTP/2 sees a reset or
/// closed stream at any time; HTTP/1 a closed connection once the request body is done.
impl pick::Client for Session {
    async fn gone(&mut self) {
        let d = self.as_downstream_mut();
        if d.as_http2().is_some() {
            if let Some(idle) = d.watch_h2_stream_close() {
                let _ = idle.await;
            }
        } else if d.is_body_done() {
            let _ = d.read_body_or_idle(true).await;
        } else {
            std::future::pending::<()>().await
        }
    }
}

fn internal(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, what)
}

/// Writes a response generated by tether itself; the request goes no further.
async fn write_local(session: &mut Session, l: respond::Local) -> Result<bool> {
    session
        .write_response_header(Box::new(l.head), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(l.body.as_bytes())), true)
        .await?;
    Ok(true)
}
