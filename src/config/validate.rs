//! Layer 2: lowering the file schema (`file.rs`) into the typed, validated [`Config`].
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
    content_hash, Affinity, BackendConf, CertPair, Config, CookieOpts, Engine, Fallback, HashOpts,
    HealthOpts, HostMatch, KeySpec, Limits, Log, LogFormat, OutlierOpts, Policy, Pool, Route,
    SameSite, Server, Source, TlsListener,
};

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
    };
    let config = cx.config(&parsed.file, source_path, text);
    if cx.errors.is_empty() {
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
const EXAMPLE_ADDR: &str = "must be an IP address and port, e.g. 10.0.0.11:8080";
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AddrUse {
    /// A listener: port 0 (an ephemeral port) is allowed.
    Listen,
    Backend,
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

    /// An integer in `range`, else an error naming the range.
    fn int_in(
        &mut self,
        path: &KeyPath,
        raw: Option<i64>,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> i64 {
        match raw {
            None => default,
            Some(n) if range.contains(&n) => n,
            Some(n) => {
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
        let routes = self.routes(&f.route, &names);
        Config {
            server,
            log,
            affinity,
            routes,
            pools,
            source: Source {
                path: source_path,
                hash: content_hash(text.as_bytes()),
            },
        }
    }

    fn server(&mut self, s: &file::Server, source: Option<&Path>) -> Server {
        let p = KeyPath::root().key("server");
        let mut listeners: Vec<Listener> = Vec::new();

        let mut listen = Vec::new();
        for (i, text) in s.listen.iter().flatten().enumerate() {
            let kp = p.key("listen").index(i);
            if let Some(addr) = self.addr(&kp, text, AddrUse::Listen) {
                self.add_listener(&mut listeners, addr, kp, true, Some(text));
                listen.push(addr);
            }
        }

        let mut tls = Vec::new();
        for (i, t) in s.tls.iter().flatten().enumerate() {
            let kp = p.key("tls").index(i);
            if let Some(l) = self.tls(&kp, t, &mut listeners) {
                tls.push(l);
            }
        }

        let no_listen = s.listen.as_ref().is_none_or(Vec::is_empty);
        let no_tls = s.tls.as_ref().is_none_or(Vec::is_empty);
        if no_listen && no_tls {
            self.missing(
                &p.key("listen"),
                "no listener: set server.listen = [\"0.0.0.0:8080\"] or add a [[server.tls]]",
            );
        }

        let threads = self.int_in(&p.key("threads"), s.threads, 2, 1..=256);
        let threads = usize::try_from(threads)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN);

        let admin_path = p.key("admin");
        let admin = match s.admin.as_deref() {
            None => {
                self.add_listener(
                    &mut listeners,
                    DEFAULT_ADMIN,
                    admin_path.clone(),
                    false,
                    None,
                );
                Some(DEFAULT_ADMIN)
            }
            Some("off") => None,
            Some(text) => {
                let addr = self.addr(&admin_path, text, AddrUse::Listen);
                if let Some(a) = addr {
                    self.add_listener(&mut listeners, a, admin_path.clone(), true, Some(text));
                    if !a.ip().to_canonical().is_loopback() && s.admin_token_file.is_none() {
                        self.error(
                            &admin_path,
                            quoted(text),
                            "admin listener off loopback requires admin_token_file",
                        );
                    }
                }
                addr
            }
        };

        let admin_token = s.admin_token_file.as_deref().and_then(|f| {
            let kp = p.key("admin_token_file");
            let (file, bytes) = self.read_file(&kp, f)?;
            let token = match String::from_utf8(bytes) {
                Ok(t) => t.trim().to_owned(),
                Err(_) => {
                    self.error(
                        &kp,
                        quoted(f),
                        format!("{} is not UTF-8 text", file.display()),
                    );
                    return None;
                }
            };
            if token.is_empty() {
                self.error(&kp, quoted(f), format!("{} is empty", file.display()));
                return None;
            }
            Some(token)
        });

        let grace_period = self.duration(
            &p.key("grace_period"),
            s.grace_period.as_ref(),
            Duration::from_secs(30),
            false,
        );

        let pid_file = self.runtime_path(&p.key("pid_file"), s.pid_file.as_deref(), source, "pid");
        let upgrade_sock = self.runtime_path(
            &p.key("upgrade_sock"),
            s.upgrade_sock.as_deref(),
            source,
            "sock",
        );

        let engine = match s.engine.as_deref() {
            None => Engine::Fast,
            Some(text) => Engine::parse(text).unwrap_or_else(|| {
                self.error(
                    &p.key("engine"),
                    quoted(text),
                    "must be \"fast\" or \"pingora\"",
                );
                Engine::Fast
            }),
        };

        let d = Limits::default();
        let limits = Limits {
            header_timeout: self.duration(
                &p.key("header_timeout"),
                s.header_timeout.as_ref(),
                d.header_timeout,
                true,
            ),
            keepalive_timeout: self.duration(
                &p.key("keepalive_timeout"),
                s.keepalive_timeout.as_ref(),
                d.keepalive_timeout,
                true,
            ),
            max_header_size: self
                .size(
                    &p.key("max_header_size"),
                    s.max_header_size.as_ref(),
                    1024..=1024 * 1024,
                )
                .map_or(d.max_header_size, |n| n as usize),
            max_headers: self.int_in(&p.key("max_headers"), s.max_headers, 100, 1..=1000) as usize,
        };

        Server {
            limits,
            engine,
            listen,
            tls,
            threads,
            admin,
            admin_token,
            watch: s.watch.unwrap_or(false),
            grace_period,
            pid_file,
            upgrade_sock,
        }
    }

    /// Record a listener; a second listener on the same address (or on an address a wildcard
    /// of the same family already covers) is an error at the later one.
    fn add_listener(
        &mut self,
        seen: &mut Vec<Listener>,
        addr: SocketAddr,
        path: KeyPath,
        explicit: bool,
        text: Option<&str>,
    ) {
        let clash = seen.iter().find(|l| {
            if l.addr.port() == 0 || addr.port() == 0 || l.addr.port() != addr.port() {
                return false;
            }
            let same_family = l.addr.is_ipv4() == addr.is_ipv4();
            l.addr == addr
                || (same_family && (l.addr.ip().is_unspecified() || addr.ip().is_unspecified()))
        });
        if let Some(first) = clash {
            let what = if first.addr == addr {
                "duplicate listen address"
            } else {
                "overlapping listen address"
            };
            let first_desc = match (first.explicit, self.line(&first.path)) {
                (true, Some(line)) => format!("{} = \"{}\" (line {line})", first.path, first.addr),
                (true, None) => format!("{} = \"{}\"", first.path, first.addr),
                (false, _) => format!("the default {} = \"{}\"", first.path, first.addr),
            };
            let message = if explicit {
                format!("{what}: also {first_desc}")
            } else {
                format!(
                    "{what}: the default admin address {addr} is also {first_desc}; \
                     set server.admin to another address or \"off\""
                )
            };
            self.error(&path, text.and_then(quoted), message);
        }
        seen.push(Listener {
            addr,
            path,
            explicit,
        });
    }

    fn runtime_path(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        source: Option<&Path>,
        ext: &str,
    ) -> PathBuf {
        match value {
            Some("") => {
                self.error(path, quoted(""), "must not be empty");
                PathBuf::new()
            }
            Some(v) => self.resolve(v),
            None => default_runtime_path(source, ext),
        }
    }

    fn tls(
        &mut self,
        kp: &KeyPath,
        t: &file::Tls,
        listeners: &mut Vec<Listener>,
    ) -> Option<TlsListener> {
        let listen = match &t.listen {
            None => {
                self.missing(
                    &kp.key("listen"),
                    "missing required key, e.g. listen = \"0.0.0.0:8443\"",
                );
                None
            }
            Some(text) => {
                let path = kp.key("listen");
                let addr = self.addr(&path, text, AddrUse::Listen);
                if let Some(a) = addr {
                    self.add_listener(listeners, a, path, true, Some(text));
                }
                addr
            }
        };
        let mut certs = Vec::new();
        let mut certs_ok = true;
        match &t.certs {
            None => {
                self.missing(
                    &kp.key("certs"),
                    "missing required key, e.g. certs = [{ cert = \"site.pem\", key = \"site.key\" }]",
                );
                certs_ok = false;
            }
            Some(list) if list.is_empty() => {
                self.error(
                    &kp.key("certs"),
                    Some("[]".into()),
                    "needs at least one { cert, key }",
                );
                certs_ok = false;
            }
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    match self.cert_pair(&kp.key("certs").index(i), c) {
                        Some(pair) => certs.push(pair),
                        None => certs_ok = false,
                    }
                }
            }
        }
        let listen = listen?;
        certs_ok.then_some(TlsListener { listen, certs })
    }

    /// Read and parse a certificate chain and its key, and check that they belong together —
    /// what `TlsSettings::build()` would otherwise panic on at startup.
    fn cert_pair(&mut self, kp: &KeyPath, c: &file::CertFiles) -> Option<CertPair> {
        let cert_kp = kp.key("cert");
        let key_kp = kp.key("key");
        let chain = match c.cert.as_deref() {
            None => {
                self.missing(
                    &cert_kp,
                    "missing required key: the PEM certificate chain file",
                );
                None
            }
            Some(v) => self.load_chain(&cert_kp, v),
        };
        let key = match c.key.as_deref() {
            None => {
                self.missing(&key_kp, "missing required key: the PEM private key file");
                None
            }
            Some(v) => self.load_key(&key_kp, v),
        };
        let ((cert_path, chain), (key_path, key)) = (chain?, key?);
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) =
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        {
            let message = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "private key {} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
                e => format!("cannot use private key {}: {e}", key_path.display()),
            };
            self.error(&key_kp, c.key.as_deref().and_then(quoted), message);
            return None;
        }
        Some(CertPair {
            cert_path,
            key_path,
            chain,
            key: Arc::new(key),
        })
    }

    fn load_chain(
        &mut self,
        kp: &KeyPath,
        value: &str,
    ) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
        let (file, bytes) = self.read_file(kp, value)?;
        match rustls_pemfile::certs(&mut bytes.as_slice()).collect::<Result<Vec<_>, _>>() {
            Ok(chain) if chain.is_empty() => {
                self.error(
                    kp,
                    quoted(value),
                    format!(
                        "no certificate found in {} (expected PEM \"BEGIN CERTIFICATE\")",
                        file.display()
                    ),
                );
                None
            }
            Ok(chain) => Some((file, chain)),
            Err(e) => {
                self.error(
                    kp,
                    quoted(value),
                    format!("cannot parse {}: {e}", file.display()),
                );
                None
            }
        }
    }

    fn load_key(&mut self, kp: &KeyPath, value: &str) -> Option<(PathBuf, PrivateKeyDer<'static>)> {
        let (file, bytes) = self.read_file(kp, value)?;
        match rustls_pemfile::private_key(&mut bytes.as_slice()) {
            Ok(Some(key)) => Some((file, key)),
            Ok(None) => {
                self.error(
                    kp,
                    quoted(value),
                    format!(
                        "no private key found in {} (expected PEM \"BEGIN PRIVATE KEY\")",
                        file.display()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    kp,
                    quoted(value),
                    format!("cannot parse {}: {e}", file.display()),
                );
                None
            }
        }
    }

    fn log(&mut self, l: &file::Log) -> Log {
        let p = KeyPath::root().key("log");
        let format = match l.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.error(
                    &p.key("format"),
                    quoted(other),
                    "must be \"text\" or \"json\"",
                );
                LogFormat::Text
            }
        };
        let level = l.level.clone().unwrap_or_else(|| "info".to_owned());
        if let Err(message) = check_log_level(&level) {
            self.error(&p.key("level"), quoted(&level), message);
        }
        Log {
            format,
            level,
            access: l.access.unwrap_or(true),
        }
    }

    fn affinity(&mut self, a: &file::Affinity) -> Affinity {
        let p = KeyPath::root().key("affinity");
        let mut secrets = Vec::new();
        if let Some(value) = a.secret_file.as_deref() {
            let kp = p.key("secret_file");
            if let Some((file, bytes)) = self.read_file(&kp, value) {
                let before = secrets.len();
                for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    let secret = line.trim_ascii();
                    if secret.is_empty() {
                        continue;
                    }
                    if secret.len() < MIN_SECRET_LEN {
                        self.error(
                            &kp,
                            quoted(value),
                            format!(
                                "the secret on line {} of {} is {} bytes; secrets need at least {MIN_SECRET_LEN}",
                                n + 1,
                                file.display(),
                                secret.len()
                            ),
                        );
                    }
                    secrets.push(secret.to_vec());
                }
                if secrets.len() == before {
                    self.error(
                        &kp,
                        quoted(value),
                        format!("{} contains no secret (one per line)", file.display()),
                    );
                }
            }
        }
        let inline: Vec<(KeyPath, &String)> = match &a.secret {
            None => Vec::new(),
            Some(Secrets::One(s)) => vec![(p.key("secret"), s)],
            Some(Secrets::Many(list)) => {
                if list.is_empty() {
                    self.error(&p.key("secret"), Some("[]".into()), "must not be empty");
                }
                list.iter()
                    .enumerate()
                    .map(|(i, s)| (p.key("secret").index(i), s))
                    .collect()
            }
        };
        for (kp, s) in inline {
            // Never echo a secret in an error.
            if s.len() < MIN_SECRET_LEN {
                self.error(
                    &kp,
                    None,
                    format!(
                        "secret is {} bytes; secrets need at least {MIN_SECRET_LEN}",
                        s.len()
                    ),
                );
            }
            secrets.push(s.as_bytes().to_vec());
        }
        Affinity { secrets }
    }

    fn routes(&mut self, routes: &[file::Route], pools: &[&str]) -> Vec<Route> {
        let p = KeyPath::root().key("route");
        if routes.is_empty() {
            self.missing(
                &p,
                "at least one [[route]] (with pool = \"NAME\") is required",
            );
        }
        let mut out = Vec::new();
        // (host, path_prefix) → index of the first route with it.
        let mut seen: BTreeMap<(Option<String>, String), usize> = BTreeMap::new();
        for (i, r) in routes.iter().enumerate() {
            let kp = p.index(i);
            let host = r.host.as_deref().and_then(|h| match host_match(h) {
                Ok(m) => Some(m),
                Err(message) => {
                    self.error(&kp.key("host"), quoted(h), message);
                    None
                }
            });
            let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
            let prefix_ok = match check_path(&path_prefix) {
                Ok(()) => true,
                Err(message) => {
                    self.error(&kp.key("path_prefix"), quoted(&path_prefix), message);
                    false
                }
            };
            let pool = match r.pool.as_deref() {
                None => {
                    self.missing(&kp.key("pool"), "missing required key: the pool to send to");
                    None
                }
                Some(name) => {
                    let index = pools.iter().position(|p| *p == name);
                    if index.is_none() {
                        let message = if pools.is_empty() {
                            "no such pool; no [pool.NAME] is defined".to_owned()
                        } else {
                            format!("no such pool; pools are: {}", pools.join(", "))
                        };
                        self.error(&kp.key("pool"), quoted(name), message);
                    }
                    index
                }
            };
            if r.host.is_some() == host.is_some() && prefix_ok {
                let host_key = host.as_ref().map(|h| match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Suffix(s) => format!("*{s}"),
                });
                match seen.get(&(host_key.clone(), path_prefix.clone())) {
                    Some(&first) => {
                        let first_path = p.index(first);
                        let at = match self.line(&first_path) {
                            Some(line) => format!("{first_path} (line {line})"),
                            None => first_path.to_string(),
                        };
                        self.error(
                            &kp,
                            None,
                            format!(
                                "same host and path_prefix as {at}; this route can never match"
                            ),
                        );
                    }
                    None => {
                        seen.insert((host_key, path_prefix.clone()), i);
                    }
                }
            }
            let name = match r.name.as_deref() {
                Some(n) if n.is_empty() || n.chars().any(char::is_control) => {
                    self.error(
                        &kp.key("name"),
                        quoted(n),
                        "must be a non-empty label without control characters",
                    );
                    String::new()
                }
                Some(n) => n.to_owned(),
                None => {
                    let host = match &host {
                        None => String::new(),
                        Some(HostMatch::Exact(h)) => h.clone(),
                        Some(HostMatch::Suffix(s)) => format!("*{s}"),
                    };
                    format!("{host}{path_prefix}")
                }
            };
            if let Some(pool) = pool {
                out.push(Route {
                    name,
                    host,
                    path_prefix,
                    pool,
                });
            }
        }
        out
    }

    fn pool(&mut self, name: &str, p: &file::Pool, has_secret: bool) -> Pool {
        let kp = KeyPath::root().key("pool").key(name);
        if !is_pool_name(name) {
            self.error(
                &kp,
                None,
                "pool name must be letters, digits, '_' or '-' ([A-Za-z0-9_-]+)",
            );
        }

        let policy_kp = kp.key("policy");
        let policy = match p.policy.as_deref() {
            None => {
                self.missing(
                    &policy_kp,
                    "missing required key: \"round_robin\", \"cookie\" or \"hash\"",
                );
                None
            }
            Some("round_robin") => Some(Policy::RoundRobin),
            Some("cookie") => Some(Policy::Cookie),
            Some("hash") => Some(Policy::Hash),
            Some(other) => {
                self.error(
                    &policy_kp,
                    quoted(other),
                    "must be \"round_robin\", \"cookie\" or \"hash\"",
                );
                None
            }
        };

        let retries = self.int_in(&kp.key("retries"), p.retries, 1, 0..=10);
        let connect_timeout = self.duration(
            &kp.key("connect_timeout"),
            p.connect_timeout.as_ref(),
            Duration::from_secs(3),
            true,
        );
        let read_timeout = self.duration(
            &kp.key("read_timeout"),
            p.read_timeout.as_ref(),
            Duration::from_secs(60),
            true,
        );
        let max_request_body = self.size(
            &kp.key("max_request_body"),
            p.max_request_body.as_ref(),
            0..=u64::MAX,
        );
        let cookie = self.cookie(&kp.key("cookie"), name, p.cookie.as_ref());

        let hash_kp = kp.key("hash");
        let hash = match (policy, &p.hash) {
            (Some(Policy::Hash), None) => {
                self.error(
                    &policy_kp,
                    quoted("hash"),
                    format!(
                        "requires a [{hash_kp}] table with a key, e.g. key = \"cookie:JSESSIONID\""
                    ),
                );
                None
            }
            (Some(Policy::Hash), Some(h)) => Some(self.hash(&hash_kp, h)),
            (Some(other), Some(_)) => {
                let other = match other {
                    Policy::RoundRobin => "round_robin",
                    Policy::Cookie => "cookie",
                    Policy::Hash => "hash",
                };
                self.error(
                    &hash_kp,
                    None,
                    format!(
                        "[{hash_kp}] is only used with policy = \"hash\" (this pool's policy is \"{other}\")"
                    ),
                );
                None
            }
            // Policy missing or invalid (already reported): still check the table.
            (None, Some(h)) => {
                self.hash(&hash_kp, h);
                None
            }
            (_, None) => None,
        };

        if !has_secret {
            if policy == Some(Policy::Cookie) {
                self.error(&policy_kp, quoted("cookie"), NEEDS_SECRET);
            }
            if hash.as_ref().is_some_and(|h| h.pin) {
                self.error(&hash_kp.key("pin"), Some("true".into()), NEEDS_SECRET);
            }
        }

        let health = p.health.as_ref().map(|h| self.health(&kp.key("health"), h));
        let outlier = p
            .outlier
            .as_ref()
            .map(|o| self.outlier(&kp.key("outlier"), o));
        let slow_start = p.slow_start.as_ref().map(|raw| {
            self.duration(
                &kp.key("slow_start"),
                Some(raw),
                Duration::from_secs(30),
                true,
            )
        });

        let backend_kp = kp.key("backend");
        let mut backends = Vec::new();
        let list = p.backend.as_deref().unwrap_or_default();
        if list.is_empty() {
            self.missing(
                &backend_kp,
                format!("a pool needs at least one [[{backend_kp}]] with id and addr"),
            );
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, b) in list.iter().enumerate() {
            let bkp = backend_kp.index(i);
            if let Some(id) = b.id.as_deref() {
                if let Some(&first) = ids.get(id) {
                    let first_kp = backend_kp.index(first).key("id");
                    let at = match self.line(&first_kp) {
                        Some(line) => format!("line {line}"),
                        None => first_kp.to_string(),
                    };
                    self.error(
                        &bkp.key("id"),
                        quoted(id),
                        format!("duplicate backend id (first at {at})"),
                    );
                } else {
                    ids.insert(id, i);
                }
            }
            if let Some(b) = self.backend(&bkp, b) {
                backends.push(b);
            }
        }

        Pool {
            name: name.to_owned(),
            policy: policy.unwrap_or(Policy::RoundRobin),
            retries: u32::try_from(retries).unwrap_or(1),
            connect_timeout,
            read_timeout,
            max_request_body,
            fail_open: p.fail_open.unwrap_or(false),
            cookie,
            hash,
            health,
            outlier,
            slow_start,
            backends,
        }
    }

    fn cookie(&mut self, kp: &KeyPath, pool: &str, c: Option<&file::Cookie>) -> CookieOpts {
        let default = file::Cookie::default();
        let c = c.unwrap_or(&default);

        // The default derives from the pool name, which is checked on its own.
        let name = c.name.clone().unwrap_or_else(|| format!("tether_{pool}"));
        if c.name.is_some() && !is_token(&name) {
            self.error(
                &kp.key("name"),
                quoted(&name),
                "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        let max_age = c
            .max_age
            .as_ref()
            .map(|raw| self.duration(&kp.key("max_age"), Some(raw), Duration::from_secs(1), true));
        let secure = c.secure.unwrap_or(false);
        let same_site = match c.same_site.as_deref() {
            None | Some("Lax") => SameSite::Lax,
            Some("Strict") => SameSite::Strict,
            Some("None") => {
                if !secure {
                    self.error(
                        &kp.key("same_site"),
                        quoted("None"),
                        "requires secure = true (browsers reject SameSite=None without Secure)",
                    );
                }
                SameSite::None
            }
            Some(other) => {
                self.error(
                    &kp.key("same_site"),
                    quoted(other),
                    "must be \"Strict\", \"Lax\" or \"None\"",
                );
                SameSite::Lax
            }
        };
        let path = c.path.clone().unwrap_or_else(|| "/".to_owned());
        if let Err(message) = check_path(&path) {
            self.error(&kp.key("path"), quoted(&path), message);
        } else if path.contains(';') {
            self.error(&kp.key("path"), quoted(&path), "must not contain ';'");
        }
        if let Some(domain) = c.domain.as_deref() {
            let ok = !domain.is_empty()
                && domain
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
            if !ok {
                self.error(
                    &kp.key("domain"),
                    quoted(domain),
                    "must be a domain name such as \"example.com\"",
                );
            }
        }
        CookieOpts {
            name,
            max_age,
            secure,
            http_only: c.http_only.unwrap_or(true),
            same_site: Some(same_site),
            path,
            domain: c.domain.clone(),
            cache_private: c.cache_private.unwrap_or(false),
        }
    }

    fn hash(&mut self, kp: &KeyPath, h: &file::Hash) -> HashOpts {
        let key = match h.key.as_deref() {
            None => {
                self.missing(&kp.key("key"), format!("missing required key: {KEY_SPECS}"));
                KeySpec::Path
            }
            Some(text) => match key_spec(text) {
                Ok(k) => k,
                Err(message) => {
                    self.error(&kp.key("key"), quoted(text), message);
                    KeySpec::Path
                }
            },
        };
        let fallback = match h.fallback.as_deref() {
            None | Some("round_robin") => Fallback::RoundRobin,
            Some(text) => match key_spec(text) {
                Ok(k) => Fallback::Key(k),
                Err(_) => {
                    self.error(
                        &kp.key("fallback"),
                        quoted(text),
                        format!("must be \"round_robin\" or a key: {KEY_SPECS}"),
                    );
                    Fallback::RoundRobin
                }
            },
        };
        if let Some(f) = h.balance_factor {
            if f != 0.0 {
                self.error(
                    &kp.key("balance_factor"),
                    Some(f.to_string()),
                    "bounded-load hashing is not supported yet; remove balance_factor or set it to 0",
                );
            }
        }
        HashOpts {
            key,
            fallback,
            pin: h.pin.unwrap_or(false),
        }
    }

    fn outlier(&mut self, kp: &KeyPath, o: &file::Outlier) -> OutlierOpts {
        let count =
            |v: &mut Self, key: &str, raw| v.int_in(&kp.key(key), raw, 5, 0..=10_000) as u32;
        let consecutive_5xx = count(self, "consecutive_5xx", o.consecutive_5xx);
        let consecutive_failures = count(self, "consecutive_failures", o.consecutive_failures);
        let base_ejection = self.duration(
            &kp.key("base_ejection"),
            o.base_ejection.as_ref(),
            Duration::from_secs(30),
            true,
        );
        let max_ejection = self.duration(
            &kp.key("max_ejection"),
            o.max_ejection.as_ref(),
            Duration::from_secs(300),
            true,
        );
        if max_ejection < base_ejection {
            let value = match o.max_ejection.as_ref() {
                Some(RawDuration::Text(t)) => quoted(t),
                _ => None,
            };
            self.error(
                &kp.key("max_ejection"),
                value,
                format!(
                    "must not be shorter than base_ejection ({})",
                    humantime::format_duration(base_ejection)
                ),
            );
        }
        let max_ejected_percent = self.int_in(
            &kp.key("max_ejected_percent"),
            o.max_ejected_percent,
            50,
            0..=100,
        ) as u32;
        OutlierOpts {
            consecutive_5xx,
            consecutive_failures,
            base_ejection,
            max_ejection,
            max_ejected_percent,
        }
    }

    fn health(&mut self, kp: &KeyPath, h: &file::Health) -> HealthOpts {
        let path = match h.path.as_deref() {
            None => {
                self.missing(
                    &kp.key("path"),
                    "missing required key: the path to GET, e.g. path = \"/healthz\"",
                );
                "/".to_owned()
            }
            Some(p) => {
                if let Err(message) = check_path(p) {
                    self.error(&kp.key("path"), quoted(p), message);
                }
                p.to_owned()
            }
        };
        let interval = self.duration(
            &kp.key("interval"),
            h.interval.as_ref(),
            Duration::from_secs(2),
            true,
        );
        let timeout = self.duration(
            &kp.key("timeout"),
            h.timeout.as_ref(),
            Duration::from_secs(1),
            true,
        );
        if timeout > interval {
            let value = match h.timeout.as_ref() {
                Some(RawDuration::Text(t)) => quoted(t),
                _ => None,
            };
            self.error(
                &kp.key("timeout"),
                value,
                format!(
                    "must not exceed interval ({})",
                    humantime::format_duration(interval)
                ),
            );
        }
        let rise = self.int_in(&kp.key("rise"), h.rise, 2, 1..=1000);
        let fall = self.int_in(&kp.key("fall"), h.fall, 3, 1..=1000);
        let expect = h.expect.as_ref().map(|codes| {
            if codes.is_empty() {
                self.error(
                    &kp.key("expect"),
                    Some("[]".into()),
                    "must not be empty; omit it to accept any 2xx or 3xx",
                );
            }
            codes
                .iter()
                .enumerate()
                .filter_map(|(i, &code)| match u16::try_from(code) {
                    Ok(c) if (100..=599).contains(&c) => Some(c),
                    _ => {
                        self.error(
                            &kp.key("expect").index(i),
                            Some(code.to_string()),
                            "must be an HTTP status code between 100 and 599",
                        );
                        None
                    }
                })
                .collect()
        });
        if let Some(host) = h.host.as_deref() {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    &kp.key("host"),
                    quoted(host),
                    "must be a Host header value such as \"shop.example.com\"",
                );
            }
        }
        HealthOpts {
            path,
            interval,
            timeout,
            rise: u32::try_from(rise).unwrap_or(2),
            fall: u32::try_from(fall).unwrap_or(3),
            expect,
            host: h.host.clone(),
        }
    }

    fn backend(&mut self, kp: &KeyPath, b: &file::Backend) -> Option<BackendConf> {
        let id = match b.id.as_deref() {
            None => {
                self.missing(
                    &kp.key("id"),
                    "missing required key: a stable name such as \"shop-1\"",
                );
                None
            }
            Some(id) if !is_backend_id(id) => {
                self.error(
                    &kp.key("id"),
                    quoted(id),
                    "must be letters, digits, '_', '.', ':' or '-' ([A-Za-z0-9_.:-]+)",
                );
                None
            }
            Some(id) => Some(id.to_owned()),
        };
        let addr = match b.addr.as_deref() {
            None => {
                self.missing(
                    &kp.key("addr"),
                    "missing required key: ip:port, e.g. \"10.0.0.11:8080\"",
                );
                None
            }
            Some(text) => self.addr(&kp.key("addr"), text, AddrUse::Backend),
        };
        let weight = self.int_in(&kp.key("weight"), b.weight, 1, 1..=256);
        Some(BackendConf {
            id: id?,
            addr: addr?,
            weight: u32::try_from(weight).unwrap_or(1),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Value checks (pure).

const KEY_SPECS: &str = "cookie:NAME, header:NAME, query:NAME, source_ip or path";

/// `ip:port` literals only: no DNS at config time, and Pingora's `HttpPeer::new` panics on an
/// address that does not resolve.
fn parse_addr(text: &str, usage: AddrUse) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 && usage == AddrUse::Backend {
            return Err("port 0 is not a valid backend port".into());
        }
        return Ok(addr);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (rest, None),
        }
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) if !text.starts_with('[') => {
            Err("missing port; write IPv6 addresses in brackets, e.g. [::1]:8080".into())
        }
        Ok(_) => match port {
            None | Some("") => Err("missing port".into()),
            Some(p) if p.parse::<u16>().is_err() => {
                Err(format!("invalid port {p:?}; must be 1 to 65535"))
            }
            Some(_) => Err(EXAMPLE_ADDR.into()),
        },
        Err(_) if host.is_empty() && port.is_some() => Err(format!(
            "missing IP address; {EXAMPLE_ADDR} (0.0.0.0:PORT listens on every interface)"
        )),
        Err(_) => Err(EXAMPLE_ADDR.into()),
    }
}

