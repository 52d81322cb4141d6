//! tether: a layer-7 load-balancing HTTP proxy on Pingora with signed session affinity,
//! deterministic failover, health checks and atomic hot reload.
//!
//! Module map (DESIGN.md §9): `config` reads and validates the TOML; `snapshot` builds the
//! immutable routing snapshot and owns its `ArcSwap`; `balance` and `select` make pure
//! per-request decisions; `backend` is the live registry that outlives snapshots; `health`
//! runs active checks; `drain` ends drains at their deadline; `impact` previews what a reload moves; `sessions` estimates recent sessions per backend; `proxy` is the Pingora `ProxyHttp`; `reload` handles SIGHUP, the watcher
//! and admin reloads; `admin` and `metrics` serve operators; `tls` resolves certificates; `app` assembles the process; `demo`
//! runs the built-in demo.
//!
//! The request path (DESIGN.md §11) is a row of stage modules — `route` (read and route),
//! `authenticate` (JWT, over `jwt`'s keys and checks), `limit` (rate limits, over the buckets of
//! `ratelimit`), `pick` (with `queue`, its circuit breaker), `forward`, `respond`, `account` —
//! over the per-request `exchange`, with `head` reading the
//! request head for them. Two engines call the same stages: `fast`, tether's HTTP/1.1 loop on
//! pingora-core (with `upstream`, its per-thread connection reuse; `upstream_tls` turns a pool's
//! `[tls]` into the backends' peers for both engines), and `proxy`, pingora-proxy's
//! `ProxyHttp`, for HTTP/2 and `engine = "pingora"`.
#![forbid(unsafe_code)]

pub mod account;
pub mod admin;
pub mod app;
pub mod authenticate;
pub mod backend;
pub mod balance;
pub mod config;
pub mod demo;
pub mod drain;
pub mod exchange;
pub mod fast;
pub mod forward;
pub mod fuzzing;
pub mod head;
pub mod health;
pub mod impact;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod pick;
pub mod proxy;
pub mod queue;
pub mod ratelimit;
pub mod read;
pub mod reload;
pub mod respond;
pub mod route;
pub mod select;
pub mod sessions;
pub mod snapshot;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod upstream_tls;
