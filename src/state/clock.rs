//! The request path's sources of time and randomness: the wall clock in unix seconds (cookie
//! timestamps, recent sessions) and the system CSPRNG (session nonces, request ids). Kept here,
//! one layer below selection, so the pure algorithms never read a clock themselves: they are
//! handed `now` and a nonce source.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::balance::cookie::NONCE_LEN;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    // The system CSPRNG does not fail on Linux once initialised; a zero nonce would still be a
    // valid (if shared) session key, never a crash.
    let _ = ring::rand::SystemRandom::new().fill(&mut n);
    n
}
