//! `tether demo`: built-in backends on loopback plus the proxy running `conf/demo.toml`
//! (compiled in), and curl commands that show round-robin, a sticky cookie and a hash pool.
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

/// A demo application server: answers every path with its own id; `/healthz` says ok.
struct DemoBackend {
    id: Arc<str>,
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        while let Ok(Some(_)) = session.read_request_body().await {}
        let path = session.req_header().uri.path().to_owned();
        let body = if path == "/healthz" {
            "ok\n".to_string()
        } else {
            format!("hello from {} (path {path})\n", self.id)
        };
        Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("content-length", body.len())
            .header("x-backend", &*self.id)
            .body(body.into_bytes())
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
             \x20 for i in 1 2 3; do curl -s -b /tmp/tether-demo.jar http://{l}/shop/cart; done\n\
             \x20 # hash pool: the same X-User always lands on the same backend\n\
             \x20 for u in alice bob carol alice bob carol; do curl -s -H \"X-User: $u\" http://{l}/api/; done\n\
             \x20 # state and metrics; put a backend in maintenance and watch sessions move\n\
             \x20 curl -s http://{a}/status\n\
             \x20 curl -s http://{a}/metrics | grep ^tether_requests_total\n\
             \x20 curl -s -X POST http://{a}/pools/shop/backends/shop-1/maint\n\
             \x20 # ...then repeat the cookie loop: a session on shop-1 moves once and stays moved\n\
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
                let mut svc =
                    Service::new(format!("demo backend {id}"), DemoBackend { id: id.into() });
                svc.add_tcp(&addr.to_string());
                svc.threads = Some(1);
                server.add_service(svc);
            }
        },
    )
}
