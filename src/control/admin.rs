//! The admin HTTP service on `server.admin` (DESIGN.md §8, §24): `GET /` (the status page,
//! `control::page`), `GET /metrics`, `/healthz`, `/status`; `POST /reload[?force=true]` and
//! `POST /pools/{pool}/backends/{id}/{drain|maint|ready}` (also as `/backends/{pool}/{id}/…`;
//! `drain?deadline=300s` ends the drain in maint at the deadline, DESIGN.md §16).
//!
//! Owns: the admin endpoints and their authorization (bearer token from `admin_token_file` for
//! every POST). Must not touch: the proxy path. State changes go through the registry and the
//! store, like the health checker's.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::control::reload::Reloader;
use crate::snapshot::Store;
use crate::state::backend::Admin;

pub struct AdminApp {
    store: Arc<Store>,
    reloader: Arc<Reloader>,
    /// When the admin service was made (at process start): `/status`'s `started`.
    started: std::time::SystemTime,
}

impl AdminApp {
    pub fn new(store: Arc<Store>, reloader: Arc<Reloader>) -> AdminApp {
        AdminApp {
            store,
            reloader,
            started: std::time::SystemTime::now(),
        }
    }

    /// Serves one request (separate from the trait for unit tests). `path` may carry a query.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        auth: Option<&[u8]>,
    ) -> Response<Vec<u8>> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET | &Method::HEAD, ["metrics"]) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.store.metrics().render(),
            ),
            (&Method::GET | &Method::HEAD, ["healthz"]) => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, ["status"]) => {
                json_reply(StatusCode::OK, self.status_value())
            }
            // The status page: the same data as /status, rendered into the HTML (DESIGN.md §24).
            (&Method::GET | &Method::HEAD, [""]) => {
                crate::control::page::response(&self.status_value())
            }
            // Measurement builds only (feature `alloc-count`): heap allocations so far.
            (&Method::GET, ["debug", "allocations"]) if crate::state::allocs::COUNTING => text(
                StatusCode::OK,
                &format!(
                    "{}\n",
                    crate::state::allocs::ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
                ),
            ),
            (&Method::POST, ["reload"]) => {
                if let Some(denied) = self.authorize(auth) {
                    return denied;
                }
                let r = self.reloader.clone();
                let force = param("force").is_some_and(|v| v == "true" || v == "1");
                match tokio::task::spawn_blocking(move || r.reload_with("admin", true, force)).await
                {
                    Ok(Ok(done)) => json_reply(
                        StatusCode::OK,
                        json!({"result": "success", "generation": done.generation, "changes": done.summary, "impact": done.impact}),
                    ),
                    Ok(Err(e)) => json_reply(
                        if e.too_much_moves {
                            StatusCode::CONFLICT
                        } else {
                            StatusCode::UNPROCESSABLE_ENTITY
                        },
                        json!({"result": "failure", "generation": self.store.load().generation, "errors": e.errors}),
                    ),
                    Err(e) => json_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"result": "failure", "errors": [e.to_string()]}),
                    ),
                }
            }
            (&Method::POST, ["pools", pool, "backends", id, action])
            | (&Method::POST, ["backends", pool, id, action]) => {
                if let Some(denied) = self.authorize(auth) {
                    return denied;
                }
                self.set_admin(pool, id, action, param("deadline"), param("handoff"))
            }
            (_, ["metrics" | "healthz" | "status" | ""])
            | (_, ["reload"])
            | (_, ["pools", _, "backends", _, _])
            | (_, ["backends", _, _, _]) => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /, /metrics, /status, /healthz\n",
            ),
        }
    }

    /// `None` when allowed; a 401 otherwise. Without a token file, POSTs are open (the admin
    /// listener is then on loopback: validation refuses anything else).
    fn authorize(&self, auth: Option<&[u8]>) -> Option<Response<Vec<u8>>> {
        let snap = self.store.load();
        let Some(token) = &snap.config.server.admin_token else {
            return None;
        };
        let given = auth
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .map(|t| t.trim_ascii());
        let ok = given.is_some_and(|g| constant_time_eq(g, token.as_bytes()));
        if ok {
            None
        } else {
            let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            Some(r)
        }
    }

    fn set_admin(
        &self,
        pool: &str,
        id: &str,
        action: &str,
        deadline: Option<&str>,
        handoff: Option<&str>,
    ) -> Response<Vec<u8>> {
        let Some(admin) = Admin::parse(action) else {
            return text(
                StatusCode::NOT_FOUND,
                &format!("unknown action {action:?}: use drain, maint or ready\n"),
            );
        };
        // `handoff=true` (DESIGN.md §25): the sessions move at their next request, with the
        // hand-off header, while the backend stays reachable until the deadline.
        let handoff = match handoff {
            None | Some("false") => false,
            Some("true") if admin == Admin::Drain && deadline.is_some() => true,
            Some("true") => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "handoff is for a drain with a deadline (drain?deadline=60s&handoff=true): the old backend stays reachable until then\n",
                )
            }
            Some(other) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("handoff={other:?}: use true or false\n"),
                )
            }
        };
        let deadline = match deadline {
            None => None,
            Some(_) if admin != Admin::Drain => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "deadline is only for drain (drain?deadline=300s)\n",
                )
            }
            Some(d) => match humantime::parse_duration(d) {
                Ok(d) => Some(d),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "deadline {d:?} is not a duration such as \"300s\" or \"5m\": {e}\n"
                        ),
                    )
                }
            },
        };
        let snap = self.store.load();
        let Some(p) = snap.pool(pool) else {
            return text(StatusCode::NOT_FOUND, &format!("no pool {pool:?}\n"));
        };
        let Some(bi) = p.backend_index(id) else {
            return text(
                StatusCode::NOT_FOUND,
                &format!("no backend {id:?} in pool {pool:?}\n"),
            );
        };
        let state = &p.backends[bi].state;
        if handoff && p.conf.handoff_header.is_none() {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("pool {pool:?} sends no hand-off header (a pool that keeps sessions, with [pool.{pool}.affinity] handoff_header on)\n"),
            );
        }
        let changed = match deadline {
            Some(after) => {
                let was = state.admin();
                crate::control::drain::drain_until(&self.store, pool, state, after);
                if handoff && !state.drain.handoff() {
                    let now = crate::state::clock::unix_now();
                    state.drain.start_handoff(
                        state.sessions.estimate(now),
                        state.handed_off.load(std::sync::atomic::Ordering::Relaxed),
                    );
                    tracing::info!(
                        pool,
                        backend = id,
                        "handing its sessions over until the deadline"
                    );
                }
                tracing::info!(
                    pool,
                    backend = id,
                    "admin state set to drain, maint in {}",
                    humantime::format_duration(after)
                );
                was != Admin::Drain || handoff
            }
            None => state.set_admin(admin),
        };
        if changed {
            if deadline.is_none() {
                tracing::info!(pool, backend = id, "admin state set to {}", admin.as_str());
            }
            self.store.refresh_pool(pool);
        }
        // The state as the (refreshed) view routes by it, like /status shows it.
        let shown = self
            .store
            .load()
            .pool(pool)
            .and_then(|p| Some(p.view.load().shown[p.backend_index(id)?]))
            .unwrap_or_else(|| state.shown());
        json_reply(
            StatusCode::OK,
            json!({
                "pool": pool, "backend": id, "admin": admin.as_str(), "state": shown.state_name(), "changed": changed,
                "drain_started": crate::control::drain::rfc3339(state.drain.started()),
                "drain_deadline": crate::control::drain::rfc3339(state.drain.deadline()),
                "handoff": state.drain.handoff(),
            }),
        )
    }

    /// `/status` (DESIGN.md §8, §24); the status page renders exactly this.
    pub fn status_value(&self) -> serde_json::Value {
        let snap = self.store.load();
        let now = crate::state::clock::unix_now();
        let traffic = self.store.registry().traffic();
        let rfc3339 = crate::control::drain::rfc3339;
        let pools: Vec<_> = snap
            .pools
            .iter()
            .map(|p| {
                // States as the view that routes requests was built from them (backend::Shown).
                let view = p.view.load();
                let backends: Vec<_> = p
                    .backends
                    .iter()
                    .zip(view.shown.iter())
                    .enumerate()
                    .map(|(i, (b, shown))| {
                        let conf = &p.conf.backends[i];
                        let mut j = json!({
                            "id": &*b.id,
                            "addr": b.addr.to_string(),
                            "source": conf.source.as_str(),
                            "weight": b.weight,
                            // Slow start: the weight round-robin and new sessions use now.
                            "effective_weight": f64::from(b.state.effective_weight_tenths(b.weight, p.conf.slow_start)) / 10.0,
                            "ejected": shown.ejected,
                            "health": shown.health(),
                            "admin": shown.admin.as_str(),
                            "state": shown.state_name(),
                            "in_flight": b.state.in_flight(),
                            "drain_started": crate::control::drain::rfc3339(b.state.drain.started()),
                            "drain_deadline": crate::control::drain::rfc3339(b.state.drain.deadline()),
                            "recent_sessions": b.state.sessions.estimate(now),
                            // Session hand-off (DESIGN.md §25): sessions moved off it with its
                            // address; during a drain with hand-off, what is left of those it had.
                            "handoff": shown.handoff,
                            "handed_off": b.state.handed_off.load(std::sync::atomic::Ordering::Relaxed),
                            "still_pinned": if shown.handoff {
                                b.state.drain.still_pinned(b.state.handed_off.load(std::sync::atomic::Ordering::Relaxed))
                            } else {
                                b.state.sessions.estimate(now)
                            },
                            "ejected_until": rfc3339(b.state.ejected_until()),
                            "slow_start": b.state.in_slow_start(p.conf.slow_start),
                            "last_10s": window(traffic.window(&p.name, &b.id)),
                        });
                        // Circuit breaker: the slots this backend's requests hold now, and the
                        // requests pinned to it that wait for one.
                        if matches!(p.conf.discover, Some(crate::config::DiscoverOpts { name: crate::config::DiscoverName::Srv(_), .. }))
                            && conf.source == crate::config::BackendSource::Dns
                        {
                            j["priority"] = json!(conf.priority);
                        }
                        if let Some(br) = &p.breaker {
                            j["breaker_in_flight"] = json!(br.in_use(i as u32));
                            j["breaker_queued"] = json!(br.queued(i as u32));
                        }
                        j
                    })
                    .collect();
                let policy = crate::config::Named::as_str(p.conf.policy);
                let moves: Vec<_> = self
                    .store
                    .metrics()
                    .migrations_of(&p.name)
                    .into_iter()
                    .map(|(from, to, reason, count)| json!({"from": from, "to": to, "reason": reason, "count": count}))
                    .collect();
                let mut pj = json!({
                    "name": &*p.name, "policy": policy, "protocol": p.conf.protocol.as_str(),
                    "backends": backends,
                    "last_10s": window(traffic.window(&p.name, "")),
                    "moves": moves,
                });
                if let Some(d) = self
                    .reloader
                    .discovery()
                    .status(&p.name, p.conf.discover.as_ref())
                {
                    pj["discovery"] = d;
                }
                if let Some(br) = &p.breaker {
                    let (full, timeout) = br.rejections();
                    pj["circuit_breaker"] = json!({
                        "max_in_flight": br.opts.max_in_flight,
                        "max_queue": br.opts.max_queue,
                        "queue_timeout": humantime::format_duration(br.opts.queue_timeout).to_string(),
                        "queue_length": br.queue().len(),
                        "rejected_full": full,
                        "rejected_timeout": timeout,
                    });
                }
                pj
            })
            .collect();
        let routes: Vec<_> = snap
            .routes
            .iter()
            .map(|r| json!({"name": &*r.name, "path_prefix": r.path_prefix, "pool": &*snap.pools[r.pool].name}))
            .collect();
        let m = self.store.metrics();
        let last_reload = self.reloader.last().map(|r| {
            json!({
                "time": rfc3339(Some(r.at)),
                "trigger": r.trigger,
                "result": if r.ok { "success" } else { "failure" },
                "generation": r.generation,
                "changes": r.changes,
                "impact": r.impact,
                "errors": r.errors,
            })
        });
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": snap.generation,
            "config": {
                "path": snap.config.source.path.as_ref().map(|p| p.display().to_string()),
                "hash": snap.config.source.hash,
                "last_reload_successful": m.last_reload_ok.get() == 1,
            },
            "routes": routes,
            "pools": pools,
            "time": rfc3339(Some(std::time::SystemTime::now())),
            "started": rfc3339(Some(self.started)),
            "last_reload": last_reload,
            "admin_token_required": snap.config.server.admin_token.is_some(),
        })
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path().to_owned(), |p| p.as_str().to_owned());
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let forged = (method == Method::POST)
            .then(|| {
                cross_site(
                    &req.headers,
                    self.store.load().config.server.admin_token.is_some(),
                )
            })
            .flatten();
        // Drain any request body so the connection stays usable.
        while let Ok(Some(_)) = session.read_request_body().await {}
        let mut resp = match forged {
            Some(why) => text(StatusCode::FORBIDDEN, why),
            None => self.handle(&method, &path, auth.as_deref()).await,
        };
        if method == Method::HEAD {
            resp.body_mut().clear();
        }
        resp
    }
}

