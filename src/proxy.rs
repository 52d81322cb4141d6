//! The Pingora `ProxyHttp` implementation: route, pick, forward, set the affinity cookie, count
//! and log.
//!
//! Owns: the per-request path. It loads the snapshot once (in `request_filter`) and uses it to
//! the end; it reads pool views and pre-resolved metric handles and never takes a lock or looks
//! up a metric by labels (migrations, which are rare, are the one exception). Must not touch:
//! configuration parsing or the snapshot store's writes — passive health results go through
//! [`BackendState::record`] and [`Store::refresh_pool`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;

use crate::balance::cookie::NONCE_LEN;
use crate::config::{Fallback, KeySpec};
use crate::metrics::code_class;
use crate::select::{Input, Outcome, Reason};
use crate::snapshot::{Pool, Snapshot, Store};

/// The proxy service. Cheap to share: everything lives behind the store.
pub struct Proxy {
    store: Arc<Store>,
    ids: RequestIds,
}

impl Proxy {
    pub fn new(store: Arc<Store>) -> Proxy {
        Proxy {
            store,
            ids: RequestIds::new(),
        }
    }
}

/// Requests between `new_ctx` and the end of `logging` (or an early drop), process-wide: lets a
/// graceful shutdown end as soon as nothing is in progress instead of always waiting the whole
/// grace period.
pub static ACTIVE_REQUESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Per-request state.
pub struct Ctx {
    start: Instant,
    snap: Option<Arc<Snapshot>>,
    route: Option<usize>,
    /// The backend the request is (or was last) sent to.
    backend: Option<u32>,
    /// Backends that refused the connection, in order.
    tried: Vec<u32>,
    /// Set by `fail_to_connect` when a retry must pick another backend.
    reselect: bool,
    retries: u32,
    /// Whose in-flight gauge this request currently holds.
    in_flight: Option<u32>,
    outcome: Outcome,
    /// The session nonce (cookie policy), also the failover key without a hash key.
    nonce: Option<[u8; NONCE_LEN]>,
    set_cookie: Option<String>,
    /// The request carried the pool's affinity cookie (to strip before forwarding).
    has_affinity_cookie: bool,
    request_id: Option<String>,
    /// Status of a response tether generated itself (404, 503).
    local_status: Option<u16>,
    upstream_start: Option<Instant>,
    upstream_time: Option<Duration>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        ACTIVE_REQUESTS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default adds a disabled compression module whose
    /// per-request context and filter calls cost CPU for nothing (tether never compresses).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        ACTIVE_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ctx {
            start: Instant::now(),
            snap: None,
            route: None,
            backend: None,
            tried: Vec::new(),
            reselect: false,
            retries: 0,
            in_flight: None,
            outcome: Outcome::None,
            nonce: None,
            set_cookie: None,
            has_affinity_cookie: false,
            request_id: None,
            local_status: None,
            upstream_start: None,
            upstream_time: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.store.load();
        ctx.request_id = Some(match request_id(session.req_header()) {
            Some(id) => id.to_owned(),
            None => self.ids.next(),
        });
        let req = session.req_header();
        let route = snap.route(host(req), req.uri.path().as_bytes());
        let Some(ri) = route else {
            ctx.snap = Some(snap);
            return respond(session, ctx, 404, None, "no route for this host and path\n").await;
        };
        ctx.route = Some(ri);
        let pool = &snap.pools[snap.routes[ri].pool];
        let view = pool.view.load();
        let key = hash_key(pool, session);
        let cookie = match &pool.codec {
            Some(_) => find_cookie(session.req_header(), &pool.conf.cookie.name),
            None => None,
        };
        ctx.has_affinity_cookie = cookie.is_some();
        let input = Input {
            cookie,
            key: key.as_ref().map(|k| k.as_bytes()),
            now: unix_now(),
        };
        let mut nonce = fresh_nonce;
        match pool.select(&view, &input, &mut nonce) {
            Some(d) => {
                ctx.backend = Some(d.backend);
                ctx.nonce = d.session;
                if let Some(a) = &d.issue {
                    ctx.set_cookie = Some(set_cookie(pool, a));
                }
                if let Outcome::Migrated { from, reason } = &d.outcome {
                    count_migration(&self.store, pool, from, d.backend, *reason);
                }
                ctx.outcome = d.outcome;
                drop(view);
                ctx.snap = Some(snap);
                Ok(false)
            }
            None => {
                let retry_after = pool
                    .conf
                    .health
                    .as_ref()
                    .map(|h| h.interval.as_secs().max(1))
                    .unwrap_or(1);
                drop(view);
                ctx.snap = Some(snap);
                respond(
                    session,
                    ctx,
                    503,
                    Some(retry_after),
                    "no backend available\n",
                )
                .await
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let snap = ctx.snap.clone().ok_or_else(|| internal("no snapshot"))?;
        let ri = ctx.route.ok_or_else(|| internal("no route"))?;
        let pool = &snap.pools[snap.routes[ri].pool];
        if ctx.reselect {
            ctx.reselect = false;
            let view = pool.view.load();
            let key = failover_key(pool, session, ctx);
            let next = pool.reselect(&view, key.as_ref().map(|k| k.as_bytes()), &ctx.tried);
            let Some(next) = next else {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no backend left to retry",
                ));
            };
            if let (Some(nonce), Some(&failed)) = (ctx.nonce, ctx.tried.last()) {
                // The session's backend refused the connection: it moves for good, so the cookie
                // now names the new home. A session that was only just assigned is still new.
                if matches!(ctx.outcome, Outcome::Hit | Outcome::Migrated { .. }) {
                    let from = pool.backends[failed as usize].id.clone();
                    count_migration(&self.store, pool, &from, next, Reason::ConnectError);
                    if ctx.outcome == Outcome::Hit {
                        ctx.outcome = Outcome::Migrated {
                            from,
                            reason: Reason::ConnectError,
                        };
                    }
                }
                let a = crate::balance::cookie::Affinity {
                    backend: pool.backends[next as usize].digest,
                    nonce,
                    issued: unix_now(),
                };
                ctx.set_cookie = Some(set_cookie(pool, &a));
            }
            ctx.backend = Some(next);
        }
        let bi = ctx.backend.ok_or_else(|| internal("no backend"))?;
        let b = &pool.backends[bi as usize];
        if ctx.in_flight != Some(bi) {
            release(pool, ctx);
            b.state.metrics.in_flight.inc();
            ctx.in_flight = Some(bi);
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(b.peer.clone()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(snap), Some(ri), Some(bi)) = (ctx.snap.clone(), ctx.route, ctx.backend) else {
            return e;
        };
        let pool = &snap.pools[snap.routes[ri].pool];
        let b = &pool.backends[bi as usize];
        b.state.metrics.connect_failures.inc();
        passive(&self.store, pool, bi, false);
        release(pool, ctx);
        ctx.tried.push(bi);
        if ctx.retries < pool.conf.retries {
            ctx.retries += 1;
            ctx.reselect = true;
            pool.metrics.retries.inc();
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = addr.ip().to_string();
            let xff = match upstream.headers.get("x-forwarded-for") {
                Some(prev) if !prev.is_empty() => {
                    let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                    v.extend_from_slice(prev.as_bytes());
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(ip.as_bytes());
                    http::HeaderValue::from_bytes(&v)
                        .map_err(|_| internal("bad x-forwarded-for"))?
                }
                _ => http::HeaderValue::from_str(&ip).map_err(|_| internal("bad ip"))?,
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        let proto = if is_tls(session.digest()) {
            "https"
        } else {
            "http"
        };
        upstream.insert_header("x-forwarded-proto", proto)?;
        let h = host_header(session.req_header());
        if !h.is_empty() {
            let h = http::HeaderValue::from_bytes(h).map_err(|_| internal("bad host"))?;
            upstream.insert_header("x-forwarded-host", h)?;
        }
        if let Some(id) = &ctx.request_id {
            if upstream.headers.get("x-request-id").is_none() {
                upstream.insert_header("x-request-id", id.as_str())?;
            }
        }
        // The affinity cookie is the proxy's business: backends never see it (HAProxy's
        // "indirect"), so it cannot leak into application logs or be echoed back.
        if let (true, Some(snap), Some(ri)) = (ctx.has_affinity_cookie, &ctx.snap, ctx.route) {
            strip_cookie(upstream, &snap.pools[snap.routes[ri].pool].conf.cookie.name)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(start), None) = (ctx.upstream_start, ctx.upstream_time) {
            ctx.upstream_time = Some(start.elapsed());
        }
        if let (Some(snap), Some(ri), Some(bi)) = (&ctx.snap, ctx.route, ctx.backend) {
            let pool = &snap.pools[snap.routes[ri].pool];
            passive(&self.store, pool, bi, true);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header(header::SET_COOKIE, c)?;
            if let (Some(snap), Some(ri)) = (&ctx.snap, ctx.route) {
                if snap.pools[snap.routes[ri].pool].conf.cookie.cache_private {
                    mark_private(resp)?;
                }
            }
        }
        if let Some(id) = &ctx.request_id {
            if resp.headers.get("x-request-id").is_none() {
                resp.insert_header("x-request-id", id.as_str())?;
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let Some(snap) = ctx.snap.clone() else {
            return;
        };
        let elapsed = ctx.start.elapsed();
        let class = code_class(status);
        let (route_name, pool) = match ctx.route {
            Some(ri) => {
                let r = &snap.routes[ri];
                let pool = &snap.pools[r.pool];
                let counters = match ctx.backend {
                    Some(bi) if ctx.local_status.is_none() => &r.requests[bi as usize],
                    _ => &r.requests_no_backend,
                };
                counters[class].inc();
                pool.metrics.duration.observe(elapsed.as_secs_f64());
                if let Some(i) = ctx.outcome.metric_index() {
                    if ctx.local_status.is_none() {
                        pool.metrics.affinity[i].inc();
                    }
                }
                if let (Some(err), Some(bi)) = (e, ctx.backend) {
                    if matches!(
                        err.etype(),
                        ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    ) && err.esource() == &pingora::ErrorSource::Upstream
                    {
                        passive(&self.store, pool, bi, false);
                    }
                }
                release(pool, ctx);
                (&*r.name, Some(pool))
            }
            None => {
                snap.unrouted[class].inc();
                ("", None)
            }
        };
        if !snap.config.log.access {
            return;
        }
        let req = session.req_header();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let backend = match (pool, ctx.backend) {
            (Some(p), Some(bi)) if ctx.local_status.is_none() => &*p.backends[bi as usize].id,
            _ => "",
        };
        let from = match &ctx.outcome {
            Outcome::Migrated { from, .. } => &**from,
            _ => "",
        };
        tracing::info!(
            target: "access",
            request_id = ctx.request_id.as_deref().unwrap_or(""),
            client = %client,
            method = %req.method,
            host = %String::from_utf8_lossy(host_header(req)),
            path = %req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            status,
            route = route_name,
            pool = pool.map(|p| &*p.name).unwrap_or(""),
            backend,
            affinity = ctx.outcome.as_str(),
            from,
            upstream_ms = ms(ctx.upstream_time.unwrap_or_default()),
            total_ms = ms(elapsed),
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
        );
    }
}

/// Milliseconds with microsecond precision (prints as `0.217`, not `0.21706699999999998`).
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn internal(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, what)
}

/// Gives back the in-flight slot the request holds.
fn release(pool: &Pool, ctx: &mut Ctx) {
    if let Some(bi) = ctx.in_flight.take() {
        pool.backends[bi as usize].state.metrics.in_flight.dec();
    }
}

/// Feeds a passive result into the backend's rise/fall streak (only for pools with active
/// checks: without them nothing would ever bring the backend back).
fn passive(store: &Store, pool: &Pool, bi: u32, ok: bool) {
    let Some(h) = &pool.conf.health else {
        return;
    };
    let b = &pool.backends[bi as usize];
    if b.state.record_passive(ok, h.fall) {
        tracing::warn!(pool = %pool.name, backend = %b.id, "backend marked down after {} consecutive connection failures", h.fall);
        store.refresh_pool(&pool.name);
    }
}

fn count_migration(store: &Store, pool: &Pool, from: &str, to: u32, reason: Reason) {
    let to = &*pool.backends[to as usize].id;
    store
        .metrics()
        .migrations
        .with_label_values(&[&pool.name, from, to, reason.as_str()])
        .inc();
}

/// Writes a response generated by tether itself.
async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    retry_after: Option<u64>,
    body: &'static str,
) -> Result<bool> {
    ctx.local_status = Some(status);
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if let Some(s) = retry_after {
        resp.insert_header(header::RETRY_AFTER, s)?;
    }
    if let Some(id) = &ctx.request_id {
        resp.insert_header("x-request-id", id.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(true)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fresh_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    // The system CSPRNG does not fail on Linux once initialised; a zero nonce would still be a
    // valid (if shared) session key, never a crash.
    let _ = ring::rand::SystemRandom::new().fill(&mut n);
    n
}

fn set_cookie(pool: &Pool, a: &crate::balance::cookie::Affinity) -> String {
    let codec = pool.codec.as_ref().expect("cookie pools have a codec");
    let value = codec.encode(a);
    let name = &pool.conf.cookie.name;
    let mut s = String::with_capacity(name.len() + 1 + value.len() + pool.cookie_attrs.len());
    s.push_str(name);
    s.push('=');
    s.push_str(&value);
    s.push_str(&pool.cookie_attrs);
    s
}

fn is_tls(d: Option<&Digest>) -> bool {
    d.is_some_and(|d| d.ssl_digest.is_some())
}

/// The Host header, or the URI authority (HTTP/2), as sent.
fn host_header(req: &RequestHeader) -> &[u8] {
    match req.headers.get(header::HOST) {
        Some(h) => h.as_bytes(),
        None => req
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .unwrap_or(b""),
    }
}

/// The host without port, for routing.
fn host(req: &RequestHeader) -> &[u8] {
    strip_port(host_header(req))
}

fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        // [v6]:port
        return match h.iter().position(|&c| c == b']') {
            Some(end) => &h[..=end],
            None => h,
        };
    }
    match h.iter().rposition(|&c| c == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

fn request_id(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 200)
}

/// Value of cookie `name` in the request's Cookie header(s), without allocating.
pub fn find_cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    for h in req.headers.get_all(header::COOKIE) {
        for pair in h.as_bytes().split(|&c| c == b';') {
            let pair = trim(pair);
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(v) = rest.strip_prefix(b"=") {
                    return Some(trim_quotes(v));
                }
            }
        }
    }
    None
}

/// Makes a response that sets the affinity cookie uncacheable by shared caches: adds `private`
/// to `Cache-Control` (replacing `public`) unless it already says `private` or `no-store`.
fn mark_private(resp: &mut ResponseHeader) -> Result<()> {
    let current = resp
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let lower = current.to_ascii_lowercase();
    let directives: Vec<&str> = lower.split(',').map(str::trim).collect();
    if directives
        .iter()
        .any(|d| *d == "private" || *d == "no-store")
    {
        return Ok(());
    }
    // "public" would contradict "private": drop it, keep everything else (max-age still
    // applies to the browser's own cache).
    let mut value = String::from("private");
    for d in current.split(',').map(str::trim) {
        if !d.is_empty() && !d.eq_ignore_ascii_case("public") {
            value.push_str(", ");
            value.push_str(d);
        }
    }
    resp.insert_header(header::CACHE_CONTROL, value)?;
    Ok(())
}

/// Removes cookie `name` from the Cookie header(s) of `req`; drops a header left empty.
/// Called only when the request carries it (found once, in `request_filter`).
fn strip_cookie(req: &mut RequestHeader, name: &str) -> Result<()> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for h in req.headers.get_all(header::COOKIE) {
        let rest: Vec<&[u8]> = h
            .as_bytes()
            .split(|&c| c == b';')
            .map(trim)
            .filter(|pair| {
                !pair.is_empty()
                    && pair
                        .strip_prefix(name.as_bytes())
                        .is_none_or(|r| r.first() != Some(&b'='))
            })
            .collect();
        if !rest.is_empty() {
            kept.push(rest.join(&b"; "[..]));
        }
    }
    req.remove_header(&header::COOKIE);
    for v in kept {
        let v = http::HeaderValue::from_bytes(&v).map_err(|_| internal("bad cookie header"))?;
        req.append_header(header::COOKIE, v)?;
    }
    Ok(())
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn trim_quotes(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// A hash key borrowed from the request, or an IP address's bytes.
pub enum Key<'a> {
    Bytes(&'a [u8]),
    Ip([u8; 16], usize),
}

impl Key<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Ip(b, n) => &b[..*n],
        }
    }
}

