//! The account stage (DESIGN.md §11): metrics, the access log and passive health, once per
//! request, the same for both engines.
//!
//! Owns: what is counted and logged when a request ends, and passive health results. Must not
//! touch: the snapshot's writes — a backend that passive results mark down has its pool's view
//! rebuilt on the control runtime ([`Store::request_refresh`]), never on a worker thread.

use std::time::Duration;

use crate::http::Head;

use crate::balance::sessions::session_hash;
use crate::path::exchange::{Exchange, Stage, Upstream};
use crate::path::head::{host_header, ClientIp};
use crate::snapshot::select::Outcome;
use crate::snapshot::{Pool, Store};
use crate::state::backend::Exchanged;
use crate::state::metrics::code_class;

/// How a request ended.
pub struct End<'a> {
    /// The status the client got (0: none).
    pub status: u16,
    /// What went wrong, if anything (an error kind, for the log).
    pub error: Option<&'a str>,
    /// How the exchange with the backend went, for outlier detection; `None` when there is
    /// nothing to hold against it (no backend, or the client's side failed).
    pub backend: Option<Exchanged>,
}

/// Counts and logs the request, feeds outlier detection, and gives back its in-flight slot.
pub fn account(store: &Store, ex: &mut Exchange, req: &dyn Head, client: ClientIp, end: End<'_>) {
    if let (Some(what), Some((pool, u))) = (end.backend, ex.upstream()) {
        outlier(store, pool, u.pick.backend, what);
    }
    if let Some((pool, u)) = ex.upstream() {
        served(pool, u, end.backend);
    }
    let class = code_class(end.status);
    let snap = ex.snap.clone();
    let (route_name, pool, backend, outcome, upstream_time) = match &ex.stage {
        Stage::Read | Stage::Unrouted => {
            snap.unrouted[class].inc();
            ("", None, None, &Outcome::None, None)
        }
        Stage::Local { route, .. } => {
            let r = &snap.routes[*route];
            let pool = &snap.pools[r.pool];
            r.requests_no_backend[class].inc();
            pool.metrics
                .duration
                .observe(ex.start.elapsed().as_secs_f64());
            (&*r.name, Some(pool), None, &Outcome::None, None)
        }
        Stage::Upstream(u) => {
            let r = &snap.routes[u.route];
            let pool = &snap.pools[r.pool];
            r.requests[u.pick.backend as usize][class].inc();
            pool.metrics
                .duration
                .observe(ex.start.elapsed().as_secs_f64());
            if let Some(i) = u.pick.outcome.metric_index() {
                pool.metrics.affinity[i].inc();
            }
            (
                &*r.name,
                Some(pool),
                Some(u.pick.backend),
                &u.pick.outcome,
                u.upstream_time,
            )
        }
    };
    if !snap.config.log.access {
        ex.release();
        return;
    }
    let backend = match (pool, backend) {
        (Some(p), Some(bi)) => &*p.backends[bi as usize].id,
        _ => "",
    };
    let from = match outcome {
        Outcome::Migrated { from, .. } => &**from,
        _ => "",
    };
    tracing::info!(
        target: "access",
        request_id = ex.id.as_str(),
        trace_id = std::str::from_utf8(&ex.trace.trace_id_hex()).unwrap_or(""),
        client = %ClientDisplay(client),
        method = %String::from_utf8_lossy(req.method()),
        host = %String::from_utf8_lossy(host_header(req)),
        path = %String::from_utf8_lossy(req.path_and_query()),
        status = end.status,
        route = route_name,
        pool = pool.map(|p| &*p.name).unwrap_or(""),
        backend,
        affinity = outcome.as_str(),
        from,
        upstream_ms = ms(upstream_time.unwrap_or_default()),
        total_ms = ms(ex.start.elapsed()),
        error = end.error.unwrap_or(""),
    );
    ex.release();
}

/// Milliseconds with microsecond precision (prints as `0.217`, not `0.21706699999999998`).
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Feeds a passive result (a response head: `true`; a connection failure or upstream timeout:
/// `false`) into the backend's streak. Only for pools with active checks: without them nothing
/// would ever bring the backend back. A backend marked down has its pool's view rebuilt on the
/// control runtime.
pub fn passive(store: &Store, pool: &Pool, bi: u32, ok: bool) {
    let Some(h) = &pool.conf.health else {
        return;
    };
    let b = &pool.backends[bi as usize];
    if b.state.record_passive(ok, h.fall) {
        tracing::warn!(pool = %pool.name, backend = %b.id, "backend marked down after {} consecutive connection failures", h.fall);
        store.request_refresh(&pool.name);
    }
}

/// A connection to the picked backend failed: counted, and fed to passive health and outlier
/// detection.
pub fn connect_failed(store: &Store, ex: &mut Exchange, why: &pingora::Error) {
    if let Some((pool, u)) = ex.upstream() {
        let bi = u.pick.backend;
        let b = &pool.backends[bi as usize];
        // Why, in full (for TLS the rustls error, e.g. "invalid peer certificate: UnknownIssuer"),
        // once a second per backend (a dead backend under load fails thousands
        // of connections a second; the counter has them all).
        if let Some(unlogged) = b.state.log_connect_failure() {
            if unlogged > 0 {
                tracing::warn!(pool = %pool.name, backend = %b.id, addr = %b.addr, "connecting to backend failed: {why} ({unlogged} more failed since the last line)");
            } else {
                tracing::warn!(pool = %pool.name, backend = %b.id, addr = %b.addr, "connecting to backend failed: {why}");
            }
        }
        b.state.metrics.connect_failures.inc();
        passive(store, pool, bi, false);
        outlier(store, pool, bi, Exchanged::Failed);
    }
    ex.release();
}

/// Feeds one exchange to outlier detection (pools with `[outlier]`); a streak that reaches its
/// count asks the control runtime to eject the backend.
fn outlier(store: &Store, pool: &Pool, bi: u32, what: Exchanged) {
    let Some(opts) = &pool.conf.outlier else {
        return;
    };
    let state = &pool.backends[bi as usize].state;
    if let Some(why) = state.record_exchange(what, opts) {
        store.request_ejection(&pool.name, state, why);
    }
}

/// What a response status says about the backend.
pub fn judged(status: u16) -> Exchanged {
    if status >= 500 {
        Exchanged::ServerError
    } else {
        Exchanged::Ok
    }
}

/// Account-stage hook: notes the session of a request a backend served — its cookie nonce, or
/// for hash pools its key. Requests that never got an answer from a backend are not counted.
pub fn served(pool: &Pool, u: &Upstream, exchanged: Option<Exchanged>) {
    if exchanged == Some(Exchanged::Failed) || u.sent_at.is_none() {
        return;
    }
    let hash = match (u.key_hash, &u.pick.session) {
        (Some(h), _) => h,
        (None, Some(nonce)) => session_hash(nonce),
        (None, None) => return,
    };
    let now = crate::state::clock::unix_now();
    pool.backends[u.pick.backend as usize]
        .state
        .sessions
        .record(hash, now);
}

/// The client's address for the log, written as it is formatted (no string of its own).
struct ClientDisplay(ClientIp);

impl std::fmt::Display for ClientDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}
