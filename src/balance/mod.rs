//! Pure backend selection: the consistent hash ring, smooth weighted round-robin and the signed
//! affinity cookie codec.
//!
//! Everything here is a pure function of its arguments and is on the per-request path: no IO, no
//! clock reads (`now` is a parameter), no randomness (nonces are parameters), no metrics, no locks,
//! no logging, no `unsafe`. Owns only the selection arithmetic; it must not touch the snapshot,
//! the backend registry, health or metrics — callers pass in what is eligible and act on the
//! answer (counting, re-issuing cookies, failover bookkeeping).

pub mod bounded;
pub mod cookie;
pub mod gcra;
pub mod impact;
pub mod ring;
pub mod sessions;
pub mod wrr;
