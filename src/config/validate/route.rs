//! `[[route]]`: host and path matching, cross-references to pools, shadowed routes.

use super::*;

impl Cx<'_> {
    pub(super) fn routes(
        &mut self,
        routes: &[file::Route],
        pools: &[&str],
        limits: &[&str],
        jwts: &[&str],
    ) -> Vec<Route> {
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
            let host = r
                .host
                .as_deref()
                .and_then(|h| self.checked(&kp.key("host"), h, host_match(h)));
            let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
            let prefix_ok = self
                .checked(
                    &kp.key("path_prefix"),
                    &path_prefix,
                    check_path(&path_prefix),
                )
                .is_some();
            let pool =
                match self.required(&kp.key("pool"), r.pool.as_deref(), "the pool to send to") {
                    None => None,
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
            let rate_limits = self.route_limits(&kp, r.rate_limits.as_deref(), limits);
            let jwt = r.jwt.as_deref().and_then(|name| {
                let index = jwts.iter().position(|j| *j == name);
                if index.is_none() {
                    let message = if jwts.is_empty() {
                        "no such jwt; no [jwt.NAME] is defined".to_owned()
                    } else {
                        format!("no such jwt; jwts are: {}", jwts.join(", "))
                    };
                    self.error(&kp.key("jwt"), quoted(name), message);
                }
                index
            });
            if let Some(pool) = pool {
                out.push(Route {
                    name,
                    host,
                    path_prefix,
                    pool,
                    rate_limits,
                    jwt,
                });
            }
        }
        out
    }
}
