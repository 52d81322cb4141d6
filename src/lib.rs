//! tether: a layer-7 load-balancing HTTP proxy on Pingora with signed session affinity,
//! deterministic failover, health checks and atomic hot reload.
//!
//! Module map (DESIGN.md §9): `config` reads and validates the TOML; `snapshot` builds the
//! immutable routing snapshot and owns its `ArcSwap`; `balance` and `select` make pure
//! per-request decisions; `backend` is the live registry that outlives snapshots; `health`
//! runs active checks; `proxy` is the Pingora `ProxyHttp`; `reload` handles SIGHUP, the watcher
//! and admin reloads; `admin` and `metrics` serve operators; `tls` resolves certificates; `app` assembles the process; `demo`
//! runs the built-in demo.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod backend;
pub mod balance;
pub mod config;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod select;
pub mod snapshot;
pub mod tls;
