//! `[rate_limit.NAME]`, `[redis]` and a route's `rate_limits` (DESIGN.md §14).

use super::*;
use crate::config::{LimitStore, OnStoreError, RateLimit, RedisConf};

const DEFAULT_PER: Duration = Duration::from_secs(1);
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

impl Cx<'_> {
    /// Every `[rate_limit.NAME]` (sorted by name) and `[redis]`.
    pub(super) fn rate_limits(
        &mut self,
        limits: &BTreeMap<String, file::RateLimit>,
        redis: Option<&file::Redis>,
    ) -> (Vec<RateLimit>, Option<RedisConf>) {
        let redis = redis.map(|r| self.redis(r));
        let out = limits
            .iter()
            .map(|(name, l)| self.rate_limit(name, l, redis.is_some()))
            .collect();
        (out, redis)
    }

    fn rate_limit(&mut self, name: &str, l: &file::RateLimit, has_redis: bool) -> RateLimit {
        let p = KeyPath::root().key("rate_limit").key(name);
        if name.is_empty() || name.chars().any(char::is_control) {
            self.error(
                &p,
                quoted(name),
                "a rate limit's name must be a non-empty label without control characters",
            );
        }
        let key = match l.key.as_deref() {
            None => KeySpec::SourceIp,
            Some(text) => self
                .key_spec(&p.key("key"), text)
                .unwrap_or(KeySpec::SourceIp),
        };
        let rate = match self.required(&p.key("rate"), l.rate.as_ref(), "rate (requests per `per`)")
        {
            None => 1,
            Some(&n) => self.positive(&p.key("rate"), n, "rate"),
        };
        let per = self.duration(&p.key("per"), l.per.as_ref(), DEFAULT_PER, true);
        let burst = match l.burst {
            None => rate,
            Some(n) => self.positive(&p.key("burst"), n, "burst"),
        };
        let on_error = l.on_store_error.as_deref().map(|text| {
            self.parse_named::<OnStoreError>(&p.key("on_store_error"), text)
                .unwrap_or(OnStoreError::Local)
        });
        let store = match l.store.as_deref() {
            None | Some("local") => {
                if let Some(text) = &l.on_store_error {
                    self.error(
                        &p.key("on_store_error"),
                        quoted(text),
                        "applies only to store = \"redis\" (this limit's store is \"local\")",
                    );
                }
                LimitStore::Local
            }
            Some("redis") => {
                if !has_redis {
                    self.error(
                        &p.key("store"),
                        quoted("redis"),
                        "a redis store without [redis]: add [redis] with url = \"redis://HOST:6379/0\"",
                    );
                }
                LimitStore::Redis(on_error.unwrap_or(OnStoreError::Local))
            }
            Some(other) => {
                self.error(
                    &p.key("store"),
                    quoted(other),
                    "must be \"local\" or \"redis\"",
                );
                LimitStore::Local
            }
        };
        RateLimit {
            name: name.to_owned(),
            key,
            rate,
            per,
            burst,
            store,
        }
    }

    /// A count of at least 1 (`rate`, `burst`).
    fn positive(&mut self, path: &KeyPath, n: i64, what: &str) -> u32 {
        match u32::try_from(n) {
            Ok(v) if v >= 1 => v,
            Ok(_) => {
                self.error(
                    path,
                    Some(n.to_string()),
                    format!("{what} must be at least 1 (to refuse every request, route nowhere)"),
                );
                1
            }
            Err(_) => {
                self.error(
                    path,
                    Some(n.to_string()),
                    format!("{what} must be between 1 and {}", u32::MAX),
                );
                1
            }
        }
    }

    fn redis(&mut self, r: &file::Redis) -> RedisConf {
        let p = KeyPath::root().key("redis");
        let url = match self.required(
            &p.key("url"),
            r.url.as_deref(),
            "url (\"redis://HOST:PORT/DB\")",
        ) {
            None => String::new(),
            Some(url) => {
                let ok = self.checked(&p.key("url"), url, redis_url(url));
                ok.map_or(String::new(), |()| url.to_owned())
            }
        };
        let timeout = self.duration(
            &p.key("timeout"),
            r.timeout.as_ref(),
            DEFAULT_REDIS_TIMEOUT,
            true,
        );
        RedisConf { url, timeout }
    }

    /// A route's `rate_limits`: indexes into the sorted `limits` names, in the route's order.
    pub(super) fn route_limits(
        &mut self,
        route: &KeyPath,
        names: Option<&[String]>,
        limits: &[&str],
    ) -> Vec<usize> {
        let p = route.key("rate_limits");
        let mut out = Vec::new();
        for (j, name) in names.unwrap_or_default().iter().enumerate() {
            match limits.iter().position(|l| l == name) {
                None => {
                    let message = if limits.is_empty() {
                        "no such rate limit; no [rate_limit.NAME] is defined".to_owned()
                    } else {
                        format!("no such rate limit; rate limits are: {}", limits.join(", "))
                    };
                    self.error(&p.index(j), quoted(name), message);
                }
                Some(i) if out.contains(&i) => {
                    self.error(&p.index(j), quoted(name), "listed twice");
                }
                Some(i) => out.push(i),
            }
        }
        out
    }
}

/// A `redis://` URL the redis client accepts.
fn redis_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") {
        return Err(if url.starts_with("rediss://") {
            "TLS to Redis (rediss://) is not supported yet: use redis://".to_owned()
        } else {
            "must be a redis:// URL, e.g. \"redis://127.0.0.1:6379/0\"".to_owned()
        });
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("invalid redis URL: {e}"))
}
