//! The file schema (DESIGN.md §3): serde structs mirroring the TOML, field names the TOML keys.
//! Nearly every field is an `Option` (and numbers are `i64`) so that a missing key or an
//! out-of-range number becomes a validation error, collected with all the others, rather than a
//! serde error that stops the parse.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

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
    pub max_concurrent_streams: Option<i64>,
    pub h2c: Option<bool>,
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
    pub protocol: Option<String>,
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
    pub discover: Option<Discover>,
    pub affinity: Option<PoolAffinity>,
    pub backend: Option<Vec<Backend>>,
}

/// `[pool.NAME.affinity]`: what a moved session's new home is told (DESIGN.md §25).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PoolAffinity {
    pub handoff_header: Option<BoolOrText>,
}

/// `true`, `false` or a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum BoolOrText {
    Bool(bool),
    Text(String),
}

/// `[pool.NAME.discover]`: backends found through DNS (DESIGN.md §22).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Discover {
    pub dns: Option<String>,
    pub srv: Option<String>,
    pub interval: Option<RawDuration>,
    pub resolvers: Option<Vec<String>>,
    pub weight: Option<i64>,
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
    pub kind: Option<String>,
    pub grpc_service: Option<String>,
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
