//! JWT validation (DESIGN.md §15): the per-`[jwt.NAME]` [`Verifier`] the authenticate stage calls,
//! the validated [`Claims`] later stages read (`jwt:CLAIM` keys, `forward_claims`), key sets
//! ([`keys`]) and the `jwks_url` fetcher ([`fetch`]).
//!
//! Owns: finding the token in a request, choosing keys by `kid` and algorithm, the checks (via
//! `jsonwebtoken`, on ring: [`provider`]) and what their failures are called. Must not touch:
//! responses or metrics' registration (the authenticate stage answers and counts); the request
//! path never does IO or takes a lock here: a `jwks_url` key set is one `ArcSwap` load.

pub mod fetch;
pub mod keys;
mod provider;

use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use pingora::http::RequestHeader;
use prometheus::IntCounter;

use crate::config::{Jwt as JwtConf, JwtKeys, TokenFrom};
pub use fetch::Remote;
pub use keys::{Key, KeySet};

/// Installs jsonwebtoken's crypto provider; idempotent. Every path that builds keys calls it.
pub fn init() {
    provider::install();
}

/// What the check of one request found (the `result` label of `tether_jwt_total`).
pub enum Outcome {
    Valid(Claims),
    /// No token: no `Authorization` header, one that is not `Bearer`, or no cookie.
    Missing,
    /// Malformed, badly signed, not yet valid, wrong issuer or audience, algorithm not listed,
    /// unknown key, empty Bearer value.
    Invalid,
    /// `exp` in the past beyond `leeway`.
    Expired,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Valid(_) => "valid",
            Outcome::Missing => "missing",
            Outcome::Invalid => "invalid",
            Outcome::Expired => "expired",
        }
    }
}

pub const RESULTS: [&str; 4] = ["valid", "missing", "invalid", "expired"];

/// The claims of a validated token that tether reads: those named in `forward_claims` or in a
/// `jwt:CLAIM` key spec (the config's `Jwt::claims`). Strings as they are; numbers, booleans,
/// arrays and objects as their JSON text; `null` as absent.
#[derive(Debug, Default)]
pub struct Claims {
    names: Arc<[Box<str>]>,
    values: Vec<Option<Box<str>>>,
}

impl Claims {
    /// The value of claim `name`, if the token has it and tether keeps it.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| &**n == name)?;
        self.values.get(i)?.as_deref()
    }

    /// The value of the `i`-th kept claim (`config::Jwt::claims` order).
    pub fn value(&self, i: usize) -> Option<&str> {
        self.values.get(i)?.as_deref()
    }
}

/// Where a key set comes from at run time.
pub enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<Remote>),
}

/// One `[jwt.NAME]`, ready for requests: validations pre-built per key family, metric handles
/// resolved.
pub struct Verifier {
    pub name: Arc<str>,
    from: From,
    pub keys: Keys,
    algorithms: Vec<Algorithm>,
    /// Per key family (see [`family_index`]): the checks for keys of that family, with the
    /// listed algorithms of that family (jsonwebtoken requires one family per validation).
    validations: [Option<Validation>; 4],
    claim_names: Arc<[Box<str>]>,
    /// (index into the kept claims, header name) for `forward_claims`.
    pub forward: Vec<(usize, HeaderName)>,
    /// `tether_jwt_total` by [`RESULTS`] order.
    pub counters: [IntCounter; 4],
}

enum From {
    Authorization,
    Header(HeaderName),
    Cookie(String),
}

fn family_index(f: AlgorithmFamily) -> usize {
    match f {
        AlgorithmFamily::Hmac => 0,
        AlgorithmFamily::Rsa => 1,
        AlgorithmFamily::Ec => 2,
        AlgorithmFamily::Ed => 3,
    }
}