fn extract_key<'a>(spec: &KeySpec, session: &'a Session) -> Option<Key<'a>> {
    let req = session.req_header();
    let bytes = match spec {
        KeySpec::Cookie(name) => find_cookie(req, name),
        KeySpec::Header(name) => req.headers.get(name.as_str()).map(|v| v.as_bytes()),
        KeySpec::Query(name) => req.uri.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v.as_bytes())
            })
        }),
        KeySpec::Path => Some(req.uri.path().as_bytes()),
        KeySpec::SourceIp => {
            let ip = session.client_addr()?.as_inet()?.ip();
            let mut buf = [0u8; 16];
            let n = match ip {
                std::net::IpAddr::V4(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    4
                }
                std::net::IpAddr::V6(v6) => {
                    buf.copy_from_slice(&v6.octets());
                    16
                }
            };
            return Some(Key::Ip(buf, n));
        }
    };
    bytes.filter(|b| !b.is_empty()).map(Key::Bytes)
}

/// The hash key of a hash pool's request (the configured key, else the fallback key).
fn hash_key<'a>(pool: &Pool, session: &'a Session) -> Option<Key<'a>> {
    let h = pool.conf.hash.as_ref()?;
    extract_key(&h.key, session).or_else(|| match &h.fallback {
        Fallback::RoundRobin => None,
        Fallback::Key(k) => extract_key(k, session),
    })
}

