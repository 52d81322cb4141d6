//! The control plane (DESIGN.md §5, §7, §8, §16): reload (SIGHUP, the file watcher, the admin
//! API), the admin HTTP service, active health checks, drain deadlines and the refresh of
//! `jwks_url` key sets. Runs on the control runtime, never on a worker thread; it changes what
//! requests see only through the live state and the snapshot store.

pub mod admin;
pub mod drain;
pub mod health;
pub mod keys;
pub mod reload;
