//! The control plane (DESIGN.md §5, §7, §8, §16, §24): reload (SIGHUP, the file watcher, the
//! admin API), the admin HTTP service and its status page, active health checks, drain
//! deadlines, DNS discovery of backends, the recent-traffic sampler and the refresh of `jwks_url` key sets. Runs on the
//! control runtime, never on a worker thread; it changes what requests see only through the live
//! state and the snapshot store.

pub mod admin;
pub mod discover;
pub mod drain;
pub mod health;
pub mod keys;
pub mod page;
pub mod reload;
pub mod traffic;
