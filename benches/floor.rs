//! The framework floor for benches/load.sh (DESIGN.md §10): a bare pingora-proxy (`ProxyHttp`)
//! round-robin proxy with no application logic — what pingora-proxy itself costs per request.
//!
//!   floor LISTEN_ADDR BACKEND_ADDR [BACKEND_ADDR...]
//!
//! Build: `cargo build --release --example floor` (the release profile's fat LTO applies).
//! Same server settings tether uses on its pingora engine: one worker thread, work stealing off,
//! mimalloc, no downstream modules, plain-HTTP peers built from socket addresses, upstream
//! connection reuse by Pingora's pool. The pick is an atomic counter modulo the backend count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    peers: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    fn init_downstream_modules(&self, _m: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        Ok(Box::new(HttpPeer::new(self.peers[i], false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: floor LISTEN_ADDR BACKEND_ADDR [BACKEND_ADDR...]");
        std::process::exit(2);
    }
    let listen = &args[1];
    let peers: Vec<SocketAddr> = args[2..]
        .iter()
        .map(|a| {
            a.parse().unwrap_or_else(|e| {
                eprintln!("floor: backend {a:?}: {e}");
                std::process::exit(2)
            })
        })
        .collect();

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // The benchmark stops the floor with SIGTERM once nothing is in flight: exit at once
        // rather than after Pingora's default five-minute grace period.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Floor {
            peers,
            next: AtomicUsize::new(0),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    eprintln!("floor: listening on {listen}");
    server.run_forever();
}