/// `info`, `tether=debug,info`, ... A bare word that is not a level parses as "everything
/// from target WORD" — almost always a typo (`debg`), so it is refused.
fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty, e.g. \"info\" or \"tether=debug,info\"".into());
    }
    // tracing-subscriber's directive parser panics on some non-ASCII input (found by the config
    // fuzzer: a U+2004 space before a directive); filters are ASCII anyway.
    if !level.is_ascii() {
        return Err("must be ASCII, e.g. \"info\" or \"tether=debug,info\"".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("invalid log filter: {e}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare
            && directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
        {
            return Err(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error or off); \
                 for a target write \"{directive}=debug\""
            ));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with \"/\"".into());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

fn host_match(host: &str) -> Result<HostMatch, String> {
    let h = host.to_ascii_lowercase();
    if h.is_empty() || h == "*" {
        return Err("omit host to match any host".into());
    }
    let (wildcard, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h.as_str()),
    };
    if name.contains('*') {
        return Err(
            "a wildcard is only allowed as the whole first label, e.g. \"*.example.com\"".into(),
        );
    }
    if name.contains(':') {
        return Err("must be a host name without a port".into());
    }
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !ok {
        return Err("must be a host name such as \"shop.example.com\" or \"*.example.com\"".into());
    }
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

fn key_spec(text: &str) -> Result<KeySpec, String> {
    match text {
        "source_ip" => return Ok(KeySpec::SourceIp),
        "path" => return Ok(KeySpec::Path),
        _ => {}
    }
    let Some((kind, name)) = text.split_once(':') else {
        return Err(format!("must be {KEY_SPECS}"));
    };
    let valid = match kind {
        "cookie" | "header" => is_token(name),
        "query" => {
            !name.is_empty()
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "&=#?".contains(c))
        }
        _ => return Err(format!("must be {KEY_SPECS}")),
    };
    if name.is_empty() {
        return Err(format!("missing the {kind} name after \"{kind}:\""));
    }
    if !valid {
        return Err(format!("{name:?} is not a valid {kind} name"));
    }
    Ok(match kind {
        "cookie" => KeySpec::Cookie(name.to_owned()),
        "header" => KeySpec::Header(name.to_ascii_lowercase()),
        _ => KeySpec::Query(name.to_owned()),
    })
}

