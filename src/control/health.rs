//! Active health checks (DESIGN.md §5): one task per backend of every pool with `[health]`,
//! sending `GET path` every `interval` with `timeout`; `rise`/`fall` consecutive results flip the
//! backend's state in the registry, and the pool's live view is rebuilt.
//!
//! Pools that speak HTTP/2 to their backends are checked over HTTP/2 (`grpc_health`): `GET
//! path`, or `grpc.health.v1.Health/Check` with `grpc_service` (DESIGN.md §21).
//!
//! Owns: the check tasks and the tiny HTTP/1.1 probe (over TLS with the pool's `[tls]` settings,
//! through the backend's own `HttpPeer`, so checks and traffic agree on TLS). Must not touch: the request path. Passive
//! marking (connection failures while proxying) is fed by the proxy through
//! `BackendState::record_passive`; only these checks bring a backend back up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::config::HealthOpts;
use crate::snapshot::{Snapshot, Store};
use crate::state::backend::BackendState;

mod grpc_health;

/// What a running check task was started with; a change restarts the task.
#[derive(PartialEq)]
struct TaskKey {
    addr: SocketAddr,
    path: String,
    host: Option<String>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    expect: Option<Vec<u16>>,
    /// The pool's TLS identity (0: plain): new TLS settings restart the check.
    tls: u64,
    /// The pool speaks HTTP/2 to its backends: the check does too.
    h2: bool,
    grpc_service: Option<String>,
}

type Task = (TaskKey, JoinHandle<()>);

/// Supervises the check tasks so that they always match the current snapshot.
pub struct Health {
    store: Arc<Store>,
    rt: Handle,
    tasks: Mutex<HashMap<(String, String), Task>>,
}

impl Health {
    pub fn new(store: Arc<Store>, rt: Handle) -> Health {
        Health {
            store,
            rt,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Starts checks for new or changed backends and stops those of removed ones.
    pub fn sync(&self, snap: &Snapshot) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = Vec::new();
        for pool in &snap.pools {
            let Some(h) = &pool.conf.health else {
                continue;
            };
            for b in &pool.backends {
                let id = (pool.name.to_string(), b.id.to_string());
                let key = TaskKey {
                    addr: b.addr,
                    path: h.path.clone(),
                    host: h.host.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    rise: h.rise,
                    fall: h.fall,
                    expect: h.expect.clone(),
                    tls: b.conn_key.tls,
                    h2: pool.conf.protocol.is_h2(),
                    grpc_service: h.grpc_service.clone(),
                };
                wanted.push(id.clone());
                if let Some((k, t)) = tasks.get(&id) {
                    if *k == key && !t.is_finished() {
                        continue;
                    }
                    t.abort();
                }
                let task = self.rt.spawn(check_loop(
                    self.store.clone(),
                    b.state.clone(),
                    b.addr,
                    b.peer.is_tls().then(|| b.peer.clone()),
                    h.clone(),
                    pool.conf.protocol.is_h2(),
                ));
                tasks.insert(id, (key, task));
            }
        }
        tasks.retain(|id, (_, t)| {
            let keep = wanted.contains(id);
            if !keep {
                t.abort();
            }
            keep
        });
    }

    /// Stops every check (shutdown).
    pub fn stop(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, t)) in tasks.drain() {
            t.abort();
        }
    }
}

async fn check_loop(
    store: Arc<Store>,
    state: Arc<BackendState>,
    addr: SocketAddr,
    tls: Option<HttpPeer>,
    h: HealthOpts,
    h2: bool,
) {
    let host = h.host.clone().unwrap_or_else(|| addr.to_string());
    let probe_h2 = h2.then(|| grpc_health::Probe::new(&h, &host, tls.is_some()));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tether-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        h.path
    );
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (ok, detail) = match &probe_h2 {
            Some(p) => match tokio::time::timeout(h.timeout, p.run(addr, tls.as_ref())).await {
                Ok(Ok(grpc_health::Answer::Grpc(serving))) => (
                    serving == grpc_health::SERVING,
                    format!("gRPC health status {}", grpc_health::status_name(serving)),
                ),
                Ok(Ok(grpc_health::Answer::Http(status))) => {
                    (accepts(&h.expect, status), format!("status {status}"))
                }
                Ok(Err(e)) => (false, e),
                Err(_) => (false, format!("timed out after {:?}", h.timeout)),
            },
            None => {
                let result =
                    tokio::time::timeout(h.timeout, probe(addr, tls.as_ref(), request.as_bytes()))
                        .await;
                match result {
                    Ok(Ok(status)) => (accepts(&h.expect, status), format!("status {status}")),
                    Ok(Err(e)) => (false, e),
                    Err(_) => (false, format!("timed out after {:?}", h.timeout)),
                }
            }
        };
        if ok {
            state.metrics.checks_ok.inc();
        } else {
            state.metrics.checks_failed.inc();
        }
        if state.record(ok, h.rise, h.fall) {
            if ok {
                tracing::info!(pool = %state.pool, backend = %state.id, %addr, "backend is up ({detail})");
            } else {
                tracing::warn!(pool = %state.pool, backend = %state.id, %addr, "backend is down ({detail})");
            }
            store.refresh_pool(&state.pool);
        }
    }
}

/// Whether `status` passes: the configured list, or any 2xx/3xx.
pub fn accepts(expect: &Option<Vec<u16>>, status: u16) -> bool {
    match expect {
        Some(list) => list.contains(&status),
        None => (200..400).contains(&status),
    }
}

/// Connects (over TLS when `tls` is the backend's TLS peer), sends the request and returns the
/// response status.
async fn probe(addr: SocketAddr, tls: Option<&HttpPeer>, request: &[u8]) -> Result<u16, String> {
    match tls {
        None => {
            let s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).ok();
            exchange(s, request).await
        }
        Some(peer) => {
            let s = crate::state::upstream_tls::connector()
                .new_stream(peer)
                .await
                .map_err(|e| format!("TLS connect: {e}"))?;
            exchange(s, request).await
        }
    }
}

async fn exchange(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> Result<u16, String> {
    s.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(_) if resp.code.is_some() => return Ok(resp.code.unwrap_or(0)),
            Ok(_) if buf.len() < 16 * 1024 => continue,
            Ok(_) => return Err("response header too large".into()),
            Err(httparse::Error::TooManyHeaders) => {
                // The status line parsed; that is all a check needs.
                return parse_status_line(&buf).ok_or_else(|| "bad status line".into());
            }
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}

fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&c| c == b'\n').next()?;
    let code = line.split(|&c| c == b' ').nth(1)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_expectation_is_2xx_or_3xx() {
        assert!(accepts(&None, 200));
        assert!(accepts(&None, 302));
        assert!(!accepts(&None, 404));
        assert!(!accepts(&None, 500));
        assert!(accepts(&Some(vec![503]), 503));
        assert!(!accepts(&Some(vec![200, 204]), 301));
    }

    #[test]
    fn status_line_fallback() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
    }
}
