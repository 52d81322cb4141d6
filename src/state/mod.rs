//! Live state (DESIGN.md §9): what outlives a snapshot and is shared by old and new ones — the
//! backend registry (health, admin state, drain clocks, in-flight, metric handles), the circuit
//! breaker's queues, recent traffic per backend, rate-limit stores, JWT verifiers and key sets, upstream connections and TLS
//! material, and the metric definitions. Built on `config` and the pure algorithms of `balance`;
//! knows nothing of snapshots, the request path or the engines.

pub mod allocs;
pub mod backend;
pub mod clock;
pub mod drain;
pub mod jwt;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod tcp;
pub mod tls;
pub mod traffic;
pub mod upstream;
pub mod upstream_h2;
pub mod upstream_tls;
