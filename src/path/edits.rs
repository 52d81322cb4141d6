//! Header edits (DESIGN.md §11, §19): what a stage changes in a head on its way out — fields
//! dropped by name, fields added — as one value both codecs apply: tether's HTTP/1.1 writer
//! copies the head's own bytes with them, and pingora's heads (HTTP/2 on the pingora engine) are
//! edited through [`owned`].
//!
//! Owns: the shape of an edit list. Must not touch: which fields a stage edits (`forward`,
//! `respond`).

use http::{HeaderName, HeaderValue};
use smallvec::SmallVec;

/// What a stage changes in a head on its way out: fields to leave out (by lower-case name),
/// fields to add after the kept ones.
pub struct Edits<'a> {
    pub drop: &'a [&'a [u8]],
    pub add: &'a [(&'a [u8], &'a [u8])],
}

/// Edits as owned header names and values (for pingora's heads, which own theirs).
pub struct OwnedEdits {
    pub drop: SmallVec<[HeaderName; 12]>,
    pub add: SmallVec<[(HeaderName, HeaderValue); 12]>,
}

/// Converts edits for a pingora head.
pub fn owned(e: &Edits<'_>) -> pingora::Result<OwnedEdits> {
    let bad = |what| pingora::Error::explain(pingora::ErrorType::InternalError, what);
    let mut o = OwnedEdits {
        drop: SmallVec::new(),
        add: SmallVec::new(),
    };
    for n in e.drop {
        o.drop
            .push(HeaderName::from_bytes(n).map_err(|_| bad("bad header name"))?);
    }
    for (n, v) in e.add {
        o.add.push((
            HeaderName::from_bytes(n).map_err(|_| bad("bad header name"))?,
            HeaderValue::from_bytes(v).map_err(|_| bad("bad header value"))?,
        ));
    }
    Ok(o)
}
