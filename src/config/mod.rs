//! Configuration: the TOML file schema (`file`), its lowering into the typed, validated
//! [`Config`] (`validate`), and error reporting with key path, value and line (`error`).
//!
//! Owns: everything about reading configuration. Must not touch: sockets, the registry or any
//! runtime state — `tether check` runs this module alone and binds nothing.
//!
//! No raw string of the file gets past this module: addresses are `SocketAddr`, durations are
//! `Duration`, weights are range-checked, secrets and certificates are already read.

pub mod crypto;
pub mod diff;
mod error;
mod file;
pub mod keys;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use validate::{load, parse};

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// An enum spelled in the file by a fixed set of names: the one table of those names, used to
/// parse them, print them and list them in errors.
pub trait Named: Copy + PartialEq + Sized + 'static {
    const NAMES: &'static [(&'static str, Self)];

    fn parse(s: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|&(_, v)| v)
    }

    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |&(n, _)| n)
    }

    /// `"a", "b" or "c"`, for error messages.
    fn choices() -> String {
        let names: Vec<String> = Self::NAMES.iter().map(|(n, _)| format!("{n:?}")).collect();
        match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub log: Log,
    pub affinity: Affinity,
    /// In file order (first listed wins among equally long prefixes).
    pub routes: Vec<Route>,
    /// Sorted by name.
    pub pools: Vec<Pool>,
    /// `[rate_limit.NAME]`, sorted by name (DESIGN.md §14).
    pub rate_limits: Vec<RateLimit>,
    /// `[redis]`: the store of limits with `store = "redis"`.
    pub redis: Option<RedisConf>,
    /// `[jwt.NAME]`, sorted by name (DESIGN.md §15).
    pub jwts: Vec<Jwt>,
    /// Where the config came from, and a content hash (hex SHA-256 of the file bytes).
    pub source: Source,
    /// What is accepted but worth telling the operator (`tether check` prints them, `run`
    /// logs them): deprecated keys and the like.
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone, Default)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Plain HTTP listeners (at least one listener, plain or TLS, is required).
    pub listen: Vec<SocketAddr>,
    pub tls: Vec<TlsListener>,
    /// Worker threads of the proxy service.
    pub threads: NonZeroUsize,
    /// Admin listener (`/metrics`, `/status`, actions). Defaults to 127.0.0.1:9901;
    /// `admin = "off"` disables it (`None`).
    pub admin: Option<SocketAddr>,
    /// Bearer token for admin POST actions, read from `admin_token_file` (trimmed).
    pub admin_token: Option<String>,
    /// Also reload when the config file's content changes.
    pub watch: bool,
    /// How long in-flight requests may finish at shutdown/upgrade.
    pub grace_period: Duration,
    /// Pingora pid file and upgrade socket (defaults derived from the config path).
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// Serve cleartext HTTP/2 with prior knowledge (`h2c`) on the plain listeners too
    /// (DESIGN.md §20).
    pub h2c: bool,
    /// Downstream limits and timeouts (DESIGN.md §12).
    pub limits: Limits,
    /// Refuse a reload that moves a larger share than this of any pool's sessions (§16).
    pub max_reload_move: Option<f64>,
}

/// What a client may send and how long it may take (DESIGN.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive within this, from its first byte: else 408.
    pub header_timeout: Duration,
    /// An idle client connection is closed after this between requests.
    pub keepalive_timeout: Duration,
    /// Request line + headers, in bytes: larger is 431.
    pub max_header_size: usize,
    /// Header fields: more is 431.
    pub max_headers: usize,
    /// Concurrent streams per HTTP/2 connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_concurrent_streams: 100,
        }
    }
}

/// The values `server.engine` and `TETHER_ENGINE` once chose between (DESIGN.md §20): one
/// engine serves both protocols now; the setting is accepted with a deprecation warning and
/// changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Fast,
    Pingora,
}

/// The warning `server.engine` and `TETHER_ENGINE` get.
pub const ENGINE_DEPRECATED: &str =
    "deprecated and ignored: one engine serves HTTP/1.1 and HTTP/2 (tether's own loop); remove it";

