//! Layer 1: the configuration file exactly as written — serde structs mirroring the TOML, key
//! paths, and the lookup from a key path to its line.
//!
//! Owns: parsing TOML text into [`File`], reporting syntax errors, type errors and *every*
//! unknown key (collected with `serde_ignored`, not `deny_unknown_fields`, which stops at the
//! first), and mapping key paths to 1-based lines through a span-keeping
//! [`toml_edit::ImDocument`]. Must not touch: meaning. Nearly every field is an `Option` (and
//! numbers are `i64`) so that a missing key or an out-of-range number becomes a validation error
//! in `validate.rs`, collected with all the others, rather than a serde error that stops the
//! parse.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Key, Table, Value};

use super::error::ConfigError;

// ---------------------------------------------------------------------------------------------
// The file schema (DESIGN §3). Field names are the TOML keys.

#[derive(Debug, Default, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub affinity: Affinity,
    #[serde(default)]
    pub route: Vec<Route>,
    #[serde(default)]
    pub pool: BTreeMap<String, Pool>,
    #[serde(default)]
    pub rate_limit: BTreeMap<String, RateLimit>,
    pub redis: Option<Redis>,
    #[serde(default)]
    pub jwt: BTreeMap<String, Jwt>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Jwt {
    pub from: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<RawDuration>,
    pub key_file: Option<String>,
    pub secret_file: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub leeway: Option<RawDuration>,
    pub forward_claims: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Server {
    pub listen: Option<Vec<String>>,
    pub threads: Option<i64>,
    pub admin: Option<String>,
    pub admin_token_file: Option<String>,
    pub watch: Option<bool>,
    pub grace_period: Option<RawDuration>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub engine: Option<String>,
    pub header_timeout: Option<RawDuration>,
    pub keepalive_timeout: Option<RawDuration>,
    pub max_header_size: Option<RawSize>,
    pub max_headers: Option<i64>,
    pub max_reload_move: Option<f64>,
    pub tls: Option<Vec<Tls>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Tls {
    pub listen: Option<String>,
    pub certs: Option<Vec<CertFiles>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CertFiles {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Log {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Affinity {
    pub secret_file: Option<String>,
    pub secret: Option<Secrets>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Route {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub pool: Option<String>,
    pub jwt: Option<String>,
    pub rate_limits: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RateLimit {
    pub key: Option<String>,
    pub rate: Option<i64>,
    pub per: Option<RawDuration>,
    pub burst: Option<i64>,
    pub store: Option<String>,
    pub on_store_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Redis {
    pub url: Option<String>,
    pub timeout: Option<RawDuration>,
    pub ca_file: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Pool {
    pub policy: Option<String>,
    pub retries: Option<i64>,
    pub connect_timeout: Option<RawDuration>,
    pub read_timeout: Option<RawDuration>,
    pub max_request_body: Option<RawSize>,
    pub fail_open: Option<bool>,
    pub cookie: Option<Cookie>,
    pub hash: Option<Hash>,
    pub health: Option<Health>,
    pub outlier: Option<Outlier>,
    pub slow_start: Option<RawDuration>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub tls: Option<UpstreamTls>,
    pub backend: Option<Vec<Backend>>,
}

/// `[pool.NAME.tls]`: TLS to the pool's backends (DESIGN.md §17).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpstreamTls {
    pub sni: Option<String>,
    pub verify: Option<bool>,
    pub ca_file: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CircuitBreaker {
    pub max_in_flight: Option<i64>,
    pub max_queue: Option<i64>,
    pub queue_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Outlier {
    pub consecutive_5xx: Option<i64>,
    pub consecutive_failures: Option<i64>,
    pub base_ejection: Option<RawDuration>,
    pub max_ejection: Option<RawDuration>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Cookie {
    pub name: Option<String>,
    pub max_age: Option<RawDuration>,
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<String>,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub cache_private: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Hash {
    pub key: Option<String>,
    pub fallback: Option<String>,
    pub pin: Option<bool>,
    pub balance_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Health {
    pub path: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub expect: Option<Vec<i64>>,
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Backend {
    pub id: Option<String>,
    pub addr: Option<String>,
    pub weight: Option<i64>,
}

/// A size as written: a whole number of bytes or a string with a unit (`"64KiB"`, `"1MB"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// A duration as written: a string (`"2s"`) or, by mistake, a bare number (`2`), which
/// validation rejects with a hint instead of a serde type error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawDuration {
    Text(String),
    /// The number as it would be written in TOML.
    Number(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"2s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `secret = "..."` or `secret = ["...", "..."]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Secrets {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secrets;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secrets, E> {
                Ok(Secrets::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Secrets, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Secrets::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Key paths.

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `pool.shop.backend[2].addr`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    pub fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }

    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
            use serde_ignored::Path as P;
            match path {
                P::Root => {}
                P::Seq { parent, index } => {
                    walk(parent, out);
                    out.push(Seg::Index(*index));
                }
                P::Map { parent, key } => {
                    walk(parent, out);
                    out.push(Seg::Key(key.clone()));
                }
                P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                    walk(parent, out)
                }
            }
        }
        let mut segs = Vec::new();
        walk(path, &mut segs);
        KeyPath(segs)
    }
}

fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// The file parsed twice: into the serde schema, and into a span-keeping document for lines.
pub(crate) struct Parsed {
    pub file: File,
    pub doc: ImDocument<String>,
    /// One error per unknown key (with a "did you mean" when one is obvious).
    pub unknown: Vec<ConfigError>,
    /// Paths that an unknown key was probably meant to be (`pool.shop.policy` for a
    /// `pool.shop.polcy` typo): validation does not also report these as missing.
    pub suggested: BTreeSet<KeyPath>,
}

/// Parse `text`. Errors: the syntax error, or every unknown key seen plus the (single) type
/// error that stopped deserialization.
pub(crate) fn parse(text: &str) -> Result<Parsed, Vec<ConfigError>> {
    let doc = match ImDocument::parse(text.to_owned()) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(vec![ConfigError {
                path: String::new(),
                value: None,
                line: e.span().map(|s| line_at(text, s.start)),
                message: one_line(e.message()),
            }])
        }
    };

    let mut ignored = Vec::new();
    let result: Result<File, toml::de::Error> =
        serde_ignored::deserialize(toml::Deserializer::new(text), |p| {
            ignored.push(KeyPath::from_ignored(&p))
        });

    let mut unknown = Vec::new();
    let mut suggested = BTreeSet::new();
    for path in ignored {
        let suggestion = path.last_key().and_then(|k| {
            let parent = path.parent()?;
            let s = suggest(k, known_keys(&parent)?)?;
            suggested.insert(parent.key(s));
            Some(s)
        });
        let mut message = "unknown key".to_owned();
        if let Some(s) = suggestion {
            message.push_str(&format!("; did you mean {s:?}?"));
        }
        unknown.push(ConfigError {
            line: line_of(&doc, &path),
            path: path.to_string(),
            value: None,
            message,
        });
    }

    match result {
        Ok(file) => Ok(Parsed {
            file,
            doc,
            unknown,
            suggested,
        }),
        Err(e) => {
            let at = e.span().and_then(|s| {
                let path = path_at(&doc, s.start)?;
                let value = value_text(&doc, &path);
                Some((path, value))
            });
            let line = e.span().map(|s| line_at(text, s.start));
            let message = plain_types(&one_line(e.message()));
            unknown.push(match at {
                Some((path, value)) => ConfigError {
                    path: path.to_string(),
                    value,
                    line,
                    message,
                },
                None => ConfigError {
                    path: String::new(),
                    value: None,
                    line,
                    message,
                },
            });
            Err(unknown)
        }
    }
}

fn one_line(message: &str) -> String {
    message
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// serde speaks Rust ("expected i64", "expected struct Pool"); users write TOML.
fn plain_types(message: &str) -> String {
    let mut m = message
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(at) = m.find("expected struct ") {
        let end = m[at..].find([',', ';']).map_or(m.len(), |e| at + e);
        m.replace_range(at..end, "expected a table");
    }
    m
}

/// 1-based line of byte offset `pos` in `text`.
pub(crate) fn line_at(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------------------------
// Unknown-key suggestions.

/// The keys serde accepts for `T`, read from its derived `Deserialize` so they cannot drift
/// from the schema above.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// The keys allowed in the table at `parent`, if it is one of the schema's structs.
fn known_keys(parent: &KeyPath) -> Option<&'static [&'static str]> {
    use Seg::{Index as I, Key as K};
    let segs: Vec<Result<&str, usize>> = parent
        .0
        .iter()
        .map(|s| match s {
            K(k) => Ok(k.as_str()),
            I(i) => Err(*i),
        })
        .collect();
    Some(match segs.as_slice() {
        [] => fields_of::<File>(),
        [Ok("server")] => fields_of::<Server>(),
        [Ok("server"), Ok("tls"), Err(_)] => fields_of::<Tls>(),
        [Ok("server"), Ok("tls"), Err(_), Ok("certs"), Err(_)] => fields_of::<CertFiles>(),
        [Ok("log")] => fields_of::<Log>(),
        [Ok("affinity")] => fields_of::<Affinity>(),
        [Ok("route"), Err(_)] => fields_of::<Route>(),
        [Ok("pool"), Ok(_)] => fields_of::<Pool>(),
        [Ok("pool"), Ok(_), Ok("cookie")] => fields_of::<Cookie>(),
        [Ok("pool"), Ok(_), Ok("hash")] => fields_of::<Hash>(),
        [Ok("pool"), Ok(_), Ok("health")] => fields_of::<Health>(),
        [Ok("pool"), Ok(_), Ok("circuit_breaker")] => fields_of::<CircuitBreaker>(),
        [Ok("pool"), Ok(_), Ok("tls")] => fields_of::<UpstreamTls>(),
        [Ok("pool"), Ok(_), Ok("backend"), Err(_)] => fields_of::<Backend>(),
        [Ok("pool"), Ok(_), Ok("outlier")] => fields_of::<Outlier>(),
        [Ok("jwt"), Ok(_)] => fields_of::<Jwt>(),
        [Ok("rate_limit"), Ok(_)] => fields_of::<RateLimit>(),
        [Ok("redis")] => fields_of::<Redis>(),
        _ => return None,
    })
}

/// The closest known key within edit distance 2 (and closer than the key's own length, so
/// `x` does not suggest `id`).
fn suggest(unknown: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2 && *d < unknown.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Key path → line, and byte offset → key path.

/// A node of the span-keeping document.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Array(&'a Array),
    Tables(&'a ArrayOfTables),
    Scalar(&'a Value),
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::None => None,
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            Item::Value(v) => Some(Node::of_value(v)),
        }
    }

    fn of_value(value: &'a Value) -> Node<'a> {
        match value {
            Value::Array(a) => Node::Array(a),
            Value::InlineTable(t) => Node::Inline(t),
            v => Node::Scalar(v),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Inline(t) => t.span(),
            Node::Array(a) => a.span(),
            Node::Tables(a) => a.span(),
            Node::Scalar(v) => v.span(),
        }
    }

    fn child(self, seg: &Seg) -> Option<(Option<&'a Key>, Node<'a>)> {
        match (self, seg) {
            (Node::Table(t), Seg::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                Some((Some(key), Node::of_item(item)?))
            }
            (Node::Inline(t), Seg::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                Some((Some(key), Node::of_item(item)?))
            }
            (Node::Array(a), Seg::Index(i)) => Some((None, Node::of_value(a.get(*i)?))),
            (Node::Tables(a), Seg::Index(i)) => Some((None, Node::Table(a.get(*i)?))),
            _ => None,
        }
    }

    /// Children with their key path segment, in no particular order.
    fn children(self) -> Vec<(Seg, Node<'a>)> {
        match self {
            Node::Table(t) => t
                .iter()
                .filter_map(|(k, _)| {
                    let seg = Seg::Key(k.to_owned());
                    let (_, n) = self.child(&seg)?;
                    Some((seg, n))
                })
                .collect(),
            Node::Inline(t) => t
                .iter()
                .map(|(k, v)| (Seg::Key(k.to_owned()), Node::of_value(v)))
                .collect(),
            Node::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), Node::of_value(v)))
                .collect(),
            Node::Tables(a) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), Node::Table(t)))
                .collect(),
            Node::Scalar(_) => Vec::new(),
        }
    }
}

/// Walks `path` as far as it exists; returns the deepest span found (the node's, else the
/// key's), so a missing key reports the line of its table.
fn span_of(doc: &ImDocument<String>, path: &KeyPath) -> Option<Range<usize>> {
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for seg in &path.0 {
        let Some((key, child)) = node.child(seg) else {
            break;
        };
        if let Some(span) = child.span().or_else(|| key.and_then(Key::span)) {
            best = Some(span);
        }
        node = child;
    }
    best
}

/// The 1-based line of the deepest existing part of `path`.
pub(crate) fn line_of(doc: &ImDocument<String>, path: &KeyPath) -> Option<usize> {
    span_of(doc, path).map(|s| line_at(doc.raw(), s.start))
}

/// The value at `path` exactly as written in the file, if `path` names a value.
fn value_text(doc: &ImDocument<String>, path: &KeyPath) -> Option<String> {
    let mut node = Node::Table(doc.as_table());
    for seg in &path.0 {
        node = node.child(seg)?.1;
    }
    match node {
        Node::Scalar(_) | Node::Array(_) | Node::Inline(_) => {
            let text = doc.raw().get(node.span()?)?.trim();
            // Keep one-line errors one line, and long arrays short.
            (!text.contains('\n') && text.len() <= 80).then(|| text.to_owned())
        }
        _ => None,
    }
}

/// The deepest key path whose value (or table header) covers byte `pos`.
fn path_at(doc: &ImDocument<String>, pos: usize) -> Option<KeyPath> {
    fn walk(node: Node<'_>, path: &mut KeyPath, pos: usize) -> bool {
        for (seg, child) in node.children() {
            path.0.push(seg);
            let covers = child.span().is_some_and(|s| s.contains(&pos));
            // Tables' spans cover only their header, so always look inside them.
            let container = matches!(child, Node::Table(_) | Node::Tables(_));
            if (covers || container) && walk(child, path, pos) {
                return true;
            }
            if covers {
                return true;
            }
            path.0.pop();
        }
        false
    }
    let mut path = KeyPath::root();
    walk(Node::Table(doc.as_table()), &mut path, pos).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_display() {
        let p = KeyPath::root()
            .key("pool")
            .key("shop")
            .key("backend")
            .index(2)
            .key("addr");
        assert_eq!(p.to_string(), "pool.shop.backend[2].addr");
        assert_eq!(
            KeyPath::root().key("pool").key("a b").to_string(),
            "pool.\"a b\""
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("helth", fields_of::<Pool>()), Some("health"));
        assert_eq!(suggest("backends", fields_of::<Pool>()), Some("backend"));
        assert_eq!(suggest("x", fields_of::<Backend>()), None);
        assert_eq!(suggest("zzzzzz", fields_of::<Pool>()), None);
        assert!(fields_of::<File>().contains(&"pool"));
    }

    #[test]
    fn lines_for_paths() {
        let text = "[server]\nlisten = [\"a\",\n  \"b\"]\n\n[pool.shop]\npolicy = \"x\"\n\
                    [[pool.shop.backend]]\nid = \"1\"\n[[pool.shop.backend]]\nid = \"2\"\n";
        let doc = ImDocument::parse(text.to_owned()).unwrap();
        let p = |s: &[Seg]| line_of(&doc, &KeyPath(s.to_vec()));
        let k = |s: &str| Seg::Key(s.into());
        assert_eq!(p(&[k("server"), k("listen"), Seg::Index(1)]), Some(3));
        assert_eq!(p(&[k("pool"), k("shop")]), Some(5));
        assert_eq!(p(&[k("pool"), k("shop"), k("policy")]), Some(6));
        assert_eq!(
            p(&[k("pool"), k("shop"), k("backend"), Seg::Index(1)]),
            Some(9)
        );
        assert_eq!(
            p(&[k("pool"), k("shop"), k("backend"), Seg::Index(1), k("id")]),
            Some(10)
        );
        // Missing key: the line of its table.
        assert_eq!(
            p(&[k("pool"), k("shop"), k("backend"), Seg::Index(1), k("addr")]),
            Some(9)
        );
        let pos = text.find("\"x\"").unwrap();
        assert_eq!(
            path_at(&doc, pos).map(|p| p.to_string()).as_deref(),
            Some("pool.shop.policy")
        );
    }
}
