//! The engines (DESIGN.md §11, §20): the connection loops that carry requests through the
//! stages of `path` — IO order only. `fast` is tether's HTTP/1.1 loop on pingora-core's
//! primitives; `proxy` is pingora-proxy's `ProxyHttp`, serving HTTP/2 and `engine = "pingora"`
//! until one engine serves both protocols.

pub mod fast;
pub mod proxy;
