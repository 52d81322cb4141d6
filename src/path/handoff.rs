//! Session hand-off (DESIGN.md §25): the request that moves a session tells its new home where
//! it came from — `Tether-Session-From: id=OLD; reason=REASON` (the name is the pool's
//! `[affinity] handoff_header`), with `; addr=IP:PORT` when the old backend is still up to answer
//! for the session's state (a drain with hand-off, maint, or removed while up). A backend that
//! was down, ejected or refused the connection gets no address: there is nothing to ask.
//!
//! Owns: the header's value and who counts as reachable, and `tether_session_handoffs_total`.
//! Must not touch: selection (it reads the decision) or the header list itself (`forward`).

use std::io::Write;
use std::net::SocketAddr;

use crate::snapshot::select::{Outcome, Reason};
use crate::snapshot::Pool;

/// The default header name (`config::HANDOFF_HEADER`), lower-cased as edit lists drop by.
pub const DEFAULT_LOWER: &[u8] = b"tether-session-from";

/// Where a moved session came from, as its new home is told.
pub struct From<'a> {
    pub id: &'a str,
    pub reason: Reason,
    /// The old backend's address, when it can still answer.
    pub addr: Option<SocketAddr>,
}

/// The hand-off of a request's decision: `Some` only for the request that moves a session, in a
/// pool whose `handoff_header` is on.
pub fn of<'a>(pool: &'a Pool, outcome: &'a Outcome) -> Option<From<'a>> {
    pool.conf.handoff_header.as_ref()?;
    let Outcome::Migrated {
        from,
        from_index,
        reason,
    } = outcome
    else {
        return None;
    };
    let from_index = from_index.ok_or(&**from);
    Some(From {
        id: from,
        reason: *reason,
        addr: reachable(pool, from_index, *reason),
    })
}

/// The address of the backend a session left (`Ok(index)` in the pool, `Err(id)` when it left
/// the pool), if it can still answer for its sessions.
pub fn reachable(pool: &Pool, from: Result<u32, &str>, reason: Reason) -> Option<SocketAddr> {
    match (reason, from) {
        (Reason::Maint | Reason::Drain, Ok(i)) => {
            let b = pool.backends.get(i as usize)?;
            b.state.is_healthy().then_some(b.addr)
        }
        (Reason::Removed, Err(id)) => pool
            .retired
            .values()
            .find(|r| &*r.id == id)
            .and_then(|r| r.alive_at),
        _ => None,
    }
}

/// Writes the header's value: `id=OLD; reason=REASON[; addr=IP:PORT]`.
pub fn write_value(f: &From<'_>, out: &mut Vec<u8>) {
    let _ = write!(out, "id={}; reason={}", f.id, f.reason.as_str());
    if let Some(a) = f.addr {
        let _ = write!(out, "; addr={a}");
    }
}

/// Counts a session moved with an address to hand its state over from (called where the move
/// is counted): `tether_session_handoffs_total{pool,from,to}` and the old backend's
/// `handed_off`.
pub fn count(pool: &Pool, from: Result<u32, &str>, to: u32, reason: Reason) {
    if pool.conf.handoff_header.is_none() || reachable(pool, from, reason).is_none() {
        return;
    }
    let from_id = match from {
        Ok(i) => {
            let b = &pool.backends[i as usize];
            b.state
                .handed_off
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            &*b.id
        }
        Err(id) => id,
    };
    pool.metrics
        .handoffs
        .with_label_values(&[&pool.name, from_id, &pool.backends[to as usize].id])
        .inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_name_lower_cased() {
        assert_eq!(
            super::DEFAULT_LOWER,
            crate::config::HANDOFF_HEADER
                .to_ascii_lowercase()
                .as_bytes()
        );
    }
}
