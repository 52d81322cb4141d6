//! Layer 2: lowering the file schema (`file/`) into the typed, validated [`Config`].
//!
//! Owns: every rule of DESIGN §3 — addresses, durations, ranges, cross-references, duplicates —
//! and reading the files the config points at (secrets, admin token, certificates and keys), so
//! that nothing downstream can fail or panic on them. Every error is collected (never stop at the
//! first), each naming its key path, value and line. Must not touch: sockets or runtime state;
//! `tether check` runs this alone and binds nothing.
//!
//! Pattern: each lowering step records its errors in [`Cx`] and returns a placeholder (the
//! default) so that later steps still run and report their own errors; the placeholders never
//! escape, because any error turns the whole result into `Err`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml_edit::ImDocument;

use super::error::{ConfigError, ConfigErrors};
use super::file::{self, KeyPath, RawDuration, RawSize, Secrets};
use super::{
    content_hash, Affinity, BackendConf, BackendSource, BreakerOpts, CaBundle, CertPair, Config,
    CookieOpts, DiscoverName, DiscoverOpts, Engine, Fallback, HandoffHeader, HashOpts, HealthOpts,
    HostMatch, KeySpec, Limits, Log, LogFormat, Named, OutlierOpts, Policy, Pool, Protocol, Route,
    SameSite, Server, Source, TlsListener, UpstreamTls, HANDOFF_HEADER,
};

mod discover;
mod jwt;
mod pool;
mod ratelimit;
mod route;
mod server;
#[cfg(test)]
mod tests;
mod text;
mod upstream_tls;

use text::*;

/// Read and validate the configuration file at `path`. Relative paths inside it (secret,
/// token, certificate files) resolve against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::file(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ConfigError::file(format!("{} is not valid UTF-8: {e}", path.display())))?;
    parse(&text, Some(path))
}

/// Validate configuration text. `path` is where it came from: relative paths inside resolve
/// against its directory (the current directory when `None`), and it names the default pid file
/// and upgrade socket.
pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let parsed = file::parse(text).map_err(finish)?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let source_path = path.map(|p| cwd.join(p));
    let base = source_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(cwd);
    let mut cx = Cx {
        doc: &parsed.doc,
        suggested: &parsed.suggested,
        base,
        errors: parsed.unknown,
        warnings: Vec::new(),
    };
    let mut config = cx.config(&parsed.file, source_path, text);
    if cx.errors.is_empty() {
        config.warnings = std::mem::take(&mut cx.warnings);
        Ok(config)
    } else {
        Err(finish(cx.errors))
    }
}

/// File order, errors without a line last; no repeats.
fn finish(mut errors: Vec<ConfigError>) -> ConfigErrors {
    errors.sort_by_key(|e| (e.line.is_none(), e.line));
    errors.dedup();
    ConfigErrors(errors)
}

/// A string value as TOML would show it.
fn quoted(s: &str) -> Option<String> {
    Some(format!("{s:?}"))
}

const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 9901);
const NEEDS_SECRET: &str = "requires [affinity] secret_file or secret";
const MIN_SECRET_LEN: usize = 16;

/// Validation context: the document for line numbers, and every error so far.
struct Cx<'a> {
    doc: &'a ImDocument<String>,
    /// Paths an unknown key probably meant; not reported again as missing.
    suggested: &'a BTreeSet<KeyPath>,
    /// Directory relative file paths resolve against.
    base: PathBuf,
    errors: Vec<ConfigError>,
    /// Accepted, but worth telling the operator.
    warnings: Vec<ConfigError>,
}

/// A listener seen so far, for duplicate detection.
struct Listener {
    addr: SocketAddr,
    path: KeyPath,
    /// False for the default admin address, which the user did not write.
    explicit: bool,
}