impl Verifier {
    /// Builds the verifier of `conf`. `prev` lends the live key set of a `jwks_url` whose URL is
    /// unchanged (keys survive a reload); a new URL starts empty until the fetcher fills it.
    pub fn new(conf: &JwtConf, counters: [IntCounter; 4], prev: &[Verifier]) -> Verifier {
        init();
        let keys = match &conf.keys {
            JwtKeys::Static(set) => Keys::Static(set.clone()),
            JwtKeys::Url { url, refresh } => {
                let reused = prev.iter().find_map(|v| match &v.keys {
                    Keys::Remote(r) if r.url == *url => Some(r.clone()),
                    _ => None,
                });
                let r = reused.unwrap_or_else(|| Arc::new(Remote::new(url.clone())));
                r.set_refresh(*refresh);
                Keys::Remote(r)
            }
        };
        let mut validations: [Option<Validation>; 4] = Default::default();
        for fam in [
            AlgorithmFamily::Hmac,
            AlgorithmFamily::Rsa,
            AlgorithmFamily::Ec,
            AlgorithmFamily::Ed,
        ] {
            let algs: Vec<Algorithm> = conf
                .algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == fam)
                .collect();
            if algs.is_empty() {
                continue;
            }
            let mut v = Validation::new(algs[0]);
            v.algorithms = algs;
            v.leeway = conf.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            // DESIGN §15 lists the refusals; a token without `exp` is not one of them. `iss`
            // and `aud` are required exactly when configured.
            v.required_spec_claims.clear();
            if let Some(iss) = &conf.issuer {
                v.set_issuer(&[iss]);
                v.required_spec_claims.insert("iss".into());
            }
            if conf.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&conf.audience);
                v.required_spec_claims.insert("aud".into());
            }
            validations[family_index(fam)] = Some(v);
        }
        let claim_names: Arc<[Box<str>]> = conf
            .claims
            .iter()
            .map(|c| c.as_str().into())
            .collect::<Vec<_>>()
            .into();
        let forward = conf
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let i = claim_names.iter().position(|n| **n == **claim)?;
                Some((i, HeaderName::from_bytes(header.as_bytes()).ok()?))
            })
            .collect();
        let from = match &conf.from {
            TokenFrom::Header(h) if h == "authorization" => From::Authorization,
            TokenFrom::Header(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => From::Header(n),
                Err(_) => From::Authorization,
            },
            TokenFrom::Cookie(c) => From::Cookie(c.clone()),
        };
        Verifier {
            name: conf.name.as_str().into(),
            from,
            keys,
            algorithms: conf.algorithms.clone(),
            validations,
            claim_names,
            forward,
            counters,
        }
    }

    /// The remote key set, if this verifier has one.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match &self.keys {
            Keys::Remote(r) => Some(r),
            Keys::Static(_) => None,
        }
    }

    /// Checks the request's token.
    pub fn check(&self, req: &RequestHeader) -> Outcome {
        let token = match self.token(req) {
            Some(t) => t,
            None => return Outcome::Missing,
        };
        if token.is_empty() {
            return Outcome::Invalid;
        }
        match &self.keys {
            Keys::Static(set) => self.verify(token, set, None),
            Keys::Remote(r) => {
                let set = r.keys.load();
                self.verify(token, &set, Some(r))
            }
        }
    }

    /// The token's bytes; `None` when the request carries none.
    fn token<'a>(&self, req: &'a RequestHeader) -> Option<&'a [u8]> {
        match &self.from {
            From::Authorization => bearer(req.headers.get(http::header::AUTHORIZATION)?.as_bytes()),
            From::Header(name) => {
                let v = req.headers.get(name)?.as_bytes();
                Some(bearer(v).unwrap_or(v))
            }
            From::Cookie(name) => crate::head::find_cookie(req, name),
        }
    }

    fn verify(&self, token: &[u8], set: &KeySet, remote: Option<&Arc<Remote>>) -> Outcome {
        // One key that takes any kid (a key_file or secret_file): jsonwebtoken's decode reads
        // the header itself and refuses an algorithm not listed.
        if let [only] = set.keys.as_slice() {
            if only.kid.is_none() {
                return self.decode(token, only);
            }
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Outcome::Invalid;
        };
        if !self.algorithms.contains(&header.alg) {
            return Outcome::Invalid;
        }
        if let (Some(kid), Some(r)) = (&header.kid, remote) {
            if !set.has_kid(kid) {
                // Rotation: the key may be new. The refetch runs on the control runtime; this
                // request is refused now rather than waiting for it.
                r.want_refetch();
                return Outcome::Invalid;
            }
        }
        let mut candidates = set.keys.iter().filter(|k| {
            k.allows(header.alg)
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => **want == **have,
                    _ => true,
                }
        });
        let Some(mut key) = candidates.next() else {
            return Outcome::Invalid;
        };
        loop {
            match self.try_key(token, key) {
                Err(Failure::BadSignature) => match candidates.next() {
                    Some(k) => key = k,
                    None => return Outcome::Invalid,
                },
                Err(Failure::Expired) => return Outcome::Expired,
                Err(Failure::Other) => return Outcome::Invalid,
                Ok(()) => return Outcome::Valid(self.claims(token)),
            }
        }
    }

    fn decode(&self, token: &[u8], key: &Key) -> Outcome {
        match self.try_key(token, key) {
            Ok(()) => Outcome::Valid(self.claims(token)),
            Err(Failure::Expired) => Outcome::Expired,
            Err(_) => Outcome::Invalid,
        }
    }

    fn try_key(&self, token: &[u8], key: &Key) -> Result<(), Failure> {
        let Some(v) = &self.validations[family_index(key.family())] else {
            return Err(Failure::Other);
        };
        match jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key.decoding, v) {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => Failure::BadSignature,
                ErrorKind::ExpiredSignature => Failure::Expired,
                _ => Failure::Other,
            }),
        }
    }

    /// The kept claims of a token whose signature and claims were checked.
    fn claims(&self, token: &[u8]) -> Claims {
        let mut c = Claims {
            names: self.claim_names.clone(),
            values: Vec::new(),
        };
        if self.claim_names.is_empty() {
            return c;
        }
        c.values = vec![None; self.claim_names.len()];
        let Some(payload) = token.split(|b| *b == b'.').nth(1) else {
            return c;
        };
        use base64::Engine;
        let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return c;
        };
        let mut de = serde_json::Deserializer::from_slice(&json);
        let _ = serde::de::DeserializeSeed::deserialize(
            pick::Pick {
                names: &self.claim_names,
                values: &mut c.values,
            },
            &mut de,
        );
        c
    }
}

