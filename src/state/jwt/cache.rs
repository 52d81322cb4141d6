//! The verified-token cache of one `[jwt.NAME]` (as Envoy's `jwt_authn` keeps one): a client
//! sends the same token with every request of its session, and the signature and claims of a
//! token already found valid need not be checked again — only its time claims, which change
//! verdict with the clock, are (`exp`, `nbf`, with `leeway`, on every request).
//!
//! A hit needs the very same token bytes (compared in full, never by hash alone) *and* the very
//! same key set that verified it: a `jwks_url` refresh that drops a key makes every token it
//! signed a miss, and the miss verifies again against the new set. Only valid tokens are kept;
//! a refused token is checked in full every time. Bounded: a fixed number of slots (direct-mapped
//! by a hash with a per-process random key, so a client cannot aim its tokens at one slot),
//! tokens longer than [`MAX_TOKEN`] are never kept. Lock-free: a slot is one `ArcSwapOption`.
//!
//! Owns: the slots and what an entry must match. Must not touch: signature checks, claims
//! parsing (the verifier's).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Claims;
use crate::config::keys::KeySet;

/// Slots per verifier (a power of two).
pub const SLOTS: usize = 1024;
/// Longer tokens are verified every time (an entry holds its token).
pub const MAX_TOKEN: usize = 4096;

/// A token found valid, with what a later request still has to check.
struct Entry {
    token: Box<[u8]>,
    /// The key set that verified it (held, so its identity cannot be reused by another set).
    keys: Arc<KeySet>,
    exp: Option<u64>,
    nbf: Option<u64>,
    claims: Arc<Claims>,
}

/// What a kept token still has to pass (its time claims), and its claims.
pub struct Hit {
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub claims: Arc<Claims>,
}

pub struct Cache {
    slots: Box<[ArcSwapOption<Entry>]>,
    hasher: RandomState,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// Where a missed token goes once it is verified: its slot, found by the lookup (so the token
/// is hashed once), or none when it is too long to keep.
pub struct Miss(Option<usize>);

impl Cache {
    /// The time claims and kept claims of `token` verified by `keys`, if it is kept; else
    /// where to keep it.
    pub fn get(&self, token: &[u8], keys: &Arc<KeySet>) -> Result<Hit, Miss> {
        if token.len() > MAX_TOKEN {
            return Err(Miss(None));
        }
        let i = self.hasher.hash_one(token) as usize & (SLOTS - 1);
        let slot = self.slots[i].load();
        match slot.as_ref() {
            Some(e) if Arc::ptr_eq(&e.keys, keys) && *e.token == *token => Ok(Hit {
                exp: e.exp,
                nbf: e.nbf,
                claims: e.claims.clone(),
            }),
            _ => Err(Miss(Some(i))),
        }
    }

    /// Keeps `token`, just verified by `keys`, where its lookup missed (replacing whatever
    /// shared its slot).
    pub fn put(
        &self,
        at: Miss,
        token: &[u8],
        keys: &Arc<KeySet>,
        exp: Option<u64>,
        nbf: Option<u64>,
        claims: Arc<Claims>,
    ) {
        let Miss(Some(i)) = at else {
            return;
        };
        self.slots[i].store(Some(Arc::new(Entry {
            token: token.into(),
            keys: keys.clone(),
            exp,
            nbf,
            claims,
        })));
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