impl Cx<'_> {
    fn line(&self, path: &KeyPath) -> Option<usize> {
        file::line_of(self.doc, path)
    }

    fn error(&mut self, path: &KeyPath, value: Option<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            value,
            line: self.line(path),
            message: message.into(),
        });
    }

    /// Something accepted that the operator should hear about (a deprecated key).
    fn warning(&mut self, path: &KeyPath, value: Option<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.to_string(),
            value,
            line: self.line(path),
            message: message.into(),
        });
    }

    /// A required key or table is absent — unless an unknown key was probably meant to be it,
    /// which is already reported with a "did you mean".
    fn missing(&mut self, path: &KeyPath, message: impl Into<String>) {
        if !self.suggested.contains(path) {
            self.error(path, None, message);
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    /// Read a file named at `path`; errors name the resolved file and the OS error.
    fn read_file(&mut self, path: &KeyPath, value: &str) -> Option<(PathBuf, Vec<u8>)> {
        if value.is_empty() {
            self.error(path, quoted(value), "must not be empty");
            return None;
        }
        let file = self.resolve(value);
        match std::fs::read(&file) {
            Ok(bytes) => Some((file, bytes)),
            Err(e) => {
                self.error(
                    path,
                    quoted(value),
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &KeyPath,
        raw: Option<&RawDuration>,
        default: Duration,
        nonzero: bool,
    ) -> Duration {
        const NEEDS_UNIT: &str = "duration needs a unit, e.g. \"2s\" or \"500ms\"";
        let text = match raw {
            None => return default,
            Some(RawDuration::Number(n)) => {
                self.error(path, Some(n.clone()), NEEDS_UNIT);
                return default;
            }
            Some(RawDuration::Text(s)) => s,
        };
        let t = text.trim();
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            self.error(path, quoted(text), NEEDS_UNIT);
            return default;
        }
        match humantime::parse_duration(t) {
            Ok(d) if d.is_zero() && nonzero => {
                self.error(path, quoted(text), "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    path,
                    quoted(text),
                    format!("invalid duration: {e}; write e.g. \"2s\", \"500ms\" or \"1h\""),
                );
                default
            }
        }
    }

    /// A size in bytes (an integer, or a string with a unit: "64KiB", "1MiB", "10MB") in
    /// `range`; `None` when absent or wrong (the error is recorded).
    fn size(
        &mut self,
        path: &KeyPath,
        raw: Option<&RawSize>,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let (n, shown) = match raw? {
            RawSize::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            RawSize::Text(t) => (parse_size::parse_size(t.trim()).ok(), format!("{t:?}")),
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            Some(_) => {
                self.error(
                    path,
                    Some(shown),
                    format!(
                        "must be between {} and {} bytes",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            None => {
                self.error(
                    path,
                    Some(shown),
                    "invalid size: write bytes (65536) or a unit, e.g. \"64KiB\" or \"1MiB\"",
                );
                None
            }
        }
    }

    /// A required key: passed through when present, else a "missing required key: `what`"
    /// error (unless an unknown key was probably meant to be it).
    fn required<'v, T: ?Sized>(
        &mut self,
        path: &KeyPath,
        value: Option<&'v T>,
        what: &str,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.missing(path, format!("missing required key: {what}"));
        }
        value
    }

    /// The result of a pure check of the string `text` at `path`: its error recorded.
    fn checked<T>(&mut self, path: &KeyPath, text: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|message| self.error(path, quoted(text), message))
            .ok()
    }

    /// A key spec (§3): `cookie:NAME`, `header:NAME`, `query:NAME`, `jwt:CLAIM`, `source_ip` or
    /// `path`.
    fn key_spec(&mut self, path: &KeyPath, text: &str) -> Option<KeySpec> {
        self.checked(path, text, key_spec(text))
    }

    /// One of `T`'s names: `default` when absent; else the named value, or an error listing the
    /// names and `default`.
    fn named<T: Named>(&mut self, path: &KeyPath, raw: Option<&str>, default: T) -> T {
        match raw {
            None => default,
            Some(text) => self.parse_named(path, text).unwrap_or(default),
        }
    }

    /// A required one of `T`'s names.
    fn required_named<T: Named>(&mut self, path: &KeyPath, raw: Option<&str>) -> Option<T> {
        let text = self.required(path, raw, &T::choices())?;
        self.parse_named(path, text)
    }

    fn parse_named<T: Named>(&mut self, path: &KeyPath, text: &str) -> Option<T> {
        let v = T::parse(text);
        if v.is_none() {
            self.error(path, quoted(text), format!("must be {}", T::choices()));
        }
        v
    }

    /// An integer in `range`, as the type the config holds it in; `default` when absent, else an
    /// error naming the range.
    fn int<T>(
        &mut self,
        path: &KeyPath,
        raw: Option<i64>,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> T
    where
        T: Copy + PartialOrd + TryFrom<i64> + std::fmt::Display,
    {
        let Some(n) = raw else {
            return default;
        };
        match T::try_from(n) {
            Ok(v) if range.contains(&v) => v,
            _ => {
                self.error(
                    path,
                    Some(n.to_string()),
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                default
            }
        }
    }

    fn addr(&mut self, path: &KeyPath, text: &str, usage: AddrUse) -> Option<SocketAddr> {
        match parse_addr(text, usage) {
            Ok(a) => Some(a),
            Err(message) => {
                self.error(path, quoted(text), message);
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------------

    fn config(&mut self, f: &file::File, source_path: Option<PathBuf>, text: &str) -> Config {
        let server = self.server(&f.server, source_path.as_deref());
        let log = self.log(&f.log);
        let affinity = self.affinity(&f.affinity);
        // Count a configured secret even if it failed to load: that failure is the error to
        // show, not a "requires a secret" on every cookie pool.
        let has_secret = f.affinity.secret_file.is_some() || f.affinity.secret.is_some();
        let pools: Vec<Pool> = f
            .pool
            .iter()
            .map(|(name, p)| self.pool(name, p, has_secret))
            .collect();
        let names: Vec<&str> = f.pool.keys().map(String::as_str).collect();
        let (rate_limits, redis) = self.rate_limits(&f.rate_limit, f.redis.as_ref());
        let limit_names: Vec<&str> = f.rate_limit.keys().map(String::as_str).collect();
        let mut jwts: Vec<super::Jwt> = f.jwt.iter().map(|(name, j)| self.jwt(name, j)).collect();
        let jwt_names: Vec<&str> = f.jwt.keys().map(String::as_str).collect();
        let routes = self.routes(&f.route, &names, &limit_names, &jwt_names);
        self.jwt_keys_need_a_jwt(f, &routes, &pools, &rate_limits, &mut jwts);
        Config {
            server,
            log,
            affinity,
            routes,
            pools,
            rate_limits,
            redis,
            jwts,
            source: Source {
                path: source_path,
                hash: content_hash(text.as_bytes()),
            },
            warnings: Vec::new(),
        }
    }
}