impl Named for Engine {
    const NAMES: &'static [(&'static str, Self)] =
        &[("fast", Engine::Fast), ("pingora", Engine::Pingora)];
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub certs: Vec<CertPair>,
}

/// A certificate chain and its key, already read and parsed during validation.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: std::sync::Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Named for LogFormat {
    const NAMES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive such as `info` or `tether=debug,info` (validated).
    pub level: String,
    /// Emit one access-log event per request (tracing target `access`).
    pub access: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Affinity {
    /// Signing secrets; the first signs new cookies, all verify (rotation). Empty when no pool
    /// uses cookies (validation requires one when a pool does).
    pub secrets: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-cased exact host (no port).
    Exact(String),
    /// `*.example.com` → suffix `.example.com` (lower-cased); matches `a.example.com`,
    /// not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The `route` metric label: optional `name` key of the `[[route]]` table (add it to the file
    /// schema); default `<host><path_prefix>`, e.g. "shop.example.com/" or "/api".
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    /// Index into `Config::pools` (validated cross-reference).
    pub pool: usize,
    /// Indexes into `Config::rate_limits`, in the order the route lists them.
    pub rate_limits: Vec<usize>,
    /// Index into `Config::jwts`: a valid token is required on this route.
    pub jwt: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Cookie,
    Hash,
    /// Weighted power of two choices over in-flight counts (stateless pools).
    LeastRequest,
}

impl Named for Policy {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("round_robin", Policy::RoundRobin),
        ("cookie", Policy::Cookie),
        ("hash", Policy::Hash),
        ("least_request", Policy::LeastRequest),
    ];
}

/// `[pool.NAME] protocol`: how tether talks to the pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (over TLS with `[pool.NAME.tls]`).
    #[default]
    Http1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// HTTP/2 over TLS, ALPN `h2` (needs `[pool.NAME.tls]`).
    H2,
}

impl Protocol {
    /// Whether requests go out as HTTP/2 streams.
    pub fn is_h2(self) -> bool {
        self != Protocol::Http1
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }
}

impl Named for Protocol {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("http1", Protocol::Http1),
        ("h2c", Protocol::H2c),
        ("h2", Protocol::H2),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl Named for SameSite {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("Strict", SameSite::Strict),
        ("Lax", SameSite::Lax),
        ("None", SameSite::None),
    ];
}

#[derive(Debug, Clone)]
pub struct CookieOpts {
    /// Default `tether_<pool>`.
    pub name: String,
    pub max_age: Option<Duration>,
    pub secure: bool,
    /// Default true.
    pub http_only: bool,
    /// Default Lax.
    pub same_site: Option<SameSite>,
    /// Default "/".
    pub path: String,
    pub domain: Option<String>,
    /// Mark responses that set the affinity cookie `Cache-Control: private`, so a shared cache
    /// in front of tether never stores one user's cookie for everyone (HAProxy's `nocache`).
    /// Default false.
    pub cache_private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    Cookie(String),
    /// Lower-cased header name.
    Header(String),
    Query(String),
    SourceIp,
    Path,
    /// A claim of the request's validated token (DESIGN.md §15).
    Jwt(String),
}

/// One `[rate_limit.NAME]` (DESIGN.md §14): GCRA, `burst` tokens refilled at `rate` per `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: String,
    /// Default `source_ip`.
    pub key: KeySpec,
    /// At least 1.
    pub rate: u32,
    /// Greater than zero; default 1 s.
    pub per: Duration,
    /// At least 1; default `rate`.
    pub burst: u32,
    pub store: LimitStore,
}

/// Where a limit's buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    /// In this process.
    Local,
    /// In `[redis]`, shared by every instance; what to do when it fails.
    Redis(OnStoreError),
}

/// What a Redis limit does with a request it could not decide (Redis down or slower than
/// `[redis] timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// A per-instance bucket with the limit's own rate and burst.
    Local,
    /// Forward the request.
    Allow,
    /// Answer `503` with `Retry-After: 1`.
    Deny,
}

impl Named for OnStoreError {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("local", OnStoreError::Local),
        ("allow", OnStoreError::Allow),
        ("deny", OnStoreError::Deny),
    ];
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConf {
    /// A `redis://` or `rediss://` URL (checked by the redis client's own parser).
    pub url: String,
    /// Each call's deadline; default 50 ms.
    pub timeout: Duration,
    /// `rediss://` only: the CA bundle and client certificate, read during validation.
    pub tls: RedisTls,
}

