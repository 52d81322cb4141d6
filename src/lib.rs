//! tether: a layer-7 load-balancing HTTP proxy on Pingora with signed session affinity,
//! deterministic failover, health checks and atomic hot reload.
//!
//! The folders are the layers (DESIGN.md §9), bottom to top; a module imports only from its own
//! layer or below, and no files import each other in a circle (`tests/layers.rs` checks both):
//! - [`config`]: the TOML schema, its validation into a typed `Config`, the config `Diff`, and
//!   the verification keys a `[jwt.NAME]` names;
//! - [`balance`] and [`http`]: pure algorithms — ring, smooth WRR, bounded load, the cookie
//!   codec, GCRA, the recent-sessions estimator, reload-impact arithmetic — and the header text
//!   helpers every layer reads requests with: no IO, no clock;
//! - [`state`]: live state that outlives snapshots — backends, breaker queues, rate-limit stores,
//!   JWT verifiers and key sets, upstream connections, TLS material, metrics;
//! - [`h1`]: tether's HTTP/1.1 codec — pooled buffers, heads parsed in place, the head writer,
//!   the chunked validator: pure, the one place that decides where a message ends;
//! - [`snapshot`]: the immutable routing `Snapshot` built from a `Config` and the live state,
//!   selection over a pool, and the `Store` with the only `ArcSwap::store`;
//! - [`path`]: the per-request exchange and the stages of §11, one file each;
//! - [`engine`]: the connection loops that carry requests through the stages;
//! - [`control`]: reload, admin API, health checks, drain deadlines, key-set refresh;
//! - [`app`], [`demo`], [`fuzzing`]: process assembly, the demo, and the fuzz entry points.
// No unsafe code but one audited block: taking over a listening socket's fd from pingora's
// upgrade table (engine/listen.rs), which std can only do unsafely (STYLE.md: a measured win).
#![deny(unsafe_code)]

pub mod app;
pub mod balance;
pub mod config;
pub mod control;
pub mod demo;
pub mod engine;
pub mod fuzzing;
pub mod h1;
pub mod http;
pub mod path;
pub mod snapshot;
pub mod state;