/// An HTTP token (RFC 9110 `tchar`), which is also what a cookie name must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn is_pool_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_backend_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

/// In `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=`; the first one if several),
/// which belongs to this one unit: plain `tether.pid` / `tether.sock`, so the unit's `PIDFile=`
/// can name it. Otherwise the shared temp dir, with a name unique per config file so two
/// instances with different configs never share a pid file or upgrade socket.
fn default_runtime_path(source: Option<&Path>, ext: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return dir.join(format!("tether.{ext}"));
    }
    let hash = match source {
        Some(p) => {
            let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            content_hash(canonical.as_os_str().as_encoded_bytes())
        }
        None => content_hash(b"inline"),
    };
    std::env::temp_dir().join(format!("tether-{}.{ext}", &hash[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[route]]
pool = "web"

[pool.web]
policy = "round_robin"
[[pool.web.backend]]
id = "web-1"
addr = "10.0.0.11:8080"
"#;

    fn ok(text: &str) -> Config {
        match parse(text, None) {
            Ok(c) => c,
            Err(e) => panic!("expected valid config, got:\n{e}"),
        }
    }

    fn errs(text: &str) -> Vec<String> {
        match parse(text, None) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    /// Asserts some error contains every one of `needles`.
    #[track_caller]
    fn has(errors: &[String], needles: &[&str]) {
        assert!(
            errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
            "no error contains {needles:?}; errors:\n{}",
            errors.join("\n")
        );
    }

    fn with(extra: &str) -> String {
        format!("{BASE}\n{extra}")
    }

    #[test]
    fn minimal_config_and_defaults() {
        let c = ok(BASE);
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.server.threads.get(), 2);
        assert_eq!(c.server.admin, Some(DEFAULT_ADMIN));
        assert_eq!(c.server.admin_token, None);
        assert!(!c.server.watch);
        assert_eq!(c.server.grace_period, Duration::from_secs(30));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        assert!(c.log.access);
        assert!(c.affinity.secrets.is_empty());
        let pool = &c.pools[0];
        assert_eq!(pool.name, "web");
        assert_eq!(pool.policy, Policy::RoundRobin);
        assert_eq!(pool.retries, 1);
        assert_eq!(pool.connect_timeout, Duration::from_secs(3));
        assert_eq!(pool.read_timeout, Duration::from_secs(60));
        assert!(!pool.fail_open);
        assert_eq!(pool.cookie.name, "tether_web");
        assert_eq!(pool.cookie.same_site, Some(SameSite::Lax));
        assert!(pool.cookie.http_only);
        assert!(!pool.cookie.secure);
        assert_eq!(pool.cookie.path, "/");
        assert!(pool.hash.is_none() && pool.health.is_none());
        assert_eq!(pool.backends[0].weight, 1);
        assert_eq!(c.routes[0].path_prefix, "/");
        assert_eq!(c.routes[0].pool, 0);
        assert_eq!(c.routes[0].host, None);
        assert_eq!(c.source.hash, content_hash(BASE.as_bytes()));
        assert_eq!(c.source.hash.len(), 64);
    }

    #[test]
    fn default_runtime_paths_are_named_after_the_config() {
        let c = ok(BASE);
        let inline = &content_hash(b"inline")[..12];
        let pid = c.server.pid_file.file_name().unwrap().to_str().unwrap();
        let sock = c.server.upgrade_sock.file_name().unwrap().to_str().unwrap();
        assert_eq!(pid, format!("tether-{inline}.pid"));
        assert_eq!(sock, format!("tether-{inline}.sock"));
        let c = parse(BASE, Some(Path::new("/nonexistent/a.toml"))).unwrap();
        let expected = &content_hash(b"/nonexistent/a.toml")[..12];
        assert!(c
            .server
            .pid_file
            .ends_with(format!("tether-{expected}.pid")));
        let c = ok(&BASE.replace(
            "[server]\n",
            "[server]\npid_file = \"/run/x.pid\"\nupgrade_sock = \"/run/x.sock\"\n",
        ));
        assert_eq!(c.server.pid_file, Path::new("/run/x.pid"));
        assert_eq!(c.server.upgrade_sock, Path::new("/run/x.sock"));
    }

    #[test]
    fn pools_sorted_routes_in_file_order() {
        let c = ok(&with(
            r#"
[[route]]
path_prefix = "/b"
pool = "b"
[[route]]
host = "*.Example.COM"
pool = "a"
[pool.b]
policy = "round_robin"
[[pool.b.backend]]
id = "b1"
addr = "10.0.0.1:80"
[pool.a]
policy = "round_robin"
[[pool.a.backend]]
id = "a1"
addr = "10.0.0.2:80"
"#,
        ));
        let names: Vec<_> = c.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "web"]);
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.routes[0].pool, 2);
        assert_eq!(c.routes[1].pool, 1);
        assert_eq!(c.routes[1].path_prefix, "/b");
        assert_eq!(c.routes[2].pool, 0);
        assert_eq!(
            c.routes[2].host,
            Some(HostMatch::Suffix(".example.com".into()))
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = errs("[server]\nlisten = [\"a\"\nthreads = 2\n");
        assert!(e[0].starts_with("line "), "{e:?}");
    }

    #[test]
    fn type_error_names_key_and_line() {
        let e = errs(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nretries = \"many\"",
        ));
        has(
            &e,
            &["pool.web.retries = \"many\" (line 10)", "invalid type"],
        );
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let e = errs(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nhelth = 1\nretrys = 2\nzzzzzzzz = 3",
        ));
        has(
            &e,
            &["pool.web.helth (line 10): unknown key; did you mean \"health\"?"],
        );
        has(
            &e,
            &["pool.web.retrys (line 11)", "did you mean \"retries\"?"],
        );
        has(&e, &["pool.web.zzzzzzzz (line 12): unknown key"]);
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errs(&with("[log]\nformt = \"json\"\n[server.tls2]\n"));
        has(&e, &["log.formt", "did you mean \"format\"?"]);
        has(&e, &["server.tls2", "did you mean \"tls\"?"]);
        let e = errs(&BASE.replace("addr =", "adr ="));
        has(
            &e,
            &["pool.web.backend[0].adr (line 12): unknown key; did you mean \"addr\"?"],
        );
        // The typo is not also reported as a missing `addr`.
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn addresses() {
        let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1"));
        has(
            &e,
            &["pool.web.backend[0].addr = \"10.0.0.1\" (line 12): missing port"],
        );
        let e = errs(&BASE.replace("10.0.0.11:8080", "backend.local:8080"));
        has(&e, &["must be an IP address and port, e.g. 10.0.0.11:8080"]);
        let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1:0"));
        has(&e, &["port 0"]);
        let e = errs(&BASE.replace("10.0.0.11:8080", "10.0.0.1:70000"));
        has(&e, &["invalid port \"70000\""]);
        let e = errs(&BASE.replace("10.0.0.11:8080", "::1"));
        has(&e, &["missing port", "brackets"]);
        ok(&BASE.replace("10.0.0.11:8080", "[::1]:8080"));
        let e = errs(&BASE.replace("127.0.0.1:8080", "localhost:8080"));
        has(&e, &["server.listen[0] = \"localhost:8080\" (line 3)"]);
    }

    #[test]
    fn listeners() {
        let e = errs(&BASE.replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\nadmin = \"0.0.0.0:8080\"",
        ));
        has(
            &e,
            &["server.listen[1] = \"127.0.0.1:8080\" (line 3): duplicate listen address: also server.listen[0]"],
        );
        has(
            &e,
            &["server.admin = \"0.0.0.0:8080\" (line 4): overlapping"],
        );
        let e = errs(&BASE.replace("127.0.0.1:8080", "127.0.0.1:9901"));
        has(&e, &["server.admin", "default admin address"]);
        let e = errs(&BASE.replace("listen = [\"127.0.0.1:8080\"]", "threads = 4"));
        has(&e, &["server.listen", "no listener"]);
        let c = ok(&BASE.replace("[server]\n", "[server]\nadmin = \"off\"\nthreads = 8\n"));
        assert_eq!(c.server.admin, None);
        assert_eq!(c.server.threads.get(), 8);
        let e = errs(&BASE.replace("[server]\n", "[server]\nthreads = 0\n"));
        has(&e, &["server.threads = 0", "must be between 1 and 256"]);
        // Port 0 (ephemeral) listeners never clash.
        ok(&BASE.replace("[\"127.0.0.1:8080\"]", "[\"127.0.0.1:0\", \"127.0.0.1:0\"]"));
    }

    #[test]
    fn admin_off_loopback_needs_token() {
        let e = errs(&BASE.replace("[server]\n", "[server]\nadmin = \"0.0.0.0:9901\"\n"));
        has(
            &e,
            &["server.admin = \"0.0.0.0:9901\" (line 3): admin listener off loopback requires admin_token_file"],
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "  s3cret\n").unwrap();
        let text = BASE.replace(
            "[server]\n",
            "[server]\nadmin = \"0.0.0.0:9901\"\nadmin_token_file = \"token\"\n",
        );
        let c = parse(&text, Some(&dir.path().join("tether.toml"))).unwrap();
        assert_eq!(c.server.admin_token.as_deref(), Some("s3cret"));
        std::fs::write(dir.path().join("empty"), " \n").unwrap();
        let e = parse(
            &text.replace("\"token\"", "\"empty\""),
            Some(&dir.path().join("tether.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("server.admin_token_file = \"empty\" (line 4)") && e.contains("is empty"),
            "{e}"
        );
        let e = errs(&text.replace("\"token\"", "\"/nonexistent/token\""));
        has(
            &e,
            &["server.admin_token_file", "cannot read /nonexistent/token"],
        );
    }

    #[test]
    fn durations() {
        let text = with("[pool.web.health]\npath = \"/h\"\ninterval = \"2\"\ntimeout = 1\n");
        let e = errs(&text);
        has(
            &e,
            &["pool.web.health.interval = \"2\" (line 16): duration needs a unit, e.g. \"2s\" or \"500ms\""],
        );
        has(
            &e,
            &["pool.web.health.timeout = 1 (line 17): duration needs a unit"],
        );
        let e = errs(&with(
            "[pool.web.health]\npath = \"/h\"\ninterval = \"0s\"\n",
        ));
        has(&e, &["interval = \"0s\"", "greater than zero"]);
        let e = errs(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nconnect_timeout = \"3 parsecs\"\nread_timeout = \"0ms\"",
        ));
        has(&e, &["connect_timeout = \"3 parsecs\"", "invalid duration"]);
        has(&e, &["read_timeout = \"0ms\"", "greater than zero"]);
        let c = ok(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nconnect_timeout = \"500ms\"\nread_timeout = \"1h\"",
        ));
        assert_eq!(c.pools[0].connect_timeout, Duration::from_millis(500));
        assert_eq!(c.pools[0].read_timeout, Duration::from_secs(3600));
        let c = ok(&BASE.replace("[server]\n", "[server]\ngrace_period = \"0s\"\n"));
        assert_eq!(c.server.grace_period, Duration::ZERO);
    }

    #[test]
    fn log_section() {
        let c = ok(&with(
            "[log]\nformat = \"json\"\nlevel = \"tether=debug,warn\"\naccess = false\n",
        ));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "tether=debug,warn");
        assert!(!c.log.access);
        let e = errs(&with("[log]\nformat = \"xml\"\nlevel = \"debg\"\n"));
        has(&e, &["log.format = \"xml\"", "\"text\" or \"json\""]);
        has(&e, &["log.level = \"debg\"", "not a level"]);
        let e = errs(&with("[log]\nlevel = \"tether=lots\"\n"));
        has(&e, &["log.level = \"tether=lots\"", "invalid log filter"]);
    }

    const COOKIE_POOL: &str = r#"
