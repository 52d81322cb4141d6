//! Configuration errors: one [`ConfigError`] names the key path, the offending value and the
//! line; [`ConfigErrors`] carries every error found in one pass, so a user who made three
//! mistakes sees three lines.
//!
//! Owns: the error types and their one-line rendering. Must not touch: parsing or validation
//! (`file/`, `validate/` produce these values).

use std::fmt;

/// One problem in a configuration file.
///
/// Rendered as `pool.shop.backend[2].addr = "10.0.0.1" (line 31): missing port`; without a value
/// as `pool.shop (line 12): ...`; a TOML syntax error has no key path and renders as
/// `line 7: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `pool.shop.backend[2].addr`; empty when the error is not about a key
    /// (syntax error, unreadable file).
    pub path: String,
    /// The offending value as written in TOML (`"10.0.0.1"`, `0`, `true`); `None` for missing
    /// keys, tables, and values that must not be echoed (secrets).
    pub value: Option<String>,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, not UTF-8): no key, no line.
    pub(crate) fn file(message: impl Into<String>) -> Self {
        ConfigError {
            path: String::new(),
            value: None,
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return match self.line {
                Some(line) => write!(f, "line {line}: {}", self.message),
                None => f.write_str(&self.message),
            };
        }
        f.write_str(&self.path)?;
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration, in file order (errors without a line last).
/// Never empty when returned as an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// One error per line, no trailing newline.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_path_value_line() {
        let e = ConfigError {
            path: "pool.shop.backend[2].addr".into(),
            value: Some("\"10.0.0.1\"".into()),
            line: Some(31),
            message: "missing port".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"pool.shop.backend[2].addr = "10.0.0.1" (line 31): missing port"#
        );
    }

    #[test]
    fn renders_without_value_or_path() {
        let e = ConfigError {
            path: "pool.shop".into(),
            value: None,
            line: Some(12),
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "pool.shop (line 12): m");
        let e = ConfigError {
            path: String::new(),
            value: None,
            line: Some(7),
            message: "expected `=`".into(),
        };
        assert_eq!(e.to_string(), "line 7: expected `=`");
        assert_eq!(
            ConfigError::file("cannot read x").to_string(),
            "cannot read x"
        );
    }

    #[test]
    fn one_error_per_line() {
        let errs = ConfigErrors(vec![ConfigError::file("a"), ConfigError::file("b")]);
        assert_eq!(errs.to_string(), "a\nb");
    }
}