/// Why a POST is refused as a cross-site request forgery, if it is one. A browser names the
/// page that sends a request in `Origin` and `Sec-Fetch-Site` (the status page's own buttons
/// send its own origin); curl and scripts send neither and are let through. Without an admin
/// token (the listener is then on loopback only) a browser's POST must also be addressed to a
/// loopback name, so a page whose DNS name was rebound to 127.0.0.1 cannot pass as same-origin.
fn cross_site(headers: &http::HeaderMap, token: bool) -> Option<&'static str> {
    let header = |name| headers.get(name).map(|v| v.as_bytes());
    if let Some(site) = header("sec-fetch-site") {
        if site != b"same-origin" && site != b"none" {
            return Some("cross-site POST refused (Sec-Fetch-Site)\n");
        }
    }
    let origin = header("origin")?;
    let host = header("host").unwrap_or_default();
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    if !authority.is_some_and(|a| a.eq_ignore_ascii_case(host)) {
        return Some("cross-origin POST refused: Origin does not match Host\n");
    }
    if !token && !loopback_host(host) {
        return Some(
            "POST from a browser refused: without admin_token_file, open the admin page on \
             127.0.0.1, [::1] or localhost\n",
        );
    }
    None
}

/// Whether a `Host` value (with or without a port) names this machine's loopback.
fn loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// A recent-traffic window as `/status` shows it: counts, and the rates the page prints as they
/// are (`per_second` and `percent_5xx` rounded to one decimal; `percent_5xx` null without
/// requests).
fn window(w: crate::state::traffic::Window) -> serde_json::Value {
    json!({
        "seconds": w.seconds,
        "requests": w.requests,
        "responses_5xx": w.errors_5xx,
        "per_second": w.per_second(),
        "percent_5xx": w.percent_5xx(),
    })
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json_reply(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn scripts_and_same_origin_pages_may_post() {
        let curl = headers(&[("host", "127.0.0.1:9090")]);
        assert_eq!(cross_site(&curl, false), None);
        let page = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&page, false), None);
        let v6 = headers(&[("host", "[::1]:9090"), ("origin", "http://[::1]:9090")]);
        assert_eq!(cross_site(&v6, false), None);
        let named = headers(&[
            ("host", "LocalHost:9090"),
            ("origin", "http://localhost:9090"),
        ]);
        assert_eq!(cross_site(&named, false), None);
        // With a token, the page may be opened under any name (the token is the guard).
        let remote = headers(&[
            ("host", "lb1.internal:9090"),
            ("origin", "https://lb1.internal:9090"),
        ]);
        assert_eq!(cross_site(&remote, true), None);
    }

    #[test]
    fn other_origins_and_rebound_names_are_refused() {
        let evil = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://evil.example"),
        ]);
        assert!(cross_site(&evil, false).is_some());
        assert!(cross_site(&evil, true).is_some());
        let opaque = headers(&[("host", "127.0.0.1:9090"), ("origin", "null")]);
        assert!(cross_site(&opaque, false).is_some());
        let fetch = headers(&[("host", "127.0.0.1:9090"), ("sec-fetch-site", "cross-site")]);
        assert!(cross_site(&fetch, true).is_some());
        let sibling = headers(&[("host", "127.0.0.1:9090"), ("sec-fetch-site", "same-site")]);
        assert!(cross_site(&sibling, false).is_some());
        // DNS rebinding: the page and Host agree, but name no loopback.
        let rebound = headers(&[
            ("host", "evil.example:9090"),
            ("origin", "http://evil.example:9090"),
        ]);
        assert!(cross_site(&rebound, false).is_some());
        assert!(cross_site(&rebound, true).is_none(), "the token guards it");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]:9",
            "localhost",
            "localhost:9",
            "127.1.2.3:80",
        ] {
            assert!(loopback_host(h.as_bytes()), "{h}");
        }
        for h in [
            "10.0.0.1:9",
            "evil.example",
            "[::2]:9",
            "localhost.evil:9",
            "",
        ] {
            assert!(!loopback_host(h.as_bytes()), "{h}");
        }
    }
}
