//! JWT validation (DESIGN.md §15): the per-`[jwt.NAME]` [`Verifier`] the authenticate stage calls
//! (built in `verifier`, checked in `check`), its [`Outcome`], the validated [`Claims`] later
//! stages read (`jwt:CLAIM` keys, `forward_claims`; scanned in `claims`), the verified-token
//! `cache`, and the `jwks_url` key sets ([`fetch`]). Key material itself is parsed with the
//! config (`config::keys`).
//!
//! Owns: finding the token in a request, choosing keys by `kid` and algorithm, the checks and
//! what their failures are called. Signatures are verified by `jsonwebtoken::crypto::verify` (on
//! ring: `config::crypto`); the header and the claims are parsed here, in one pass each, because
//! jsonwebtoken's `decode` costs ~5 µs per HS256 token (its `Header` buffers every member through
//! serde's `flatten`, and the claims are parsed twice) against a budget of 2 µs. Must not touch:
//! responses or metrics' registration (the authenticate stage answers and counts); the request
//! path never does IO or takes a lock here: a `jwks_url` key set is one `ArcSwap` load.

mod cache;
mod check;
mod claims;
pub mod fetch;
mod outcome;
mod verifier;

pub use crate::config::keys::{Key, KeySet};
pub use claims::Claims;
pub use fetch::Remote;
pub use outcome::{Outcome, RESULTS};
pub use verifier::{claim_headers, verifiers, Keys, Verifier};

/// Installs jsonwebtoken's crypto provider; idempotent. Every path that builds keys calls it.
pub fn init() {
    crate::config::crypto::install();
}
