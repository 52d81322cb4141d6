//! Heap allocations, counted (DESIGN.md §19: at most 2 per proxied request on the common path).
//! Only a measurement build counts: with the `alloc-count` feature the binary's global allocator
//! (`src/main.rs`) adds one to [`ALLOCATIONS`] per allocation and the admin listener answers
//! `GET /debug/allocations`; `benches/allocs.sh` reads it around requests on a warm connection.
//! A normal build has no counter on its path: [`COUNTING`] is false and nothing increments.

use std::sync::atomic::AtomicU64;

/// Allocations (and reallocations) since start, in a measurement build.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Whether this build counts (the `alloc-count` feature).
pub const COUNTING: bool = cfg!(feature = "alloc-count");