[pool.shop]
policy = "cookie"
[[pool.shop.backend]]
id = "shop-1"
addr = "10.0.0.21:8080"
"#;

    #[test]
    fn secrets() {
        let e = errs(&with(COOKIE_POOL));
        has(
            &e,
            &["pool.shop.policy = \"cookie\" (line 16): requires [affinity] secret_file or secret"],
        );
        let c = ok(&with(&format!(
            "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}"
        )));
        assert_eq!(c.affinity.secrets, vec![b"0123456789abcdef".to_vec()]);
        assert!(c.pools[0].uses_cookie()); // "shop" sorts before "web"
        let e = errs(&with(&format!(
            "[affinity]\nsecret = [\"0123456789abcdef\", \"short-one\"]\n{COOKIE_POOL}"
        )));
        has(&e, &["affinity.secret[1] (line 15): secret is 9 bytes"]);
        assert!(
            !e.iter().any(|e| e.contains("short-one")),
            "secret echoed: {e:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("tether.toml");
        std::fs::write(
            dir.path().join("key"),
            "\n  new-secret-0123456789  \n\nold-secret-0123456789\n",
        )
        .unwrap();
        let text = with(&format!(
            "[affinity]\nsecret_file = \"key\"\nsecret = \"inline-secret-0123456\"\n{COOKIE_POOL}"
        ));
        let c = parse(&text, Some(&conf)).unwrap();
        assert_eq!(
            c.affinity.secrets,
            vec![
                b"new-secret-0123456789".to_vec(),
                b"old-secret-0123456789".to_vec(),
                b"inline-secret-0123456".to_vec()
            ]
        );
        std::fs::write(dir.path().join("key"), "too-short\n").unwrap();
        let e = parse(&text, Some(&conf)).unwrap_err().to_string();
        assert!(
            e.contains("affinity.secret_file = \"key\" (line 15): the secret on line 1"),
            "{e}"
        );
        assert!(!e.contains("too-short"), "{e}");

        let e = errs(&with(&format!(
            "[affinity]\nsecret_file = \"/nonexistent/affinity.key\"\n{COOKIE_POOL}"
        )));
        has(
            &e,
            &["affinity.secret_file = \"/nonexistent/affinity.key\" (line 15): cannot read /nonexistent/affinity.key: No such file"],
        );
        // The unreadable file is the error; not also "requires a secret".
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn routes() {
        let e = errs(&BASE.replace("pool = \"web\"", "pool = \"wbe\""));
        has(
            &e,
            &["route[0].pool = \"wbe\" (line 6): no such pool; pools are: web"],
        );
        let e = errs(&with(
            "[[route]]\nhost = \"a.*.com\"\npool = \"web\"\n[[route]]\npath_prefix = \"api\"\npool = \"web\"\n[[route]]\npool = \"web\"\n",
        ));
        has(&e, &["route[1].host = \"a.*.com\" (line 15)", "wildcard"]);
        has(
            &e,
            &["route[2].path_prefix = \"api\" (line 18): must start with \"/\""],
        );
        has(
            &e,
            &["route[3] (line 20): same host and path_prefix as route[0] (line 5)"],
        );
        let e = errs(&BASE.replace("[[route]]\npool = \"web\"\n", ""));
        has(&e, &["route: at least one [[route]]"]);
        let e = errs(&BASE.replace("pool = \"web\"", "path_prefix = \"/\""));
        has(&e, &["route[0].pool (line 5): missing required key"]);
        let c = ok(&with(
            "[[route]]\nhost = \"Shop.Example.com\"\npath_prefix = \"/x\"\npool = \"web\"\n",
        ));
        assert_eq!(
            c.routes[1].host,
            Some(HostMatch::Exact("shop.example.com".into()))
        );
        let e = errs(&with(
            "[[route]]\nhost = \"shop.example.com:80\"\npool = \"web\"\n",
        ));
        has(&e, &["without a port"]);
    }

    #[test]
    fn route_names() {
        let c = ok(&with(
            "[[route]]\nhost = \"*.Example.com\"\npath_prefix = \"/api\"\npool = \"web\"\n\
             [[route]]\nname = \"shop\"\nhost = \"shop.example.com\"\npool = \"web\"\n",
        ));
        let names: Vec<_> = c.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["/", "*.example.com/api", "shop"]);
        let e = errs(&with(
            "[[route]]\nname = \"\"\npath_prefix = \"/x\"\npool = \"web\"\n",
        ));
        has(&e, &["route[1].name = \"\" (line 15)", "non-empty"]);
    }

    #[test]
    fn pool_rules() {
        let e = errs(&with(
            "[pool.\"bad name\"]\npolicy = \"sticky\"\nretries = 11\n",
        ));
        has(&e, &["pool.\"bad name\" (line 14): pool name must be"]);
        has(&e, &["pool.\"bad name\".policy = \"sticky\" (line 15): must be \"round_robin\", \"cookie\" or \"hash\""]);
        has(&e, &["retries = 11", "must be between 0 and 10"]);
        has(
            &e,
            &["pool.\"bad name\".backend (line 14): a pool needs at least one"],
        );
        let e = errs(&with(
            "[pool.x]\n[[pool.x.backend]]\nid = \"x\"\naddr = \"10.0.0.1:1\"\n",
        ));
        has(&e, &["pool.x.policy (line 14): missing required key"]);
        let c = ok(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nretries = 0\nfail_open = true",
        ));
        assert_eq!(c.pools[0].retries, 0);
        assert!(c.pools[0].fail_open);
    }

    #[test]
    fn backends() {
        let text = with(
            "[[pool.web.backend]]\nid = \"web-1\"\naddr = \"10.0.0.12:8080\"\nweight = 0\n\
             [[pool.web.backend]]\nid = \"web 3\"\n",
        );
        let e = errs(&text);
        has(
            &e,
            &["pool.web.backend[1].id = \"web-1\" (line 15): duplicate backend id (first at line 11)"],
        );
        has(
            &e,
            &["pool.web.backend[1].weight = 0 (line 17): must be between 1 and 256"],
        );
        has(
            &e,
            &["pool.web.backend[2].id = \"web 3\"", "[A-Za-z0-9_.:-]+"],
        );
        has(
            &e,
            &["pool.web.backend[2].addr (line 18): missing required key"],
        );
        let c = ok(&with(
            "[[pool.web.backend]]\nid = \"web-2.a:b\"\naddr = \"10.0.0.12:8080\"\nweight = 256\n",
        ));
        assert_eq!(c.pools[0].backends[1].weight, 256);
    }

    #[test]
    fn cookie_options() {
        let c = ok(&with(&format!(
            "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\n\
             name = \"SID\"\nmax_age = \"12h\"\nsecure = true\nhttp_only = false\n\
             same_site = \"None\"\npath = \"/shop\"\ndomain = \"example.com\"\n"
        )));
        let ck = &c.pools[0].cookie;
        assert_eq!(ck.name, "SID");
        assert_eq!(ck.max_age, Some(Duration::from_secs(12 * 3600)));
        assert!(ck.secure && !ck.http_only);
        assert_eq!(ck.same_site, Some(SameSite::None));
        assert_eq!(ck.path, "/shop");
        assert_eq!(ck.domain.as_deref(), Some("example.com"));
        let e = errs(&with(&format!(
            "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\n\
             name = \"a b\"\nsame_site = \"None\"\npath = \"shop\"\n"
        )));
        has(&e, &["pool.shop.cookie.name = \"a b\"", "cookie name"]);
        has(
            &e,
            &[
                "pool.shop.cookie.same_site = \"None\"",
                "requires secure = true",
            ],
        );
        has(&e, &["pool.shop.cookie.path = \"shop\"", "must start with"]);
        let e = errs(&with(&format!(
            "[affinity]\nsecret = \"0123456789abcdef\"\n{COOKIE_POOL}[pool.shop.cookie]\nsame_site = \"lax\"\n"
        )));
        has(&e, &["\"Strict\", \"Lax\" or \"None\""]);
    }

    const HASH_POOL: &str = r#"