enum Failure {
    BadSignature,
    Expired,
    Other,
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive, RFC 9110 §11.1);
/// `None` for another scheme.
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let scheme = b"bearer";
    if v.len() < scheme.len() || !v[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &v[scheme.len()..];
    if !rest.is_empty() && rest[0] != b' ' && rest[0] != b'\t' {
        return None; // e.g. "Bearerx"
    }
    Some(crate::head::trim(rest))
}

/// Pulls the named top-level members out of a claims object without building the rest.
mod pick {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    pub struct Pick<'a> {
        pub names: &'a [Box<str>],
        pub values: &'a mut Vec<Option<Box<str>>>,
    }

    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a claims object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(i) = map.next_key_seed(Name(self.names))? {
                match i {
                    Some(i) => {
                        let v: serde_json::Value = map.next_value()?;
                        self.values[i] = match v {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s.into_boxed_str()),
                            other => Some(other.to_string().into_boxed_str()),
                        };
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    /// A member name, as its index among the wanted names.
    struct Name<'a>(&'a [Box<str>]);

    impl<'de> DeserializeSeed<'de> for Name<'_> {
        type Value = Option<usize>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Name<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a claim name")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
            Ok(self.0.iter().position(|n| **n == *s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::Duration;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn hs256(secret: &[u8], claims: &str) -> String {
        let msg = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "{msg}.{}",
            b64(ring::hmac::sign(&key, msg.as_bytes()).as_ref())
        )
    }

    fn verifier(claims: &[&str]) -> Verifier {
        let conf = JwtConf {
            name: "t".into(),
            from: TokenFrom::Header("authorization".into()),
            keys: JwtKeys::Static(Arc::new(KeySet::from_secret(b"k3y").unwrap())),
            algorithms: vec![Algorithm::HS256],
            issuer: None,
            audience: vec![],
            leeway: Duration::from_secs(60),
            forward_claims: vec![],
            claims: claims.iter().map(|c| c.to_string()).collect(),
        };
        let c = || IntCounter::new("x", "x").unwrap();
        Verifier::new(&conf, [c(), c(), c(), c()], &[])
    }

    fn req(auth: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = auth {
            r.insert_header("authorization", a).unwrap();
        }
        r
    }

    #[test]
    fn hs256_outcomes_and_kept_claims() {
        let v = verifier(&["sub", "n", "admin", "nothing", "roles"]);
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let t = hs256(
            b"k3y",
            &format!(
                r#"{{"sub":"al\"ice","n":42,"admin":false,"roles":["a"],"exp":{exp},"x":{{"y":1}}}}"#
            ),
        );
        let Outcome::Valid(c) = v.check(&req(Some(&format!("Bearer {t}")))) else {
            panic!("valid token refused");
        };
        assert_eq!(c.get("sub"), Some("al\"ice"));
        assert_eq!(c.get("n"), Some("42"));
        assert_eq!(c.get("admin"), Some("false"));
        assert_eq!(c.get("roles"), Some(r#"["a"]"#));
        assert_eq!(c.get("nothing"), None);
        assert_eq!(c.get("x"), None, "not a kept claim");
        assert!(matches!(v.check(&req(None)), Outcome::Missing));
        assert!(matches!(v.check(&req(Some("Bearer"))), Outcome::Invalid));
        let old = hs256(b"k3y", &format!(r#"{{"exp":{}}}"#, exp - 7200));
        assert!(matches!(
            v.check(&req(Some(&format!("Bearer {old}")))),
            Outcome::Expired
        ));
        let forged = hs256(b"other", r#"{"sub":"x"}"#);
        assert!(matches!(
            v.check(&req(Some(&format!("Bearer {forged}")))),
            Outcome::Invalid
        ));
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer"), Some(&b""[..]));
        assert_eq!(bearer(b"Bearer "), Some(&b""[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }
}
