//! `[pool.NAME]` and its tables: policy, cookie, hash, health, outlier, backends (`discover`
//! is in `discover.rs`).

use super::*;

impl Cx<'_> {
    pub(super) fn pool(&mut self, name: &str, p: &file::Pool, has_secret: bool) -> Pool {
        let kp = KeyPath::root().key("pool").key(name);
        if !is_pool_name(name) {
            self.error(
                &kp,
                None,
                "pool name must be letters, digits, '_' or '-' ([A-Za-z0-9_-]+)",
            );
        }

        let policy_kp = kp.key("policy");
        let policy: Option<Policy> = self.required_named(&policy_kp, p.policy.as_deref());

        let retries = self.int(&kp.key("retries"), p.retries, 1u32, 0..=10);
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
                let other = other.as_str();
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

        let protocol_kp = kp.key("protocol");
        let protocol = match p.protocol.as_deref() {
            None => Some(Protocol::Http1),
            Some(text) => self.parse_named::<Protocol>(&protocol_kp, text),
        };
        let health = p
            .health
            .as_ref()
            .map(|h| self.health(&kp.key("health"), h, protocol));
        let outlier = p
            .outlier
            .as_ref()
            .map(|o| self.outlier(&kp.key("outlier"), o));
        let circuit_breaker = p
            .circuit_breaker
            .as_ref()
            .map(|c| self.circuit_breaker(&kp.key("circuit_breaker"), c));
        let slow_start = p.slow_start.as_ref().map(|raw| {
            self.duration(
                &kp.key("slow_start"),
                Some(raw),
                Duration::from_secs(30),
                true,
            )
        });

        let tls = p
            .tls
            .as_ref()
            .and_then(|t| self.upstream_tls(&kp.key("tls"), t));

        match (protocol, &p.tls) {
            (Some(Protocol::H2), None) => self.error(
                &protocol_kp,
                quoted("h2"),
                format!("needs a [{}] table (HTTP/2 over TLS, ALPN h2); use \"h2c\" for cleartext HTTP/2", kp.key("tls")),
            ),
            (Some(Protocol::H2c), Some(_)) => self.error(
                &protocol_kp,
                quoted("h2c"),
                format!("is cleartext HTTP/2, but [{}] is set: use \"h2\" for HTTP/2 over TLS", kp.key("tls")),
            ),
            _ => {}
        }

        let keeps_sessions = policy == Some(Policy::Cookie) || hash.as_ref().is_some_and(|h| h.pin);
        let handoff_header = self.handoff_header(
            &kp.key("affinity").key("handoff_header"),
            p.affinity.as_ref().and_then(|a| a.handoff_header.as_ref()),
            keeps_sessions,
        );

        let backend_kp = kp.key("backend");
        let mut backends = Vec::new();
        let list = p.backend.as_deref().unwrap_or_default();
        let discover = p
            .discover
            .as_ref()
            .and_then(|d| self.discover(&kp.key("discover"), d));
        if list.is_empty() && p.discover.is_none() {
            self.missing(
                &backend_kp,
                format!(
                    "a pool needs at least one [[{backend_kp}]] with id and addr, or a [{}] table",
                    kp.key("discover")
                ),
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
            protocol: protocol.unwrap_or_default(),
            retries,
            connect_timeout,
            read_timeout,
            max_request_body,
            fail_open: p.fail_open.unwrap_or(false),
            cookie,
            hash,
            health,
            outlier,
            slow_start,
            circuit_breaker,
            tls,
            discover,
            handoff_header,
            backends,
        }
    }

    /// `[pool.NAME.affinity] handoff_header`: on by default where sessions are kept; a name must
    /// be a header token that is not one tether already manages.
    fn handoff_header(
        &mut self,
        kp: &KeyPath,
        raw: Option<&file::BoolOrText>,
        keeps_sessions: bool,
    ) -> Option<HandoffHeader> {
        const NOT_STICKY: &str = "a moved session's header needs a pool that keeps sessions (policy = \"cookie\", or \"hash\" with pin = true)";
        match raw {
            None => keeps_sessions.then(|| HandoffHeader::new(HANDOFF_HEADER)),
            Some(file::BoolOrText::Bool(false)) => None,
            Some(file::BoolOrText::Bool(true)) => {
                if !keeps_sessions {
                    self.error(kp, Some("true".into()), NOT_STICKY);
                }
                Some(HandoffHeader::new(HANDOFF_HEADER))
            }
            Some(file::BoolOrText::Text(name)) => {
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
                let lower = name.to_ascii_lowercase();
                let taken = [
                    "host",
                    "cookie",
                    "connection",
                    "content-length",
                    "transfer-encoding",
                    "te",
                    "upgrade",
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "x-forwarded-host",
                    "x-request-id",
                    "traceparent",
                    "tracestate",
                ];
                if !token {
                    self.error(kp, quoted(name), "must be a header name (letters, digits and !#$%&'*+-.^_`|~), e.g. \"X-Session-From\"");
                } else if taken.contains(&lower.as_str()) {
                    self.error(
                        kp,
                        quoted(name),
                        "is a header tether or HTTP already uses; pick another name",
                    );
                } else if !keeps_sessions {
                    self.error(kp, quoted(name), NOT_STICKY);
                }
                Some(HandoffHeader::new(name))
            }
        }
    }

    /// `[pool.NAME.circuit_breaker]`: `max_in_flight` is required (a breaker without a cap
    /// would do nothing); the queue may be turned off with `max_queue = 0`.
    pub(super) fn circuit_breaker(
        &mut self,
        kp: &KeyPath,
        c: &file::CircuitBreaker,
    ) -> BreakerOpts {
        let cap_kp = kp.key("max_in_flight");
        if c.max_in_flight.is_none() {
            self.missing(
                &cap_kp,
                "required: the most requests in flight per backend, e.g. max_in_flight = 100",
            );
        }
        let max_in_flight = self.int(&cap_kp, c.max_in_flight, 1u32, 1..=1_000_000);
        let max_queue = self.int(&kp.key("max_queue"), c.max_queue, 1000usize, 0..=1_000_000);
        let queue_timeout = self.duration(
            &kp.key("queue_timeout"),
            c.queue_timeout.as_ref(),
            Duration::from_secs(1),
            true,
        );
        BreakerOpts {
            max_in_flight,
            max_queue,
            queue_timeout,
        }
    }

    pub(super) fn cookie(
        &mut self,
        kp: &KeyPath,
        pool: &str,
        c: Option<&file::Cookie>,
    ) -> CookieOpts {
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
        let same_site = self.named(&kp.key("same_site"), c.same_site.as_deref(), SameSite::Lax);
        if same_site == SameSite::None && !secure {
            self.error(
                &kp.key("same_site"),
                quoted("None"),
                "requires secure = true (browsers reject SameSite=None without Secure)",
            );
        }
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

    pub(super) fn hash(&mut self, kp: &KeyPath, h: &file::Hash) -> HashOpts {
        let key = self
            .required(&kp.key("key"), h.key.as_deref(), KEY_SPECS)
            .and_then(|text| self.key_spec(&kp.key("key"), text))
            .unwrap_or(KeySpec::Path);
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
        let mut balance_factor = h.balance_factor.unwrap_or(0.0);
        if balance_factor != 0.0 && !(balance_factor.is_finite() && balance_factor >= 1.0) {
            self.error(
                &kp.key("balance_factor"),
                Some(balance_factor.to_string()),
                "must be 0 (off) or at least 1.0 (each backend may take up to factor × the average in-flight load, e.g. 1.25)",
            );
            balance_factor = 0.0;
        }
        HashOpts {
            key,
            fallback,
            pin: h.pin.unwrap_or(false),
            balance_factor,
        }
    }

    pub(super) fn outlier(&mut self, kp: &KeyPath, o: &file::Outlier) -> OutlierOpts {
        let count = |v: &mut Self, key: &str, raw| v.int(&kp.key(key), raw, 5u32, 0..=10_000);
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
        let max_ejected_percent = self.int(
            &kp.key("max_ejected_percent"),
            o.max_ejected_percent,
            50u32,
            0..=100,
        );
        OutlierOpts {
            consecutive_5xx,
            consecutive_failures,
            base_ejection,
            max_ejection,
            max_ejected_percent,
        }
    }

    pub(super) fn health(
        &mut self,
        kp: &KeyPath,
        h: &file::Health,
        protocol: Option<Protocol>,
    ) -> HealthOpts {
        let grpc_service = self.grpc_check(kp, h, protocol);
        let path_kp = kp.key("path");
        let what = "the path to GET, e.g. path = \"/healthz\"";
        let path = match (&grpc_service, h.path.as_deref()) {
            (Some(_), None) => "/".to_owned(),
            (Some(_), Some(p)) => {
                self.error(
                    &path_kp,
                    quoted(p),
                    "is not used by a gRPC health check (grpc.health.v1.Health/Check); remove it",
                );
                p.to_owned()
            }
            (None, raw) => match self.required(&path_kp, raw, what) {
                None => "/".to_owned(),
                Some(p) => {
                    self.checked(&path_kp, p, check_path(p));
                    p.to_owned()
                }
            },
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
        let rise = self.int(&kp.key("rise"), h.rise, 2u32, 1..=1000);
        let fall = self.int(&kp.key("fall"), h.fall, 3u32, 1..=1000);
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
            rise,
            fall,
            expect,
            host: h.host.clone(),
            grpc_service,
        }
    }

    /// `kind` and `grpc_service` of `[pool.NAME.health]`: `Some(service)` for a gRPC check
    /// (`kind = "grpc"` alone checks the server's overall health, service `""`), which needs a
    /// pool that speaks HTTP/2 to its backends.
    fn grpc_check(
        &mut self,
        kp: &KeyPath,
        h: &file::Health,
        protocol: Option<Protocol>,
    ) -> Option<String> {
        let kind = match h.kind.as_deref() {
            None => None,
            Some("http") => Some(false),
            Some("grpc") => Some(true),
            Some(other) => {
                self.error(
                    &kp.key("kind"),
                    quoted(other),
                    "must be \"http\" or \"grpc\"",
                );
                None
            }
        };
        let service = match (kind, h.grpc_service.as_deref()) {
            (Some(false), Some(s)) => {
                self.error(
                    &kp.key("grpc_service"),
                    quoted(s),
                    "is only used with kind = \"grpc\" (this check is kind = \"http\")",
                );
                return None;
            }
            (_, Some(s)) => s.to_owned(),
            (Some(true), None) => String::new(),
            (_, None) => return None,
        };
        if service.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                &kp.key("grpc_service"),
                quoted(&service),
                "must be a gRPC service name such as \"shop.Cart\" (or \"\" for the whole server)",
            );
        }
        if protocol.is_some_and(|p| !p.is_h2()) {
            let at = if h.grpc_service.is_some() {
                kp.key("grpc_service")
            } else {
                kp.key("kind")
            };
            self.error(
                &at,
                None,
                "a gRPC health check needs a pool that speaks HTTP/2 to its backends: set protocol = \"h2c\" (or \"h2\" with [tls])",
            );
        }
        Some(service)
    }

    pub(super) fn backend(&mut self, kp: &KeyPath, b: &file::Backend) -> Option<BackendConf> {
        let id = match self.required(
            &kp.key("id"),
            b.id.as_deref(),
            "a stable name such as \"shop-1\"",
        ) {
            None => None,
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
        let addr = self
            .required(
                &kp.key("addr"),
                b.addr.as_deref(),
                "ip:port, e.g. \"10.0.0.11:8080\"",
            )
            .and_then(|text| self.addr(&kp.key("addr"), text, AddrUse::Backend));
        let weight = self.int(&kp.key("weight"), b.weight, 1u32, 1..=256);
        Some(BackendConf {
            id: id?,
            addr: addr?,
            weight,
            source: BackendSource::Static,
            priority: 0,
        })
    }
}