/// The key that decides where a failed-over request goes: the hash key, else the session nonce.
fn failover_key<'a>(pool: &Pool, session: &'a Session, ctx: &Ctx) -> Option<Key<'a>> {
    if let Some(k) = hash_key(pool, session) {
        return Some(k);
    }
    ctx.nonce.map(|n| {
        let mut buf = [0u8; 16];
        buf[..NONCE_LEN].copy_from_slice(&n);
        Key::Ip(buf, NONCE_LEN)
    })
}

/// Request ids: a random per-process prefix and a counter — unique without coordination.
struct RequestIds {
    prefix: String,
    counter: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let n = fresh_nonce();
        let prefix = n[..6].iter().map(|b| format!("{b:02x}")).collect();
        RequestIds {
            prefix,
            counter: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; tether_shop=abc ; b=2")
            .unwrap();
        req.append_header("cookie", "c=\"q\"").unwrap();
        assert_eq!(find_cookie(&req, "tether_shop"), Some(&b"abc"[..]));
        assert_eq!(find_cookie(&req, "c"), Some(&b"q"[..]));
        assert_eq!(find_cookie(&req, "tether"), None);
        assert_eq!(find_cookie(&req, "b"), Some(&b"2"[..]));
    }

    #[test]
    fn the_affinity_cookie_is_stripped_and_others_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; tether_shop=abc; tether_shop2=x")
            .unwrap();
        req.append_header("cookie", "tether_shop=zzz").unwrap();
        strip_cookie(&mut req, "tether_shop").unwrap();
        let all: Vec<&[u8]> = req
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(all, vec![&b"a=1; tether_shop2=x"[..]]);
        let mut none = RequestHeader::build("GET", b"/", None).unwrap();
        none.append_header("cookie", "a=1").unwrap();
        strip_cookie(&mut none, "tether_shop").unwrap();
        assert_eq!(none.headers.get("cookie").unwrap().as_bytes(), b"a=1");
    }

    #[test]
    fn set_cookie_responses_become_private() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(r.headers.get("cache-control").unwrap(), "private");
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "public, max-age=60")
            .unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(
            r.headers.get("cache-control").unwrap(),
            "private, max-age=60"
        );
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "no-store").unwrap();
        mark_private(&mut r).unwrap();
        assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }
}
