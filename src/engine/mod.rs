//! The engines (DESIGN.md §11, §20): the connection loops that carry requests through the
//! stages of `path` — IO order only. `fast` is tether's HTTP/1.1 loop on tether's own codec
//! (`h1`) over pingora-core's listener streams, with `relay` (the exchange with a backend), `down` (the client's side of a request),
//! `body` (where bodies end as they pass) and `wire` (pooled reads, writes, deadlines) and `listen` (plain-TCP listeners accepted by tether itself); `proxy`
//! is pingora-proxy's `ProxyHttp`, serving HTTP/2 and `engine = "pingora"` until one engine
//! serves both protocols.

pub mod body;
pub mod down;
pub mod fast;
pub mod listen;
pub mod proxy;
pub mod relay;
pub mod wire;
