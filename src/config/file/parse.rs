//! Parsing TOML text into the schema: syntax errors, the type error that stops
//! deserialization, and *every* unknown key (collected with `serde_ignored`, not
//! `deny_unknown_fields`, which stops at the first), each with its line and a suggestion.

use std::collections::BTreeSet;

use toml_edit::ImDocument;

use super::keypath::*;
use super::schema::*;
use super::spans::*;
use super::suggest::*;
use crate::config::error::ConfigError;

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
