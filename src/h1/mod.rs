//! tether's HTTP/1.1 codec (DESIGN.md §19): pooled buffers, request and response heads parsed
//! in place, the head writer, and the chunked body validator. Pure: no IO, no clock, no
//! metrics; the engine's connection loops drive it.
//!
//! The contract: **this is the one place that decides where a message ends.** A request head
//! ends where [`RequestHead::parse`] says, and its body is framed by the [`Framing`] it
//! decided (a `Content-Length`, chunked as [`Chunked`] validates it, or none); a response's the
//! same through [`ResponseHead::parse`] (plus close-delimited bodies, and no body for HEAD,
//! 1xx, 204 and 304). Every head the writer produces parses back to one head with the same
//! framing. Whatever two parsers could read two ways (`Content-Length` with
//! `Transfer-Encoding`, differing lengths, bare CR or LF, obs-fold, a bad chunk size) is
//! refused, never guessed at, so a backend never receives the bytes of one client request as
//! the start of another.
//!
//! The common path allocates nothing, by construction: [`buf::take`] reuses a per-thread
//! buffer, the parsers fill a stack array of httparse slots and keep spans into the caller's
//! buffer, the writer copies ranges into the caller's output slice, and the chunked validator
//! keeps only its place in the grammar. The engine's whole request path is held to at most 2
//! allocations per proxied request by `benches/allocs.sh` (a counting global allocator).
//!
//! Files: `buf.rs` (buffer pool), `head.rs` (spans, the field table, rules both directions
//! share), `request.rs`, `response.rs`, `chunked.rs`, `write.rs`. Imports nothing above
//! `config` (for `Limits`).

pub mod buf;
pub mod chunked;
pub mod head;
pub mod request;
pub mod response;
pub mod write;

pub use buf::{Buf, BUF_SIZE};
pub use chunked::{Chunked, ChunkedError, ChunkedLimits, Progress};
pub use head::{Field, Fields, Framing, Known, Span, MAX_FIELDS};
pub use request::{Reject, RequestHead, RequestView};
pub use response::{ResponseError, ResponseHead, ResponseView};
pub use write::{write_request, write_request_fields, write_response, Edits, WriteError};
