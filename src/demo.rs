//! `tether demo`: built-in backends on loopback plus the proxy running `conf/demo.toml`
//! (compiled in), and curl commands that show round-robin, a sticky cookie, a hash pool and a
//! session handed over to a new backend with its state.
//!
//! Owns: the demo backends (tiny Pingora HTTP apps). Must not touch: anything the real proxy
//! uses beyond `app::run`.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::app::{run, RunOpts};
use crate::config;

pub const DEMO_TOML: &str = include_str!("../conf/demo.toml");

/// A demo application server: answers every path with its own id and a per-session visit
/// counter kept in memory (the session is its own `demo_sid` cookie: tether's affinity cookie
/// never reaches a backend); `/healthz` says ok. A request carrying tether's hand-off header
/// with the old backend's address (DESIGN.md §25) first fetches the session's count from there
/// (`GET /_state?sid=…`), so a session moved off a backend in maint or draining keeps counting.
struct DemoBackend {
    id: Arc<str>,
    visits: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl DemoBackend {
    fn count(&self, sid: &str) -> u64 {
        let map = self.visits.lock().unwrap_or_else(|e| e.into_inner());
        map.get(sid).copied().unwrap_or(0)
    }

    fn bump(&self, sid: &str, from: u64) -> u64 {
        let mut map = self.visits.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(sid.to_owned()).or_insert(0);
        *n = (*n).max(from) + 1;
        *n
    }
}

/// The count the old backend at `addr` has for `sid` (a plain HTTP/1.0 GET; 0 on any failure).
async fn fetch_count(addr: &str, sid: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /_state?sid={sid} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        // The answer is one line ("N\n") after the head; the server may keep the connection.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((_, body)) = text.split_once("\r\n\r\n") {
                if body.contains('\n') {
                    return body.trim().parse().ok();
                }
            }
        }
        None
    };
    tokio::time::timeout(std::time::Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        while let Ok(Some(_)) = session.read_request_body().await {}
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().unwrap_or("").to_owned();
        let cookie_sid = req
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("demo_sid=").map(str::to_owned));
        let from = req
            .headers
            .get(config::HANDOFF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut set_cookie = None;
        let body = if path == "/healthz" {
            "ok\n".to_string()
        } else if path == "/_state" {
            let sid = query.strip_prefix("sid=").unwrap_or("");
            format!("{}\n", self.count(sid))
        } else {
            let sid = cookie_sid.unwrap_or_else(|| {
                let sid = format!("{:016x}", fastrand::u64(..));
                set_cookie = Some(format!("demo_sid={sid}; Path=/"));
                sid
            });
            // `id=OLD; reason=R; addr=IP:PORT`: ask the old backend for what it knew.
            let addr = from
                .as_deref()
                .and_then(|f| f.split(';').find_map(|p| p.trim().strip_prefix("addr=")));
            let (before, note) = match (&from, addr) {
                (Some(f), Some(a)) => (fetch_count(a, &sid).await, format!(", handed over: {f}")),
                (Some(f), None) => (0, format!(", moved without state: {f}")),
                _ => (0, String::new()),
            };
            let n = self.bump(&sid, before);
            format!(
                "hello from {} (path {path}), visit {n} of this session{note}\n",
                self.id
            )
        };
        let mut r = Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("content-length", body.len())
            .header("x-backend", &*self.id);
        if let Some(c) = set_cookie {
            r = r.header("set-cookie", c);
        }
        r.body(body.into_bytes())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

pub fn demo(sighup: Option<signal_hook::iterator::Signals>) -> Result<(), String> {
    let config =
        config::parse(DEMO_TOML, None).map_err(|e| format!("built-in demo config: {e}"))?;
    let listen = config.server.listen.first().copied();
    let admin = config.server.admin;
    let backends: Vec<(String, std::net::SocketAddr)> = config
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(|b| (b.id.clone(), b.addr)))
        .collect();
    if let Some(l) = listen {
        let a = admin.map(|a| a.to_string()).unwrap_or_default();
        println!(
            "tether demo: proxy on http://{l}, admin on http://{a}, {} demo backends on loopback\n\n\
             Try, in another terminal:\n\
             \x20 # round-robin (weights 3:1:1): run it a few times\n\
             \x20 for i in 1 2 3 4 5; do curl -s http://{l}/; done\n\
             \x20 # sticky cookie: the first answer sets tether_shop, later ones stay on the same backend\n\
             \x20 curl -s -c /tmp/tether-demo.jar -b /tmp/tether-demo.jar http://{l}/shop/cart -i | grep -iE 'set-cookie|hello'\n\
             \x20 for i in 1 2 3; do curl -s -b /tmp/tether-demo.jar -c /tmp/tether-demo.jar http://{l}/shop/cart; done\n\
             \x20 # hash pool: the same X-User always lands on the same backend\n\
             \x20 for u in alice bob carol alice bob carol; do curl -s -H \"X-User: $u\" http://{l}/api/; done\n\
             \x20 # state and metrics; put a backend in maintenance and watch sessions move\n\
             \x20 curl -s http://{a}/status\n\
             \x20 curl -s http://{a}/metrics | grep ^tether_requests_total\n\
             \x20 curl -s -X POST http://{a}/pools/shop/backends/shop-1/maint\n\
             \x20 # ...then repeat the cookie loop: a session on shop-1 moves once and stays moved, and its\n\
             \x20 # new backend fetched its visit count from shop-1 (told by the Tether-Session-From header)\n\
             \x20 # or hand a node's sessions over before it leaves: a drain with a deadline and handoff=true\n\
             \x20 curl -s -X POST 'http://{a}/pools/shop/backends/shop-2/drain?deadline=60s&handoff=true'\n\
             \nOr watch it all in a browser: the status page is http://{a}/\n\
             \nCtrl-C stops everything.\n",
            backends.len()
        );
    }
    run(
        RunOpts {
            config,
            path: None,
            upgrade: false,
            sighup,
        },
        |server| {
            for (id, addr) in backends {
                let app = DemoBackend {
                    id: id.as_str().into(),
                    visits: Default::default(),
                };
                let mut svc = Service::new(format!("demo backend {id}"), app);
                svc.add_tcp(&addr.to_string());
                svc.threads = Some(1);
                server.add_service(svc);
            }
        },
    )
}
