//! Drain with a deadline (DESIGN.md §16): `POST …/drain?deadline=300s` puts the backend in maint
//! when the time is up, so its remaining sessions migrate then.
//!
//! Owns: the timer that ends a drain, and how drain times are shown. The drain's clock (when it
//! started, its deadline) lives in the backend's live state (`state::drain`, so it survives a
//! reload, like the admin state, and is reset on restart); `ready` or `maint` before the
//! deadline cancels it (the timer finds its epoch gone). Must not touch selection: ending a drain is an ordinary admin state change followed by
//! a view rebuild.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::snapshot::Store;
use crate::state::backend::{Admin, BackendState};

/// RFC 3339 (UTC, whole seconds) or JSON null.
pub fn rfc3339(t: Option<SystemTime>) -> serde_json::Value {
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string().into(),
        None => serde_json::Value::Null,
    }
}

/// Drains `state` now with a deadline `after` from now: at the deadline, unless cancelled, the
/// backend goes to maint and `pool`'s view is rebuilt. Call on a tokio runtime that lives as long
/// as the process (the admin service's).
pub fn drain_until(store: &Arc<Store>, pool: &str, state: &Arc<BackendState>, after: Duration) {
    state.set_admin(Admin::Drain);
    let epoch = state.drain.arm(SystemTime::now() + after);
    let (store, pool, state) = (Arc::downgrade(store), Arc::<str>::from(pool), state.clone());
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if !state.drain.armed(epoch) || state.admin() != Admin::Drain {
            return;
        }
        state.set_admin(Admin::Maint);
        if let Some(store) = store.upgrade() {
            store.refresh_pool(&pool);
        }
        tracing::info!(pool = %pool, backend = %state.id, "drain deadline reached: admin state set to maint");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_null() {
        assert_eq!(
            rfc3339(Some(std::time::UNIX_EPOCH)).as_str(),
            Some("1970-01-01T00:00:00Z")
        );
        assert!(rfc3339(None).is_null());
    }
}
