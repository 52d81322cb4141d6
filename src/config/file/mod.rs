//! The configuration file exactly as written (the first of the config's two layers, STYLE.md 2):
//! the serde `schema` mirroring the TOML, `keypath`s, the `parse` of text into the schema with
//! every unknown key and its `suggest`ion, and the `spans` that map a key path to its line.
//!
//! Must not touch: meaning (that is `validate`).

mod keypath;
mod parse;
mod schema;
mod spans;
mod suggest;

pub(crate) use keypath::KeyPath;
pub(crate) use parse::parse;
pub(crate) use schema::*;
pub(crate) use spans::line_of;
