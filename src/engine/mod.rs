//! The engine (DESIGN.md §11, §20): the connection loops that carry requests through the
//! stages of `path` — IO order only. One engine serves both protocols:
//! - `fast`: the HTTP/1.1 loop on tether's own codec (`h1`), with `relay` (the exchange with a
//!   backend), `down` (the client's side of a request), `body` (where bodies end as they pass)
//!   and `wire` (pooled reads, writes, deadlines);
//! - `h2`: the HTTP/2 connection loop (the `h2` crate's server connection), each stream a task
//!   running `stream` — the same stages, and the same upstream exchange over the HTTP/1.1 codec;
//! - `shared`: what those loops share (store, request ids, upstream connections);
//! - `listen`: plain-TCP listeners accepted by tether itself (TLS listeners are pingora-core's).

pub mod attempt;
pub mod body;
pub mod down;
pub mod fast;
pub mod h1h2;
pub mod h2;
pub mod h2down;
pub mod h2up;
pub mod listen;
pub mod relay;
pub mod shared;
pub mod stream;
pub mod wire;
