//! The request path (DESIGN.md §11): the per-request [`exchange::Exchange`] and the stages it
//! walks, one file each and in this order — `read` → `route` → `authenticate` → `limit` →
//! `pick` → `forward` → `respond` → `account` — with `head` (what the stages read of a request
//! head), `edits` (what the forward and respond stages change in a head, for either codec), `trace` (W3C trace context) and `outcome` (the decisions both protocols share: the
//! 404/503 answers, failover → status, when a request may be sent again, error → status,
//! passive-health blame, the final status). Stages are functions over tether's own types; the
//! engines that carry requests call them and hold no decisions of their own.

pub mod account;
pub mod authenticate;
pub mod edits;
pub mod exchange;
pub mod forward;
pub mod grpc;
pub mod handoff;
pub mod head;
pub mod limit;
pub mod outcome;
pub mod pick;
pub mod read;
pub mod respond;
pub mod route;
pub mod trace;