/// What a `rediss://` connection trusts and presents, as PEM (the redis client's format).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// `ca_file`: replaces the system roots.
    pub ca: Option<Vec<u8>>,
    /// `cert` and `key`: mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "(set)"))
            .field("client", &self.client.as_ref().map(|_| "(set)"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    RoundRobin,
    Key(KeySpec),
}

#[derive(Debug, Clone)]
pub struct HashOpts {
    pub key: KeySpec,
    pub fallback: Fallback,
    pub pin: bool,
    /// Bounded-load hashing (DESIGN.md §16): 0 = off, else ≥ 1.0.
    pub balance_factor: f64,
}

#[derive(Debug, Clone)]
pub struct HealthOpts {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// `None`: any 2xx or 3xx.
    pub expect: Option<Vec<u16>>,
    /// Host header of the check; default: the backend's address.
    pub host: Option<String>,
    /// `Some(service)`: the check is `grpc.health.v1.Health/Check` for that service (empty:
    /// the server's overall health) instead of `GET path` (DESIGN.md §21).
    pub grpc_service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConf {
    pub id: String,
    pub addr: SocketAddr,
    /// 1..=256.
    pub weight: u32,
    /// Written in the file, or found through `[pool.NAME.discover]`.
    pub source: BackendSource,
    /// SRV priority (lower is preferred: only the lowest group with a serving member takes
    /// traffic); 0 for every other backend.
    pub priority: u16,
}

/// Where a backend came from (`/status`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSource {
    /// A `[[pool.NAME.backend]]` table.
    Static,
    /// An answer of `[pool.NAME.discover]` (its id is `IP:PORT`).
    Dns,
}

impl BackendSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendSource::Static => "static",
            BackendSource::Dns => "dns",
        }
    }
}

/// What `[pool.NAME.discover]` looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverName {
    /// `dns = "HOST:PORT"`: A and AAAA records of `host`, each address with `port`.
    Dns { host: String, port: u16 },
    /// `srv = "_SERVICE._PROTO.NAME"`: target, port, weight and priority from the records.
    Srv(String),
}

impl std::fmt::Display for DiscoverName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverName::Dns { host, port } if host.contains(':') => {
                write!(f, "dns [{host}]:{port}")
            }
            DiscoverName::Dns { host, port } => write!(f, "dns {host}:{port}"),
            DiscoverName::Srv(name) => write!(f, "srv {name}"),
        }
    }
}

/// `[pool.NAME.discover]` (DESIGN.md §22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOpts {
    pub name: DiscoverName,
    /// How often the name is resolved again (a shorter record TTL shortens it, never below
    /// [`DiscoverOpts::MIN_INTERVAL`]).
    pub interval: Duration,
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    /// The weight of each A/AAAA address (SRV records carry their own).
    pub weight: u32,
}

impl DiscoverOpts {
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub policy: Policy,
    /// What the pool's backends speak (DESIGN.md §21).
    pub protocol: Protocol,
    /// Connect failures retried on another backend.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Time to wait for the upstream's response (header and between body reads).
    pub read_timeout: Duration,
    /// Largest request body accepted, in bytes (413 beyond); `None`: no limit.
    pub max_request_body: Option<u64>,
    /// When no backend is eligible, send to all configured backends instead of answering 503.
    pub fail_open: bool,
    /// Used by `cookie` pools and by `hash` pools with `pin = true`.
    pub cookie: CookieOpts,
    /// Present exactly when `policy == Hash`.
    pub hash: Option<HashOpts>,
    /// `None`: no active checks (and no passive marking, which needs checks to recover).
    pub health: Option<HealthOpts>,
    /// `None`: no outlier ejection (DESIGN.md §13).
    pub outlier: Option<OutlierOpts>,
    /// A backend that becomes eligible ramps from 10 % to its full weight over this.
    pub slow_start: Option<Duration>,
    /// `None`: no circuit breaker (DESIGN.md §13).
    pub circuit_breaker: Option<BreakerOpts>,
    /// `None`: plain HTTP to the backends.
    pub tls: Option<UpstreamTls>,
    /// `None`: only the backends written in the file (DESIGN.md §22).
    pub discover: Option<DiscoverOpts>,
    /// The request header that tells a moved session's new home where it came from
    /// (DESIGN.md §25); `None`: not sent. Default [`HANDOFF_HEADER`] on pools that keep
    /// sessions.
    pub handoff_header: Option<HandoffHeader>,
    /// The file's backends first, then the discovered ones (sorted by id) once merged in by the
    /// control plane: a freshly loaded `Config` holds only the file's.
    pub backends: Vec<BackendConf>,
}

