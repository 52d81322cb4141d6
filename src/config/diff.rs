//! The difference between two configurations, for the one-line reload log and `tether check
//! --against`: pools and backends added, removed or changed, routes, the gateway tables
//! (`[rate_limit.NAME]`, `[jwt.NAME]`, a key file by its content) and anything else.

use crate::config::{self, Config};

/// What a successful install changed, for the one-line reload log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub backends_changed: Vec<String>,
    pub routes_changed: bool,
    /// `[rate_limit.NAME]` and `[jwt.NAME]` tables added, removed or changed (a key file's
    /// content included), as `rate_limit.NAME` / `jwt.NAME`.
    pub gateway_changed: Vec<String>,
    /// Anything else differs (server, log, affinity, limits, TLS, a route's or pool's other keys).
    pub other_changed: bool,
}

impl Diff {
    pub fn between(old: &Config, new: &Config) -> Diff {
        let mut d = Diff::default();
        for p in &new.pools {
            match old.pools.iter().find(|o| o.name == p.name) {
                None => d.pools_added.push(p.name.clone()),
                Some(o) => {
                    for b in &p.backends {
                        match o.backends.iter().find(|ob| ob.id == b.id) {
                            None => d.backends_added.push(format!("{}/{}", p.name, b.id)),
                            Some(ob)
                                if ob.addr != b.addr
                                    || ob.weight != b.weight
                                    || ob.priority != b.priority =>
                            {
                                d.backends_changed.push(format!("{}/{}", p.name, b.id))
                            }
                            Some(_) => {}
                        }
                    }
                    for ob in &o.backends {
                        if !p.backends.iter().any(|b| b.id == ob.id) {
                            d.backends_removed.push(format!("{}/{}", p.name, ob.id));
                        }
                    }
                }
            }
        }
        for o in &old.pools {
            if !new.pools.iter().any(|p| p.name == o.name) {
                d.pools_removed.push(o.name.clone());
            }
        }
        let key = |c: &Config| {
            c.routes
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.path_prefix.clone(),
                        c.pools[r.pool].name.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        d.routes_changed = key(old) != key(new);
        let mut named: Vec<(String, String)> = Vec::new();
        let mut both = |section: &str, a: Vec<(String, String)>, b: Vec<(String, String)>| {
            for (name, fp) in &b {
                if a.iter().all(|(n, f)| n != name || f != fp) {
                    named.push((section.to_owned(), name.clone()));
                }
            }
            for (name, _) in &a {
                if !b.iter().any(|(n, _)| n == name) {
                    named.push((section.to_owned(), name.clone()));
                }
            }
        };
        let limits = |c: &Config| {
            c.rate_limits
                .iter()
                .map(|l| (l.name.clone(), format!("{l:?}")))
                .collect()
        };
        both("rate_limit", limits(old), limits(new));
        let jwts = |c: &Config| {
            c.jwts
                .iter()
                .map(|j| (j.name.clone(), jwt_fingerprint(j)))
                .collect()
        };
        both("jwt", jwts(old), jwts(new));
        d.gateway_changed = named.into_iter().map(|(s, n)| format!("{s}.{n}")).collect();
        // Everything else, compared by its debug form with the parts above (and the source)
        // left out: only a yes/no for the log line.
        let rest = |c: &Config| {
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                c.server, c.log, c.affinity, c.routes, c.pools, c.redis
            )
        };
        d.other_changed = !d.routes_changed
            && d.pools_added.is_empty()
            && d.pools_removed.is_empty()
            && d.backends_added.is_empty()
            && d.backends_removed.is_empty()
            && d.backends_changed.is_empty()
            && rest(old) != rest(new);
        d
    }
}

/// What a `[jwt.NAME]` is, for comparing two configs: its settings, and its keys by the content
/// hash of their file (or their URL).
fn jwt_fingerprint(j: &config::Jwt) -> String {
    let keys = match &j.keys {
        config::JwtKeys::Static(set) => format!("file {}", set.source_hash),
        config::JwtKeys::Url { url, refresh } => format!("url {url} every {refresh:?}"),
    };
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{keys}",
        j.from, j.algorithms, j.issuer, j.audience, j.leeway, j.forward_claims, j.claims
    )
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists = [
            ("pools added", &self.pools_added),
            ("pools removed", &self.pools_removed),
            ("backends added", &self.backends_added),
            ("backends removed", &self.backends_removed),
            ("backends changed", &self.backends_changed),
        ];
        let mut parts: Vec<String> = lists
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(label, v)| format!("{label} [{}]", v.join(", ")))
            .collect();
        if self.routes_changed {
            parts.push("routes changed".into());
        }
        if !self.gateway_changed.is_empty() {
            parts.push(format!("changed [{}]", self.gateway_changed.join(", ")));
        }
        if parts.is_empty() {
            f.write_str(if self.other_changed {
                "no routing changes; other settings changed"
            } else {
                "no routing changes"
            })
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(dir: &std::path::Path, limit_rate: u32, level: &str) -> Config {
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "off"
[log]
level = "{level}"
[rate_limit.per_user]
key = "header:X-User"
rate = {limit_rate}
[jwt.users]
secret_file = "{}"
algorithms = ["HS256"]
[[route]]
pool = "p"
jwt = "users"
rate_limits = ["per_user"]
[pool.p]
policy = "round_robin"
[[pool.p.backend]]
id = "a"
addr = "127.0.0.1:1"
"#,
            dir.join("secret").display()
        );
        config::parse(&text, None).expect("valid test config")
    }

    /// The reload summary names what changed beyond routing: a rate limit, a jwt's key file
    /// (by its content), other settings.
    #[test]
    fn the_reload_summary_names_gateway_and_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "first-secret").unwrap();
        let base = conf(dir.path(), 10, "info");
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "info")).to_string(),
            "no routing changes"
        );
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 20, "info")).to_string(),
            "changed [rate_limit.per_user]"
        );
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "debug")).to_string(),
            "no routing changes; other settings changed"
        );
        std::fs::write(dir.path().join("secret"), "second-secret").unwrap();
        assert_eq!(
            Diff::between(&base, &conf(dir.path(), 10, "info")).to_string(),
            "changed [jwt.users]"
        );
    }
}
