//! Header edits (DESIGN.md §11, §19): what a stage changes in a head on its way out — fields
//! dropped by name, fields added — as one value every writer applies: tether's HTTP/1.1 writer
//! (from the client's own bytes, or from an HTTP/2 stream's fields) and the HTTP/2 response
//! head the engine builds.
//!
//! Owns: the shape of an edit list. Must not touch: which fields a stage edits (`forward`,
//! `respond`).

/// What a stage changes in a head on its way out: fields to leave out (by lower-case name),
/// fields to add after the kept ones.
pub struct Edits<'a> {
    pub drop: &'a [&'a [u8]],
    pub add: &'a [(&'a [u8], &'a [u8])],
}