/// `[pool.NAME.tls]`: TLS to the pool's backends (DESIGN.md §17); every file already read and
/// checked.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The SNI sent and the name the certificate must be valid for; `None`: no SNI is sent and
    /// the certificate must be valid for the backend's IP address.
    pub sni: Option<String>,
    /// `false`: any certificate is accepted.
    pub verify: bool,
    /// Trust anchors that replace the system roots.
    pub ca: Option<CaBundle>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<CertPair>,
}

/// A PEM bundle of CA certificates, read and parsed during validation.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The circuit breaker of a pool (DESIGN.md §13): a cap on each backend's requests in flight,
/// and a FIFO queue for the requests that find their backend full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpts {
    /// Requests in flight per backend (at least 1).
    pub max_in_flight: u32,
    /// Waiters in the pool's queue (0: no queue, a full backend refuses at once).
    pub max_queue: usize,
    /// How long a request may wait (greater than zero).
    pub queue_timeout: Duration,
}

/// `[jwt.NAME]`: JWT validation (DESIGN.md §15).
#[derive(Debug, Clone)]
pub struct Jwt {
    pub name: String,
    pub from: TokenFrom,
    pub keys: JwtKeys,
    /// Allowed algorithms; never empty, never `none`, each usable with the key source.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// `iss` must equal it.
    pub issuer: Option<String>,
    /// `aud` must contain one of them (empty: not checked).
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 60 s), whole seconds.
    pub leeway: Duration,
    /// (claim, lower-cased header name): copied into the upstream request.
    pub forward_claims: Vec<(String, String)>,
    /// Every claim tether reads from this jwt's tokens: the `forward_claims` and the `jwt:CLAIM`
    /// keys of the pools its routes reach (a new `jwt:` key user adds its claims here).
    pub claims: Vec<String>,
}

/// Where the token is (`from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// Lower-cased header name; `Bearer <token>` (for `authorization`, required).
    Header(String),
    Cookie(String),
}

/// The key source of a `[jwt.NAME]`.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// `key_file`, `secret_file` or `jwks_file`: read and parsed during validation.
    Static(std::sync::Arc<crate::config::keys::KeySet>),
    /// `jwks_url`, fetched at run time every `refresh`.
    Url { url: String, refresh: Duration },
}

/// Outlier ejection (DESIGN.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierOpts {
    /// 5xx responses in a row that eject a backend (0: off).
    pub consecutive_5xx: u32,
    /// Connection failures or upstream timeouts in a row that eject it (0: off).
    pub consecutive_failures: u32,
    /// The n-th ejection in a row lasts n × this, at most `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share (percent, rounded down) of the pool is ejected at once; one backend
    /// always stays in.
    pub max_ejected_percent: u32,
}

/// The default name of the hand-off header (`[pool.NAME.affinity] handoff_header`).
pub const HANDOFF_HEADER: &str = "Tether-Session-From";

/// The hand-off header's name as written, and lower-cased (how edit lists drop fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffHeader {
    pub name: String,
    pub lower: String,
}

impl HandoffHeader {
    pub fn new(name: &str) -> HandoffHeader {
        HandoffHeader {
            name: name.to_owned(),
            lower: name.to_ascii_lowercase(),
        }
    }
}

impl Pool {
    /// Whether requests to this pool carry and receive the affinity cookie.
    pub fn uses_cookie(&self) -> bool {
        self.policy == Policy::Cookie || self.hash.as_ref().is_some_and(|h| h.pin)
    }
}

/// Lower-case hex SHA-256 of a config file's bytes (`Source::hash`; the watcher compares it).
pub fn content_hash(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
