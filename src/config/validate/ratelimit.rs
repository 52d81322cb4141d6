//! `[rate_limit.NAME]`, `[redis]` and a route's `rate_limits` (DESIGN.md §14).

use super::*;
use crate::config::{LimitStore, OnStoreError, RateLimit, RedisConf, RedisTls};

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
            _ => {
                let message = if n < 1 {
                    format!("must be at least 1 (the {what} of a limit)")
                } else {
                    format!("must be between 1 and {} (the {what} of a limit)", u32::MAX)
                };
                self.error(path, Some(n.to_string()), message);
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
        let tls = self.redis_tls(
            &p,
            r,
            r.url.as_deref().is_some_and(|u| u.starts_with("rediss://")),
        );
        RedisConf { url, timeout, tls }
    }

    /// `ca_file`, `cert` and `key` of `[redis]`: PEM files read and checked now, for a
    /// `rediss://` URL only; `cert` and `key` both or neither.
    fn redis_tls(&mut self, p: &KeyPath, r: &file::Redis, tls: bool) -> RedisTls {
        let mut out = RedisTls::default();
        let given = [("ca_file", &r.ca_file), ("cert", &r.cert), ("key", &r.key)];
        if !tls {
            for (k, v) in given {
                if let Some(v) = v {
                    self.error(
                        &p.key(k),
                        quoted(v),
                        "only with a rediss:// url (TLS to Redis)",
                    );
                }
            }
            return out;
        }
        // Checked like every other PEM file of the config; kept as PEM, the redis client's form.
        let mut certs = |v: &str, kp: KeyPath| {
            let (file, bytes) = self.read_file(&kp, v)?;
            self.parse_chain(&kp, v, &file, &bytes).map(|_| bytes)
        };
        if let Some(v) = &r.ca_file {
            out.ca = certs(v, p.key("ca_file"));
        }
        match (&r.cert, &r.key) {
            (Some(c), Some(k)) => {
                let cert = certs(c, p.key("cert"));
                let kp = p.key("key");
                let key = self
                    .read_file(&kp, k)
                    .and_then(|(file, bytes)| self.parse_key(&kp, k, &file, &bytes).map(|_| bytes));
                if let (Some(cert), Some(key)) = (cert, key) {
                    out.client = Some((cert, key));
                }
            }
            (Some(c), None) => self.error(&p.key("cert"), quoted(c), "needs key as well"),
            (None, Some(k)) => self.error(&p.key("key"), quoted(k), "needs cert as well"),
            (None, None) => {}
        }
        out
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

/// A `redis://` or `rediss://` URL the redis client accepts.
fn redis_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(
            "must be a redis:// URL (rediss:// for TLS), e.g. \"redis://127.0.0.1:6379/0\""
                .to_owned(),
        );
    }
    if url.contains("#insecure") {
        return Err(
            "#insecure (no certificate check) is not supported: give the server's CA as ca_file"
                .to_owned(),
        );
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("invalid redis URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(route_limits: &str, rest: &str) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[route]]\npool = \"web\"\n{route_limits}\n\
             [pool.web]\npolicy = \"round_robin\"\n[[pool.web.backend]]\nid = \"w\"\naddr = \"10.0.0.1:80\"\n{rest}"
        )
    }

    fn ok(t: &str) -> Config {
        parse(t, None).unwrap_or_else(|e| panic!("expected valid, got:\n{e}"))
    }

    fn errs(t: &str) -> Vec<String> {
        match parse(t, None) {
            Ok(_) => panic!("expected errors for:\n{t}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[track_caller]
    fn has(errors: &[String], needles: &[&str]) {
        assert!(
            errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
            "no error contains {needles:?}; errors:\n{}",
            errors.join("\n")
        );
    }

    #[test]
    fn defaults_and_every_key() {
        let c = ok(&text(
            "rate_limits = [\"b\", \"a\"]",
            "[rate_limit.b]\nrate = 5\n\
             [rate_limit.a]\nkey = \"cookie:sid\"\nrate = 100\nper = \"1m\"\nburst = 200\nstore = \"redis\"\non_store_error = \"deny\"\n\
             [redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
        ));
        // Sorted by name; the route keeps its own order.
        assert_eq!(c.routes[0].rate_limits, vec![1, 0]);
        let b = &c.rate_limits[1];
        assert_eq!(b.name, "b");
        assert_eq!(b.key, KeySpec::SourceIp);
        assert_eq!((b.rate, b.per, b.burst), (5, DEFAULT_PER, 5));
        assert_eq!(b.store, LimitStore::Local);
        let a = &c.rate_limits[0];
        assert_eq!(a.key, KeySpec::Cookie("sid".into()));
        assert_eq!(
            (a.rate, a.per, a.burst),
            (100, Duration::from_secs(60), 200)
        );
        assert_eq!(a.store, LimitStore::Redis(OnStoreError::Deny));
        let r = c.redis.expect("[redis]");
        assert_eq!(r.url, "redis://127.0.0.1:6379/0");
        assert_eq!(r.timeout, DEFAULT_REDIS_TIMEOUT);
        // on_store_error defaults to local; a route without rate_limits has none.
        let c = ok(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\nurl = \"redis://h:1\"\ntimeout = \"5ms\"\n",
        ));
        assert_eq!(
            c.rate_limits[0].store,
            LimitStore::Redis(OnStoreError::Local)
        );
        assert!(c.routes[0].rate_limits.is_empty());
        assert_eq!(c.redis.unwrap().timeout, Duration::from_millis(5));
    }

    #[test]
    fn every_mistake_is_reported_with_path_value_and_line() {
        let e = errs(&text(
            "rate_limits = [\"a\", \"a\", \"nope\"]",
            "[rate_limit.a]\nrate = -3\nburst = 0\nkey = \"header:\"\nper = 5\nstore = \"memcached\"\n\
             [rate_limit.b]\nstore = \"redis\"\non_store_error = \"maybe\"\nrat = 1\n\
             [redis]\nurl = \"http://127.0.0.1:6379\"\ntimeout = \"0ms\"\n",
        ));
        has(&e, &["route[0].rate_limits[1] = \"a\"", "listed twice"]);
        has(
            &e,
            &[
                "route[0].rate_limits[2] = \"nope\"",
                "rate limits are: a, b",
            ],
        );
        has(&e, &["rate_limit.a.rate = -3 (line", "must be at least 1"]);
        has(&e, &["rate_limit.a.burst = 0", "must be at least 1"]);
        has(&e, &["rate_limit.a.key = \"header:\""]);
        has(&e, &["rate_limit.a.per = 5", "unit"]);
        has(
            &e,
            &[
                "rate_limit.a.store = \"memcached\"",
                "\"local\" or \"redis\"",
            ],
        );
        // The typo `rat` is reported with a suggestion, not again as a missing `rate`.
        has(&e, &["rate_limit.b.rat", "did you mean \"rate\""]);
        let missing = errs(&text("", "[rate_limit.b]\nburst = 2\n"));
        has(&missing, &["rate_limit.b.rate", "missing required key"]);
        has(
            &e,
            &[
                "rate_limit.b.on_store_error = \"maybe\"",
                "\"local\", \"allow\" or \"deny\"",
            ],
        );
        has(&e, &["rate_limit.b.rat"]);
        has(
            &e,
            &["redis.url = \"http://127.0.0.1:6379\"", "redis:// URL"],
        );
        has(&e, &["redis.timeout = \"0ms\"", "greater than zero"]);
        let e = errs(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\ntimeout = \"1s\"\n",
        ));
        has(&e, &["redis.url", "missing required key"]);
        // TLS: rediss:// with the system roots, or a CA file (and a client certificate).
        let c = ok(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\nurl = \"rediss://h:1\"\n",
        ));
        assert_eq!(c.redis.unwrap().tls, RedisTls::default());
        let e = errs(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\nurl = \"rediss://h:1/#insecure\"\n",
        ));
        has(&e, &["redis.url", "#insecure", "not supported"]);
        let e = errs(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\nurl = \"redis://h:1\"\nca_file = \"ca.pem\"\n",
        ));
        has(
            &e,
            &["redis.ca_file = \"ca.pem\"", "only with a rediss:// url"],
        );
        let e = errs(&text(
            "",
            "[rate_limit.a]\nrate = 1\nstore = \"redis\"\n[redis]\nurl = \"rediss://h:1\"\ncert = \"c.pem\"\nca_file = \"/nonexistent/ca.pem\"\n",
        ));
        has(&e, &["redis.cert = \"c.pem\"", "needs key as well"]);
        has(&e, &["redis.ca_file", "cannot read /nonexistent/ca.pem"]);
        let e = errs(&text("rate_limits = [\"a\"]", ""));
        has(
            &e,
            &[
                "route[0].rate_limits[0] = \"a\" (line 5)",
                "no [rate_limit.NAME] is defined",
            ],
        );
        let e = errs(&text("", "[rate_limit.a]\nrate = 4294967296\n"));
        has(
            &e,
            &["rate_limit.a.rate = 4294967296", "between 1 and 4294967295"],
        );
    }
}
