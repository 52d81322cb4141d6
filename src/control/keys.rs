//! Key-set refresh (DESIGN.md §15): the `jwks_url` key sets of the current snapshot fetched at
//! start, then polled by one loop on the control runtime (each URL's [`Remote`] decides when
//! it is due: `jwks_refresh`, a retry after a failure, an unknown `kid`).
//!
//! Owns: walking the snapshot's verifiers for their remote key sets. Must not touch: fetching
//! and keeping a key set (`state::jwt::fetch`).
//!
//! [`Remote`]: crate::state::jwt::Remote

use std::sync::Arc;

use crate::snapshot::Store;
use crate::state::jwt::fetch;

/// Fetches every `jwks_url` of the current snapshot once (at start, before requests are
/// served), all at the same time: the wait is the slowest fetch, at most
/// [`fetch::FETCH_TIMEOUT`], however many URLs there are. Failures are logged; the loop retries.
pub fn fetch_all(store: &Store) {
    let snap = store.load();
    std::thread::scope(|scope| {
        for v in &snap.jwts {
            if let Some(r) = v.remote() {
                scope.spawn(move || fetch::fetch_if_unloaded(r));
            }
        }
    });
}

/// Runs the fetch loop on `rt` (the control runtime) for as long as the store lives.
pub fn start(store: &Arc<Store>, rt: &tokio::runtime::Handle) {
    let store = Arc::downgrade(store);
    let handle = rt.clone();
    rt.spawn(async move {
        loop {
            fetch::next_round().await;
            let Some(store) = store.upgrade() else {
                return;
            };
            let snap = store.load();
            for v in &snap.jwts {
                if let Some(r) = v.remote() {
                    r.poll(&handle);
                }
            }
        }
    });
}
