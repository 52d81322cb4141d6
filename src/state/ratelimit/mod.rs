//! Rate limits (DESIGN.md §14): the limiters a snapshot's routes check, each with its bucket
//! store, and the rule by which they survive a reload.
//!
//! Owns: [`Limiter`] (one `[rate_limit.NAME]`: its GCRA, its local buckets, its Redis store and
//! `on_store_error`, its metric handles) and [`RateLimits`] (a snapshot's set). Must not touch:
//! requests (the `limit` stage extracts keys and answers), configuration parsing.
//!
//! Reload: a limiter whose name and parameters (key, rate, per, burst, store, on_store_error —
//! and for Redis limits the `[redis]` url and timeout) are unchanged is carried over whole into
//! the new snapshot, buckets included: an operator editing an unrelated pool resets nobody's
//! budget. A changed limit starts with full buckets. The Redis connection is carried over while
//! `[redis] url` is unchanged.

pub mod local;
pub mod redis;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::balance::gcra::Gcra;
use crate::config::{Config, LimitStore, OnStoreError, RateLimit};
use crate::state::metrics::Metrics;
use local::Local;
use redis::RedisStore;

/// Results of `tether_rate_limit_total`, in handle order.
pub const RESULTS: [&str; 3] = ["allowed", "limited", "no_key"];

/// What one limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused: the next request of this key would be allowed in this many nanoseconds.
    Limited {
        wait: u64,
    },
    /// The store failed and `on_store_error = "deny"`.
    Denied,
}

/// One `[rate_limit.NAME]`.
pub struct Limiter {
    pub name: Arc<str>,
    pub conf: RateLimit,
    pub gcra: Gcra,
    /// The buckets of a local limit, or the per-instance fallback buckets of a Redis limit with
    /// `on_store_error = "local"`.
    local: Local,
    redis: Option<RedisLimit>,
    pub metrics: LimitMetrics,
}

struct RedisLimit {
    store: Arc<RedisStore>,
    timeout: Duration,
    /// `tether:rl:<name>:` — every instance with the same config uses the same keys.
    prefix: Box<[u8]>,
    on_error: OnStoreError,
}

/// Pre-resolved handles (never a label lookup per request).
pub struct LimitMetrics {
    /// `tether_rate_limit_total`, indexed like [`RESULTS`].
    pub results: [IntCounter; 3],
    /// `tether_rate_limit_store_errors_total` (Redis limits only).
    pub store_errors: Option<IntCounter>,
}

/// Redis keys longer than this (a key from a header can be 64 KiB) are stored by their
/// SHA-256 instead, so a client cannot make Redis hold huge keys.
const MAX_RAW_KEY: usize = 128;

impl Limiter {
    fn new(conf: &RateLimit, m: &Metrics, redis: Option<(&Arc<RedisStore>, Duration)>) -> Limiter {
        let name: Arc<str> = conf.name.as_str().into();
        let redis = match (&conf.store, redis) {
            (LimitStore::Redis(on_error), Some((store, timeout))) => Some(RedisLimit {
                store: store.clone(),
                timeout,
                prefix: format!("tether:rl:{name}:").into_bytes().into(),
                on_error: *on_error,
            }),
            _ => None,
        };
        let metrics = LimitMetrics {
            results: RESULTS.map(|r| m.rate_limit.with_label_values(&[&name, r])),
            store_errors: redis
                .is_some()
                .then(|| m.rate_limit_store_errors.with_label_values(&[&name])),
        };
        Limiter {
            gcra: Gcra::new(conf.rate, conf.per, conf.burst),
            conf: conf.clone(),
            name,
            local: Local::new(),
            redis,
            metrics,
        }
    }

    /// Whether this limiter can serve as `conf` (with that Redis store and timeout) unchanged.
    fn same(&self, conf: &RateLimit, redis: Option<(&Arc<RedisStore>, Duration)>) -> bool {
        self.conf == *conf
            && match (&self.redis, redis) {
                (None, None) => true,
                (Some(r), Some((store, timeout))) => {
                    Arc::ptr_eq(&r.store, store) && r.timeout == timeout
                }
                _ => false,
            }
    }

    /// Decides one request whose key is `key` (bytes as the limit stage extracted them; `ip`
    /// tells that they are an address's octets, for a readable Redis key), and counts it.
    pub async fn check(&self, key: &[u8], ip: bool) -> Decision {
        let d = match &self.redis {
            None => self.check_local(key),
            Some(r) => self.check_redis(r, key, ip).await,
        };
        let i = match d {
            Decision::Allowed => 0,
            Decision::Limited { .. } | Decision::Denied => 1,
        };
        self.metrics.results[i].inc();
        d
    }

    /// A request without the key: not limited by this limit, counted as `no_key`.
    pub fn no_key(&self) {
        self.metrics.results[2].inc();
    }

    fn check_local(&self, key: &[u8]) -> Decision {
        match self.local.check(&self.gcra, self.local.hash(key), now()) {
            Ok(()) => Decision::Allowed,
            Err(wait) => Decision::Limited { wait },
        }
    }

