//! The recent-traffic sampler (DESIGN.md §24): once a second, reads the cumulative
//! `tether_requests_total` counts of every pool and backend of the current snapshot (through the
//! handles the snapshot resolved, never by label lookup) and hands them to the rings of
//! `state::traffic`, which `/status` reads as requests per second and 5xx share over 10 s.
//!
//! Owns: the sampling clock. Must not touch: the request path (which counts exactly what it
//! counted before) or the snapshot (read only).

use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::Store;
use crate::state::metrics::code_class;

/// Samples every second, forever (spawn on the control runtime).
pub async fn run(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sample(&store);
    }
}

/// One sample of every pool (backend `""`: all of the pool's answers, those given without a
/// backend included) and every backend.
pub fn sample(store: &Store) {
    let snap = store.load();
    let err = code_class(500);
    let mut samples: Vec<(&str, &str, u64, u64)> = Vec::new();
    for (pi, p) in snap.pools.iter().enumerate() {
        let mut backends = vec![(0u64, 0u64); p.backends.len()];
        let mut pool = (0u64, 0u64);
        for r in snap.routes.iter().filter(|r| r.pool == pi) {
            for (bi, counters) in r.requests.iter().enumerate() {
                let total: u64 = counters.iter().map(|c| c.get()).sum();
                backends[bi].0 += total;
                backends[bi].1 += counters[err].get();
            }
            let none = &r.requests_no_backend;
            pool.0 += none.iter().map(|c| c.get()).sum::<u64>();
            pool.1 += none[err].get();
        }
        for (b, (total, errors)) in p.backends.iter().zip(&backends) {
            pool.0 += total;
            pool.1 += errors;
            samples.push((&p.name, &b.id, *total, *errors));
        }
        samples.push((&p.name, "", pool.0, pool.1));
    }
    store.registry().traffic().tick(samples);
}
