//! The pingora-proxy engine (`ProxyHttp`): HTTP/2, and whatever the HTTP/1.1 fast path
//! ([`crate::fast`]) does not take. Glue only: each callback calls a stage (DESIGN.md §11) —
//! read and route, authenticate, limit, pick, forward, respond, account — and holds no decision
//! of its own.
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

use crate::account::{self, End};
use crate::authenticate;
use crate::backend::Exchanged;
use crate::exchange::{Exchange, Stage};
use crate::forward::{self, Downstream};
use crate::head::ClientIp;
use crate::limit;
use crate::pick::{self, Picked, Refusal, Retry};
use crate::respond;
use crate::route::{self, RequestIds};
use crate::snapshot::Store;

pub use crate::exchange::ACTIVE_REQUESTS;

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
        let Some(ri) = route::route(ex, session.req_header()) else {
            let l = respond::local(ex, 404, None, respond::NO_ROUTE)?;
            return write_local(session, l).await;
        };
        if let Err(refused) = authenticate::authenticate(ex, ri, session.req_header()) {
            let l = refused.answer(ex)?;
            return write_local(session, l).await;
        }
        if let Err(r) = limit::limit(ex, ri, session.req_header(), client).await {
            let l = limit::refuse(ex, ri, &r)?;
            return write_local(session, l).await;
        }
        let retry_after = match pick::pick(ex, ri, session.req_header(), client) {
            Picked::Backend => return Ok(false),
            Picked::NoBackend { retry_after } => retry_after,
            Picked::Queued => match pick::admit(ex, session, client).await {
                Ok(()) => return Ok(false),
                Err(Refusal::Gone) => return Err(client_gone()),
                Err(r) => r.retry_after(),
            },
        };
        let l = respond::local(ex, 503, Some(retry_after), respond::NO_BACKEND)?;
        write_local(session, l).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let ex = ctx.as_mut().ok_or_else(|| internal("no exchange"))?;
        // After a connect failure, the new backend's circuit-breaker slot (waiting if full).
        let client = client_ip(session);
        match pick::admit(ex, session, client).await {
            Ok(()) => {}
            Err(Refusal::Gone) => return Err(client_gone()),
            Err(r) => {
                let l = respond::local(ex, 503, Some(r.retry_after()), respond::NO_BACKEND)?;
                write_local(session, l).await?;
                return Err(Error::explain(ErrorType::HTTPStatus(503), r.as_str()));
            }
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
        account::connect_failed(&self.store, ex, &e);
        match pick::fail_over(ex, session.req_header(), client_ip(session)) {
            Retry::Next => {
                e.set_retry(true);
                e
            }
            Retry::Exhausted => e,
            Retry::NoBackend { .. } if crate::upstream_tls::is_handshake_failure(&e) => e,
            Retry::NoBackend { .. } => {
                Error::explain(ErrorType::HTTPStatus(503), "no backend left to retry")
            }
        }
    }

    /// Pingora's default (retry an idempotent request that failed on a reused connection), plus:
    /// a fresh TLS connection the backend refused after the handshake (TLS 1.3 client
    /// certificate) is a connect failure, failed over as in `fail_to_connect`.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = !session.as_ref().retry_buffer_truncated();
        match ctx.as_mut() {
            Some(ex)
                if !client_reused
                    && replayable
                    && crate::upstream_tls::refused_after_handshake(&e) =>
            {
                account::connect_failed(&self.store, ex, &e);
                let next = pick::fail_over(ex, session.req_header(), client_ip(session));
                e.set_retry(matches!(next, Retry::Next));
            }
            _ if !session.req_header().method.is_idempotent() || !replayable => e.set_retry(false),
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
        forward::request_headers(ex, upstream, &down, false)
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
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (
                ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                pingora::ErrorSource::Upstream,
            ) => 504,
            (_, pingora::ErrorSource::Upstream) => 502,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                pingora::ErrorSource::Downstream,
            ) => 0,
            (_, pingora::ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            let written = match ctx.as_ref() {
                Some(ex) => {
                    let retry_after = (code == 503).then(|| {
                        ex.route()
                            .map(|(_, _, pool)| pick::retry_after(pool))
                            .unwrap_or(1)
                    });
                    let body = match code {
                        503 => respond::NO_BACKEND,
                        504 => respond::GATEWAY_TIMEOUT,
                        _ => respond::BAD_GATEWAY,
                    };
                    match respond::local(ex, code, retry_after, body) {
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
        let status = ex
            .local_status()
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        if let Some(err) = e {
            let timed_out = matches!(
                err.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) && err.esource() == &pingora::ErrorSource::Upstream;
            if let (true, Some((pool, u))) = (timed_out, ex.upstream()) {
                account::passive(&self.store, pool, u.pick.backend, false);
            }
        }
        if matches!(ex.stage, Stage::Read) {
            return;
        }
        let client = client_ip(session);
        let backend = match e {
            // Connection failures were counted as they happened; other upstream errors count.
            Some(err) if err.esource() == &pingora::ErrorSource::Upstream => (!matches!(
                err.etype(),
                ErrorType::ConnectRefused
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute
                    | ErrorType::TLSHandshakeFailure
                    | ErrorType::InvalidCert
            )
                || crate::upstream_tls::refused_after_handshake(err))
            .then_some(Exchanged::Failed),
            Some(_) => None,
            None => matches!(ex.stage, Stage::Upstream(_)).then(|| account::judged(status)),
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
    fn head(&self) -> &RequestHeader {
        self.req_header()
    }

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