    async fn check_redis(&self, r: &RedisLimit, key: &[u8], ip: bool) -> Decision {
        let mut k = Vec::with_capacity(r.prefix.len() + 64);
        k.extend_from_slice(&r.prefix);
        push_key(&mut k, key, ip);
        // Boxed: the Redis call's state (command, timer) is allocated only by requests that make
        // one, instead of enlarging every request's future.
        match Box::pin(r.store.check(&k, &self.gcra, r.timeout)).await {
            Ok(Ok(())) => Decision::Allowed,
            Ok(Err(wait)) => Decision::Limited { wait },
            Err(e) => {
                if let Some(c) = &self.metrics.store_errors {
                    c.inc();
                }
                tracing::debug!(limit = %self.name, "rate limit store error: {e}");
                match r.on_error {
                    OnStoreError::Allow => Decision::Allowed,
                    OnStoreError::Deny => Decision::Denied,
                    OnStoreError::Local => self.check_local(key),
                }
            }
        }
    }

    /// Local entries held (tests).
    pub fn local_entries(&self) -> usize {
        self.local.len()
    }
}

/// Appends the request key to a Redis key: an address as text, a short key as it is, a long
/// one as `#` and its SHA-256 in hex.
fn push_key(k: &mut Vec<u8>, key: &[u8], ip: bool) {
    use std::io::Write;
    use std::net::{Ipv4Addr, Ipv6Addr};
    if ip {
        if let Ok(v4) = <[u8; 4]>::try_from(key) {
            let _ = write!(k, "{}", Ipv4Addr::from(v4));
            return;
        }
        if let Ok(v6) = <[u8; 16]>::try_from(key) {
            let _ = write!(k, "{}", Ipv6Addr::from(v6));
            return;
        }
    }
    if key.len() <= MAX_RAW_KEY {
        k.extend_from_slice(key);
    } else {
        let d = ring::digest::digest(&ring::digest::SHA256, key);
        k.push(b'#');
        for b in d.as_ref() {
            let _ = write!(k, "{b:02x}");
        }
    }
}

/// Nanoseconds on a process-wide monotonic clock (local TATs are on it).
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // A fresh process starts at 1 s, so no real TAT is ever 0.
    epoch.elapsed().as_nanos() as u64 + 1_000_000_000
}

/// A snapshot's limiters, in `Config::rate_limits` order.
#[derive(Default)]
pub struct RateLimits {
    pub limiters: Vec<Arc<Limiter>>,
    redis: Option<Arc<RedisStore>>,
}

impl RateLimits {
    /// The limiters of `config`, carrying over from `prev` every limiter (with its buckets) and
    /// the Redis connection that did not change.
    pub fn build(config: &Config, m: &Metrics, prev: Option<&RateLimits>) -> RateLimits {
        let uses_redis = config
            .rate_limits
            .iter()
            .any(|l| matches!(l.store, LimitStore::Redis(_)));
        let redis = match (&config.redis, uses_redis) {
            (Some(rc), true) => Some(
                match prev
                    .and_then(|p| p.redis.as_ref())
                    .filter(|s| s.url == rc.url && s.tls == rc.tls)
                {
                    Some(s) => s.clone(),
                    None => RedisStore::start(rc),
                },
            ),
            _ => None,
        };
        let limiters = config
            .rate_limits
            .iter()
            .map(|conf| {
                let store = match (&conf.store, &redis, &config.redis) {
                    (LimitStore::Redis(_), Some(s), Some(rc)) => Some((s, rc.timeout)),
                    _ => None,
                };
                let old = prev
                    .and_then(|p| p.limiters.iter().find(|l| *l.name == *conf.name))
                    .filter(|l| l.same(conf, store));
                match old {
                    Some(l) => l.clone(),
                    None => Arc::new(Limiter::new(conf, m, store)),
                }
            })
            .collect();
        RateLimits { limiters, redis }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Limiter>> {
        self.limiters.iter().find(|l| &*l.name == name)
    }

    /// Removes the metric series of limits that `new` no longer has.
    pub fn forget_removed(&self, new: &RateLimits, m: &Metrics) {
        for l in &self.limiters {
            match new.get(&l.name) {
                None => {
                    for r in RESULTS {
                        let _ = m.rate_limit.remove_label_values(&[&l.name, r]);
                    }
                    let _ = m.rate_limit_store_errors.remove_label_values(&[&l.name]);
                }
                Some(n) if n.redis.is_none() && l.redis.is_some() => {
                    let _ = m.rate_limit_store_errors.remove_label_values(&[&l.name]);
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_readable_and_bounded() {
        let mut k = Vec::new();
        push_key(&mut k, &[10, 0, 0, 1], true);
        assert_eq!(k, b"10.0.0.1");
        k.clear();
        push_key(&mut k, &std::net::Ipv6Addr::LOCALHOST.octets(), true);
        assert_eq!(k, b"::1");
        k.clear();
        push_key(&mut k, b"alice", false);
        assert_eq!(k, b"alice");
        k.clear();
        push_key(&mut k, &[b'x'; 1000], false);
        assert_eq!(k.len(), 65);
        assert_eq!(k[0], b'#');
    }
}
