//! The configuration snapshot (DESIGN.md §1, §7): routes, pools and their backends, built from a
//! validated `Config` plus the live registry, and the store that publishes it.
//!
//! - `types`: [`Snapshot`], [`Route`], [`Pool`], [`Backend`] and each pool's live [`View`];
//! - `build`: a complete snapshot from a config (views lent by the snapshot it replaces);
//! - [`select`]: the per-request decision over a pool (policy, affinity, failover), pure;
//! - `seat`: live eligibility (view + live state) and the breaker queue's view of a pool;
//! - `store`: the one `ArcSwap<Snapshot>`, the only `store` into it, and the control loop that
//!   rebuilds views and applies ejections.
//!
//! Must not touch: sockets or request handling.

mod build;
mod seat;
pub mod select;
mod store;
mod types;

pub use seat::PoolSeat;
pub use store::{Control, Store};
pub use types::{Backend, Pool, Retired, Route, Snapshot, View};