[pool.sessions]
policy = "hash"
[pool.sessions.hash]
key = "header:X-User"
[[pool.sessions.backend]]
id = "s1"
addr = "10.0.0.31:8080"
"#;

    #[test]
    fn hash_rules() {
        let c = ok(&with(HASH_POOL));
        let h = c.pools[0].hash.as_ref().unwrap();
        assert_eq!(h.key, KeySpec::Header("x-user".into()));
        assert_eq!(h.fallback, Fallback::RoundRobin);
        assert!(!h.pin);
        assert!(!c.pools[0].uses_cookie());
        for (spec, want) in [
            ("cookie:JSESSIONID", KeySpec::Cookie("JSESSIONID".into())),
            ("query:user", KeySpec::Query("user".into())),
            ("source_ip", KeySpec::SourceIp),
            ("path", KeySpec::Path),
        ] {
            assert_eq!(key_spec(spec), Ok(want));
        }
        let c = ok(&with(&HASH_POOL.replace(
            "key = \"header:X-User\"",
            "key = \"path\"\nfallback = \"source_ip\"",
        )));
        assert_eq!(
            c.pools[0].hash.as_ref().unwrap().fallback,
            Fallback::Key(KeySpec::SourceIp)
        );
        let e = errs(&with(&HASH_POOL.replace(
            "key = \"header:X-User\"",
            "key = \"header\"\nfallback = \"random\"\nbalance_factor = 1.25\npin = true",
        )));
        has(
            &e,
            &[
                "pool.sessions.hash.key = \"header\"",
                "cookie:NAME, header:NAME",
            ],
        );
        has(&e, &["pool.sessions.hash.fallback = \"random\""]);
        has(
            &e,
            &[
                "pool.sessions.hash.balance_factor = 1.25",
                "bounded-load hashing is not supported yet",
            ],
        );
        has(
            &e,
            &[
                "pool.sessions.hash.pin = true",
                "requires [affinity] secret_file or secret",
            ],
        );
        let e = errs(&with(
            &HASH_POOL.replace("[pool.sessions.hash]\nkey = \"header:X-User\"\n", ""),
        ));
        has(
            &e,
            &[
                "pool.sessions.policy = \"hash\"",
                "requires a [pool.sessions.hash]",
            ],
        );
        let e = errs(&BASE.replace(
            "policy = \"round_robin\"",
            "policy = \"round_robin\"\nhash = { key = \"path\" }",
        ));
        has(
            &e,
            &[
                "pool.web.hash (line 10)",
                "only used with policy = \"hash\"",
            ],
        );
        ok(&with(&HASH_POOL.replace(
            "key = \"header:X-User\"",
            "key = \"path\"\nbalance_factor = 0",
        )));
    }

    #[test]
    fn health_rules() {
        let c = ok(&with("[pool.web.health]\npath = \"/healthz\"\n"));
        let h = c.pools[0].health.as_ref().unwrap();
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!((h.rise, h.fall), (2, 3));
        assert_eq!(h.expect, None);
        let c = ok(&with(
            "[pool.web.health]\npath = \"/h\"\ninterval = \"1s\"\ntimeout = \"1s\"\nexpect = [200, 204]\nhost = \"web.local\"\nrise = 1\nfall = 1\n",
        ));
        let h = c.pools[0].health.as_ref().unwrap();
        assert_eq!(h.expect, Some(vec![200, 204]));
        assert_eq!(h.host.as_deref(), Some("web.local"));
        let e = errs(&with(
            "[pool.web.health]\ninterval = \"1s\"\ntimeout = \"2s\"\nrise = 0\nexpect = [200, 99]\n",
        ));
        has(
            &e,
            &["pool.web.health.path (line 14): missing required key"],
        );
        has(
            &e,
            &["pool.web.health.timeout = \"2s\" (line 16): must not exceed interval (1s)"],
        );
        has(&e, &["pool.web.health.rise = 0"]);
        has(
            &e,
            &[
                "pool.web.health.expect[1] = 99 (line 18)",
                "between 100 and 599",
            ],
        );
        let e = errs(&with("[pool.web.health]\npath = \"healthz\"\n"));
        has(
            &e,
            &["pool.web.health.path = \"healthz\"", "must start with"],
        );
    }

    #[test]
    fn many_errors_are_all_reported() {
        let text = BASE
            .replace("pool = \"web\"", "pool = \"nope\"")
            .replace(
                "addr = \"10.0.0.11:8080\"",
                "addr = \"10.0.0.11\"\nweight = 0",
            )
            .replace("policy =", "typo = 1\npolicy =");
        let e = errs(&text);
        assert_eq!(e.len(), 4, "{e:?}");
        has(&e, &["route[0].pool"]);
        has(&e, &["missing port"]);
        has(&e, &["weight = 0"]);
        has(&e, &["pool.web.typo"]);
        // In file order.
        let lines: Vec<usize> = parse(&text, None)
            .unwrap_err()
            .iter()
            .filter_map(|e| e.line)
            .collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn tls_certificates() {
        let tls = |cert: &str, key: &str| {
            BASE.replace(
                "[[route]]",
                &format!(
                    "[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncerts = [{{ cert = {:?}, key = {:?} }}]\n\n[[route]]",
                    fixture(cert),
                    fixture(key)
                ),
            )
        };
        let c = ok(&tls("cert.pem", "key.pem"));
        assert_eq!(c.server.tls.len(), 1);
        assert_eq!(c.server.tls[0].listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.server.tls[0].certs[0].chain.len(), 1);

        let e = errs(&tls("cert.pem", "other-key.pem"));
        has(
            &e,
            &[
                "server.tls[0].certs[0].key",
                "does not match the certificate",
            ],
        );
        let e = errs(&tls("key.pem", "cert.pem"));
        has(
            &e,
            &["server.tls[0].certs[0].cert", "no certificate found in"],
        );
        has(
            &e,
            &["server.tls[0].certs[0].key", "no private key found in"],
        );
        let e = errs(&tls("missing.pem", "key.pem"));
        has(
            &e,
            &[
                "server.tls[0].certs[0].cert",
                "(line 7)",
                "cannot read",
                "missing.pem",
            ],
        );

        // TLS alone is enough of a listener; its address clashes like any other.
        let only_tls = tls("cert.pem", "key.pem").replace("listen = [\"127.0.0.1:8080\"]", "");
        ok(&only_tls);
        let e = errs(&only_tls.replace("127.0.0.1:8443", "127.0.0.1:9901"));
        has(&e, &["server.admin", "default admin address"]);
        let e = errs(&with("[[server.tls]]\ncerts = []\n"));
        has(&e, &["server.tls[0].listen", "missing required key"]);
        has(&e, &["server.tls[0].certs = []", "at least one"]);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(fixture(f), dir.path().join("tls").join(f)).unwrap();
        }
        let text = BASE.replace(
            "[[route]]",
            "[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncerts = [{ cert = \"tls/cert.pem\", key = \"tls/key.pem\" }]\n\n[[route]]",
        );
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, &text).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(
            c.server.tls[0].certs[0].cert_path,
            dir.path().join("tls/cert.pem")
        );
        assert_eq!(c.source.path.as_deref(), Some(path.as_path()));
        assert_eq!(c.source.hash, content_hash(text.as_bytes()));
    }

    #[test]
    fn unreadable_config_file() {
        let e = load(Path::new("/nonexistent/tether.toml")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/tether.toml"),
            "{e}"
        );
    }

    #[test]
    fn address_parser() {
        let listen = |s| parse_addr(s, AddrUse::Listen);
        assert!(listen("0.0.0.0:0").is_ok());
        assert!(listen("[::]:8080").is_ok());
        assert_eq!(listen("10.0.0.1").unwrap_err(), "missing port");
        assert_eq!(listen("10.0.0.1:").unwrap_err(), "missing port");
        assert_eq!(listen("[::1]").unwrap_err(), "missing port");
        assert_eq!(listen("example.com").unwrap_err(), EXAMPLE_ADDR);
        assert_eq!(listen("example.com:80").unwrap_err(), EXAMPLE_ADDR);
        assert_eq!(listen("").unwrap_err(), EXAMPLE_ADDR);
        assert!(listen(":8080")
            .unwrap_err()
            .starts_with("missing IP address"));
    }
}
