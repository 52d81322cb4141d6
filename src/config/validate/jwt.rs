//! `[jwt.NAME]` (DESIGN §15): where the token is, the key source (files are read and parsed
//! here), the algorithms each source can verify, issuer, audience, leeway, forwarded claims; and
//! the `jwt:CLAIM` keys that need a validated token on every route to their pool.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::*;
use crate::config::keys::KeySet;
use crate::config::{Jwt, JwtKeys, RateLimit, TokenFrom};

const ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA";
const KEY_SOURCES: [&str; 4] = ["jwks_file", "jwks_url", "key_file", "secret_file"];
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
const MAX_LEEWAY: Duration = Duration::from_secs(3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);

/// Request headers tether writes itself or that frame the message: a claim never replaces them.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "cookie",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

impl Cx<'_> {
    pub(super) fn jwt(&mut self, name: &str, j: &file::Jwt) -> Jwt {
        crate::config::crypto::install();
        let kp = KeyPath::root().key("jwt").key(name);
        if !is_pool_name(name) {
            self.error(
                &kp,
                quoted(name),
                "a jwt name may only contain letters, digits, '_' and '-'",
            );
        }
        let from = self.token_from(&kp.key("from"), j.from.as_deref());
        let algorithms = self.algorithms(&kp.key("algorithms"), j.algorithms.as_deref());
        let keys = self.jwt_key_source(&kp, j, &algorithms);
        let issuer = match j.issuer.as_deref() {
            Some("") => {
                self.error(
                    &kp.key("issuer"),
                    quoted(""),
                    "must not be empty (omit issuer to accept any)",
                );
                None
            }
            other => other.map(str::to_owned),
        };
        let audience = match &j.audience {
            None => Vec::new(),
            Some(list) if list.is_empty() => {
                self.error(
                    &kp.key("audience"),
                    Some("[]".into()),
                    "must list at least one audience (omit audience to accept any)",
                );
                Vec::new()
            }
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    if a.is_empty() {
                        self.error(&kp.key("audience").index(i), quoted(a), "must not be empty");
                    }
                }
                list.clone()
            }
        };
        let leeway_kp = kp.key("leeway");
        let mut leeway = self.duration(&leeway_kp, j.leeway.as_ref(), DEFAULT_LEEWAY, false);
        if leeway > MAX_LEEWAY {
            self.error(
                &leeway_kp,
                j.leeway.as_ref().map(raw_duration_text),
                "must be at most 1h",
            );
            leeway = DEFAULT_LEEWAY;
        }
        let forward_claims = self.forward_claims(&kp.key("forward_claims"), &j.forward_claims);
        let mut claims: Vec<String> = Vec::new();
        for (c, _) in &forward_claims {
            if !claims.contains(c) {
                claims.push(c.clone());
            }
        }
        Jwt {
            name: name.to_owned(),
            from,
            keys: keys.unwrap_or_else(|| JwtKeys::Static(Default::default())),
            algorithms,
            issuer,
            audience,
            leeway: Duration::from_secs(leeway.as_secs()),
            forward_claims,
            claims,
        }
    }

    fn token_from(&mut self, path: &KeyPath, raw: Option<&str>) -> TokenFrom {
        let default = TokenFrom::Header("authorization".into());
        let Some(text) = raw else {
            return default;
        };
        match text.split_once(':') {
            Some(("header", h)) if is_token(h) => TokenFrom::Header(h.to_ascii_lowercase()),
            Some(("cookie", c)) if is_token(c) => TokenFrom::Cookie(c.to_owned()),
            _ => {
                self.error(
                    path,
                    quoted(text),
                    "must be header:NAME or cookie:NAME, e.g. \"header:Authorization\"",
                );
                default
            }
        }
    }

    fn algorithms(&mut self, path: &KeyPath, raw: Option<&[String]>) -> Vec<Algorithm> {
        let mut out = Vec::new();
        match raw {
            None => self.missing(
                path,
                format!("missing required key: the algorithms to accept, e.g. [\"RS256\"] ({ALGORITHMS})"),
            ),
            Some([]) => self.error(path, Some("[]".into()), "must list at least one algorithm"),
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    if a.eq_ignore_ascii_case("none") {
                        self.error(
                            &path.index(i),
                            quoted(a),
                            "\"none\" (unsigned tokens) is never accepted",
                        );
                        continue;
                    }
                    match Algorithm::from_str(a) {
                        Ok(alg) if !out.contains(&alg) => out.push(alg),
                        Ok(_) => self.error(&path.index(i), quoted(a), "listed twice"),
                        Err(_) => self.error(&path.index(i), quoted(a), format!("must be {ALGORITHMS}")),
                    }
                }
            }
        }
        out
    }

    /// Exactly one key source, read and checked against the algorithms.
    fn jwt_key_source(
        &mut self,
        kp: &KeyPath,
        j: &file::Jwt,
        algorithms: &[Algorithm],
    ) -> Option<JwtKeys> {
        let values = [&j.jwks_file, &j.jwks_url, &j.key_file, &j.secret_file];
        let given: Vec<(&str, &str)> = KEY_SOURCES
            .iter()
            .zip(values)
            .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
            .collect();
        let refresh_kp = kp.key("jwks_refresh");
        if j.jwks_refresh.is_some() && j.jwks_url.is_none() {
            self.error(
                &refresh_kp,
                j.jwks_refresh.as_ref().map(raw_duration_text),
                "only used with jwks_url",
            );
        }
        let refresh = self.duration(&refresh_kp, j.jwks_refresh.as_ref(), DEFAULT_REFRESH, true);
        if refresh < Duration::from_secs(1) {
            self.error(
                &refresh_kp,
                j.jwks_refresh.as_ref().map(raw_duration_text),
                "must be at least 1s",
            );
        }
        let (source, value) = match given.as_slice() {
            [] => {
                self.missing(
                    kp,
                    "needs one key source: jwks_file, jwks_url, key_file or secret_file",
                );
                return None;
            }
            [one] => *one,
            [_, (second, value), ..] => {
                let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
                self.error(
                    &kp.key(second),
                    quoted(value),
                    format!("only one key source per jwt; set are: {}", names.join(", ")),
                );
                return None;
            }
        };
        let path = kp.key(source);
        let algs = kp.key("algorithms");
        // The path of an algorithm as written (its index among the strings, "none" included).
        let alg_path = |a: &Algorithm| {
            let i = j
                .algorithms
                .iter()
                .flatten()
                .position(|s| Algorithm::from_str(s).ok() == Some(*a))
                .unwrap_or(0);
            algs.index(i)
        };
        if source == "jwks_url" {
            let url = self.checked(&path, value, check_url(value))?;
            for a in algorithms {
                if a.family() == AlgorithmFamily::Hmac {
                    self.error(
                        &alg_path(a),
                        Some(format!("\"{a:?}\"")),
                        "a shared secret is never fetched over the network: HS* needs secret_file or jwks_file",
                    );
                }
            }
            return Some(JwtKeys::Url { url, refresh });
        }
        let (file, bytes) = self.read_file(&path, value)?;
        let parsed = match source {
            "secret_file" => KeySet::from_secret(&bytes),
            "key_file" => KeySet::from_pem(&bytes),
            _ => KeySet::from_jwks(&bytes).and_then(|(set, skipped)| {
                if set.keys.is_empty() {
                    Err(if skipped.is_empty() {
                        "has no keys".to_owned()
                    } else {
                        format!("has no usable signature key ({})", skipped.join("; "))
                    })
                } else {
                    Ok(set)
                }
            }),
        };
        let mut set = match parsed {
            Ok(s) => s,
            Err(e) => {
                self.error(&path, quoted(value), format!("{}: {e}", file.display()));
                return None;
            }
        };
        for a in algorithms {
            if !set.keys.iter().any(|k| k.allows(*a)) {
                let message = match source {
                    "secret_file" => "secret_file verifies HS256, HS384 and HS512 only; this algorithm needs key_file, jwks_file or jwks_url".to_owned(),
                    "key_file" => format!(
                        "the key in key_file verifies {} only",
                        names(&set.keys[0].algs)
                    ),
                    _ => "no key in jwks_file can verify it".to_owned(),
                };
                self.error(&alg_path(a), Some(format!("\"{a:?}\"")), message);
            }
        }
        set.source_hash = crate::config::content_hash(&bytes);
        Some(JwtKeys::Static(Arc::new(set)))
    }

    fn forward_claims(
        &mut self,
        kp: &KeyPath,
        raw: &Option<BTreeMap<String, String>>,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (claim, header) in raw.iter().flatten() {
            let path = kp.key(claim);
            let h = header.to_ascii_lowercase();
            if claim.is_empty() || claim.chars().any(char::is_control) {
                self.error(&path, quoted(header), "the claim name must not be empty");
            } else if !is_token(header) {
                self.error(
                    &path,
                    quoted(header),
                    "must be a header name, e.g. \"X-User-Id\"",
                );
            } else if RESERVED_HEADERS.contains(&h.as_str()) || h == "authorization" {
                self.error(
                    &path,
                    quoted(header),
                    "tether sets or frames this header itself; pick another name",
                );
            } else if out.iter().any(|(_, o)| *o == h) {
                self.error(
                    &path,
                    quoted(header),
                    "two claims are forwarded as this header",
                );
            } else {
                out.push((claim.clone(), h));
            }
        }
        out
    }

    /// A pool that hashes on `jwt:CLAIM` needs a validated token: every route to it must have a
    /// `jwt`. Also records the claims each jwt must keep.
    pub(super) fn jwt_keys_need_a_jwt(
        &mut self,
        f: &file::File,
        routes: &[Route],
        pools: &[Pool],
        limits: &[RateLimit],
        jwts: &mut [Jwt],
    ) {
        let claims_of = |p: &Pool| -> Vec<String> {
            let Some(h) = &p.hash else {
                return Vec::new();
            };
            let mut v = Vec::new();
            if let KeySpec::Jwt(c) = &h.key {
                v.push(c.clone());
            }
            if let Fallback::Key(KeySpec::Jwt(c)) = &h.fallback {
                v.push(c.clone());
            }
            v
        };
        let limit_claim = |l: &RateLimit| match &l.key {
            KeySpec::Jwt(c) => Some(c.clone()),
            _ => None,
        };
        for r in routes {
            let mut claims = claims_of(&pools[r.pool]);
            claims.extend(
                r.rate_limits
                    .iter()
                    .filter_map(|&i| limit_claim(&limits[i])),
            );
            if let Some(j) = r.jwt {
                for c in claims {
                    if !jwts[j].claims.contains(&c) {
                        jwts[j].claims.push(c);
                    }
                }
            }
        }
        let rp = KeyPath::root().key("route");
        for (i, r) in f.route.iter().enumerate() {
            let Some(pool_name) = r.pool.as_deref() else {
                continue;
            };
            let Some(pool) = pools.iter().find(|p| p.name == pool_name) else {
                continue;
            };
            if r.jwt.is_some() {
                continue;
            }
            for (k, name) in r.rate_limits.iter().flatten().enumerate() {
                let Some(c) = limits
                    .iter()
                    .find(|l| &l.name == name)
                    .and_then(limit_claim)
                else {
                    continue;
                };
                self.error(
                    &rp.index(i).key("rate_limits").index(k),
                    quoted(name),
                    format!(
                        "rate limit {name} is keyed on \"jwt:{c}\", which needs a validated token: add jwt = \"NAME\" to this route"
                    ),
                );
            }
            if let Some(c) = claims_of(pool).first() {
                self.error(
                    &rp.index(i).key("pool"),
                    quoted(pool_name),
                    format!(
                        "pool {pool_name} hashes on \"jwt:{c}\", which needs a validated token: add jwt = \"NAME\" to this route"
                    ),
                );
            }
        }
    }
}

fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn raw_duration_text(d: &RawDuration) -> String {
    match d {
        RawDuration::Text(t) => format!("{t:?}"),
        RawDuration::Number(n) => n.clone(),
    }
}

/// `http://` or `https://` with a host.
fn check_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text.parse().map_err(|e| {
        format!("not a URL: {e}; e.g. \"https://id.example.com/.well-known/jwks.json\"")
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    Ok(text.to_owned())
}
