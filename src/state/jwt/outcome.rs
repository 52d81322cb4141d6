//! What the check of one request found: the [`Outcome`] the authenticate stage answers and
//! counts by (the `result` label of `tether_jwt_total`).

use std::sync::Arc;

use super::claims::Claims;

/// What the check of one request found (the `result` label of `tether_jwt_total`).
pub enum Outcome {
    Valid(Arc<Claims>),
    /// No token: no `Authorization` header, one that is not `Bearer`, or no cookie.
    Missing,
    /// Malformed, badly signed, not yet valid, wrong issuer or audience, algorithm not listed,
    /// unknown key, empty Bearer value.
    Invalid,
    /// `exp` in the past beyond `leeway`.
    Expired,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Valid(_) => "valid",
            Outcome::Missing => "missing",
            Outcome::Invalid => "invalid",
            Outcome::Expired => "expired",
        }
    }
}

pub const RESULTS: [&str; 4] = ["valid", "missing", "invalid", "expired"];
