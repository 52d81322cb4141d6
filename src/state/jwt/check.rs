//! The check of one request's token: finding it (`Authorization: Bearer`, a header or a
//! cookie), the verified-token cache, choosing keys by `kid` and algorithm, the signature
//! (`jsonwebtoken::crypto::verify`), and the time, issuer and audience claims.

use std::sync::Arc;

use crate::http::Head;

use super::claims::{self, Claims};
use super::fetch::Remote;
use super::outcome::Outcome;
use super::verifier::{From, Keys, Verifier};
use crate::config::keys::KeySet;

impl Verifier {
    /// Checks the request's token.
    pub fn check(&self, req: &dyn Head) -> Outcome {
        let token = match self.token(req) {
            Some(t) => t,
            None => return Outcome::Missing,
        };
        if token.is_empty() {
            return Outcome::Invalid;
        }
        match &self.keys {
            Keys::Static(set) => self.cached_or_verify(token, set, None),
            Keys::Remote(r) => {
                let set = r.keys.load();
                self.cached_or_verify(token, &set, Some(r))
            }
        }
    }

    /// A token this verifier found valid with this key set before needs only its time claims
    /// checked again (`cache`); any other is verified in full, and kept when valid.
    fn cached_or_verify(
        &self,
        token: &[u8],
        set: &Arc<KeySet>,
        remote: Option<&Arc<Remote>>,
    ) -> Outcome {
        let miss = match self.cache.get(token, set) {
            Ok(hit) => {
                return match self.timely(hit.exp, hit.nbf) {
                    Ok(()) => Outcome::Valid(hit.claims),
                    Err(refused) => refused,
                }
            }
            Err(miss) => miss,
        };
        match self.verify(token, set, remote) {
            Ok((exp, nbf, claims)) => {
                let claims = Arc::new(claims);
                self.cache.put(miss, token, set, exp, nbf, claims.clone());
                Outcome::Valid(claims)
            }
            Err(refused) => refused,
        }
    }

    /// `exp` and `nbf` against the clock, with `leeway`.
    fn timely(&self, exp: Option<u64>, nbf: Option<u64>) -> Result<(), Outcome> {
        let now = jsonwebtoken::get_current_timestamp();
        if exp.is_some_and(|exp| exp < now.saturating_sub(self.leeway)) {
            return Err(Outcome::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(Outcome::Invalid);
        }
        Ok(())
    }

    /// The token's bytes; `None` when the request carries none.
    fn token<'a>(&self, req: &'a dyn Head) -> Option<&'a [u8]> {
        match &self.from {
            From::Authorization => bearer(req.header(b"authorization")?),
            From::Header(name) => {
                let v = req.header(name.as_str().as_bytes())?;
                Some(bearer(v).unwrap_or(v))
            }
            From::Cookie(name) => crate::http::find_cookie(req, name),
        }
    }

    /// Header, key, signature, then claims — in that order: nothing of the payload is trusted
    /// before its signature is checked. On bytes throughout (a byte outside base64url fails its
    /// decode), with the decoded header and claims on the stack unless they are unusually large.
    fn verify(&self, token: &[u8], set: &KeySet, remote: Option<&Arc<Remote>>) -> Verified {
        let Some(d1) = token.iter().position(|&b| b == b'.') else {
            return Err(Outcome::Invalid);
        };
        let Some(d2) = token[d1 + 1..]
            .iter()
            .position(|&b| b == b'.')
            .map(|i| d1 + 1 + i)
        else {
            return Err(Outcome::Invalid);
        };
        let (head, payload, signature) = (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
        if signature.contains(&b'.') {
            return Err(Outcome::Invalid);
        }
        let message = &token[..d2];
        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let Some(json) = b64(head, &mut stack, &mut heap) else {
            return Err(Outcome::Invalid);
        };
        let Some((alg, kid)) = claims::header(json) else {
            return Err(Outcome::Invalid);
        };
        let kid = kid.as_deref();
        if !self.algorithms.contains(&alg) {
            return Err(Outcome::Invalid);
        }
        if let (Some(kid), Some(r)) = (kid, remote) {
            if !set.has_kid(kid) {
                // Rotation: the key may be new. The refetch runs on the control runtime; this
                // request is refused now rather than waiting for it.
                r.want_refetch();
                return Err(Outcome::Invalid);
            }
        }
        let signed = set
            .keys
            .iter()
            .filter(|k| {
                k.allows(alg)
                    && match (kid, &k.kid) {
                        (Some(want), Some(have)) => want == &**have,
                        _ => true,
                    }
            })
            .any(|k| match k.hmac.iter().find(|(a, _)| *a == alg) {
                // A prepared HMAC key: decode the signature on the stack, verify in constant
                // time; no allocation, no key schedule per request.
                Some((_, key)) => {
                    use base64::Engine;
                    let mut sig = [0u8; 64];
                    match base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode_slice(signature, &mut sig)
                    {
                        Ok(n) => ring::hmac::verify(key, message, &sig[..n]).is_ok(),
                        Err(_) => false,
                    }
                }
                // jsonwebtoken takes the signature as text; base64url is ASCII.
                None => match std::str::from_utf8(signature) {
                    Ok(signature) => {
                        jsonwebtoken::crypto::verify(signature, message, &k.decoding, alg)
                            .unwrap_or(false)
                    }
                    Err(_) => false,
                },
            });
        if !signed {
            return Err(Outcome::Invalid);
        }
        let mut stack = [0u8; 1024];
        let mut heap = Vec::new();
        match b64(payload, &mut stack, &mut heap) {
            Some(json) => self.validate(json),
            None => Err(Outcome::Invalid),
        }
    }

    /// The registered claims (`exp`, `nbf`, `iss`, `aud`) of a signed payload's JSON, and the
    /// kept claims, from one parse.
    fn validate(&self, json: &[u8]) -> Verified {
        let mut values = vec![None; self.claim_names.len()];
        let Some(std) = claims::scan(json, &self.claim_names, &mut values) else {
            return Err(Outcome::Invalid);
        };
        let time = |t: claims::Time| match t {
            claims::Time::Absent => Ok(None),
            claims::Time::Bad => Err(Outcome::Invalid),
            claims::Time::At(t) => Ok(Some(t)),
        };
        let exp = time(std.exp)?;
        self.timely(exp, None)?;
        let nbf = time(std.nbf)?;
        self.timely(None, nbf)?;
        if let Some(want) = &self.issuer {
            if std.iss.as_deref() != Some(&**want) {
                return Err(Outcome::Invalid);
            }
        }
        if !self.audience.is_empty() {
            let ok = std
                .aud
                .as_ref()
                .is_some_and(|aud| aud.iter().any(|a| self.audience.iter().any(|w| **w == **a)));
            if !ok {
                return Err(Outcome::Invalid);
            }
        }
        Ok((
            exp,
            nbf,
            Claims {
                names: self.claim_names.clone(),
                values,
            },
        ))
    }
}

/// A token that passed every check: its `exp` and `nbf` (to check again when it comes back,
/// see `cache`) and the kept claims; or the refusal.
type Verified = Result<(Option<u64>, Option<u64>, Claims), Outcome>;

/// `part` base64url-decoded (no padding, RFC 7515 §2) into `stack`, or into `heap` when it does
/// not fit; `None` when it is not base64url.
fn b64<'b>(part: &[u8], stack: &'b mut [u8], heap: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    use base64::Engine;
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if base64::decoded_len_estimate(part.len()) <= stack.len() {
        let n = engine.decode_slice(part, stack).ok()?;
        Some(&stack[..n])
    } else {
        engine.decode_vec(part, heap).ok()?;
        Some(heap)
    }
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
    Some(crate::http::trim(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Jwt as JwtConf, JwtKeys, TokenFrom};
    use base64::Engine;
    use jsonwebtoken::Algorithm;
    use pingora::http::RequestHeader;
    use prometheus::IntCounter;
    use std::time::Duration;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn hs256(secret: &[u8], claims: &str) -> String {
        signed(br#"{"alg":"HS256","typ":"JWT"}"#, secret, claims)
    }

    fn signed(header: &[u8], secret: &[u8], claims: &str) -> String {
        let msg = format!("{}.{}", b64(header), b64(claims.as_bytes()));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "{msg}.{}",
            b64(ring::hmac::sign(&key, msg.as_bytes()).as_ref())
        )
    }

    fn verifier(claims: &[&str]) -> Verifier {
        verifier_for(claims, None, &[])
    }

    fn verifier_for(claims: &[&str], issuer: Option<&str>, audience: &[&str]) -> Verifier {
        let conf = JwtConf {
            name: "t".into(),
            from: TokenFrom::Header("authorization".into()),
            keys: JwtKeys::Static(Arc::new(KeySet::from_secret(b"k3y").unwrap())),
            algorithms: vec![Algorithm::HS256],
            issuer: issuer.map(str::to_owned),
            audience: audience.iter().map(|a| a.to_string()).collect(),
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

    /// What the header and claims parser refuses, beyond the integration tests' cases.
    #[test]
    fn strict_header_and_registered_claims() {
        let v = verifier_for(&[], Some("https://id"), &["shop"]);
        let now = jsonwebtoken::get_current_timestamp();
        let check = |t: String| v.check(&req(Some(&format!("Bearer {t}"))));
        let good = format!(
            r#"{{"iss":"https://id","aud":["x","shop"],"exp":{}}}"#,
            now + 60
        );
        assert!(matches!(check(hs256(b"k3y", &good)), Outcome::Valid(_)));
        let float_exp = format!(
            r#"{{"iss":"https://id","aud":"shop","exp":{}.5}}"#,
            now + 60
        );
        assert!(matches!(
            check(hs256(b"k3y", &float_exp)),
            Outcome::Valid(_)
        ));
        let no_exp = r#"{"iss":"https://id","aud":"shop"}"#;
        assert!(matches!(check(hs256(b"k3y", no_exp)), Outcome::Valid(_)));
        let refused = [
            r#"{"iss":"https://id","aud":"shop","exp":-5}"#.to_owned(),
            r#"{"iss":"https://id","aud":"shop","exp":"9999999999"}"#.to_owned(),
            r#"{"iss":"https://id","aud":"shop","nbf":"0"}"#.to_owned(),
            r#"{"iss":"https://id","aud":"shop","exp":9999999999,"exp":1}"#.to_owned(),
            r#"{"iss":["https://id"],"aud":"shop"}"#.to_owned(),
            r#"{"iss":"https://id","aud":[1]}"#.to_owned(),
            r#"{"iss":"https://id","aud":[]}"#.to_owned(),
            r#"{"iss":"https://id"}"#.to_owned(),
            r#"["not", "an", "object"]"#.to_owned(),
            r#"{"iss":"https://id","aud":"shop"} trailing"#.to_owned(),
        ];
        for c in refused {
            assert!(matches!(check(hs256(b"k3y", &c)), Outcome::Invalid), "{c}");
        }
        for h in [
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","b64":false}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let t = signed(h.as_bytes(), b"k3y", no_exp);
            assert!(matches!(check(t), Outcome::Invalid), "{h}");
        }
        let t = hs256(b"k3y", no_exp);
        assert!(
            matches!(check(format!("{t}.x")), Outcome::Invalid),
            "four parts"
        );
        assert!(
            matches!(check(format!("{t}=")), Outcome::Invalid),
            "padding"
        );
    }

    /// The verified-token cache: a valid token is kept and later requests with it are valid
    /// without a signature check — but only the exact token, only under the key set that
    /// verified it, and never past its `exp`.
    #[test]
    fn cached_tokens_are_rechecked_for_time_and_bound_to_their_key_set() {
        let v = verifier(&["sub"]);
        let now = jsonwebtoken::get_current_timestamp();
        let t = hs256(b"k3y", &format!(r#"{{"sub":"ann","exp":{}}}"#, now + 600));
        let check = |t: &str| v.check(&req(Some(&format!("Bearer {t}"))));
        assert!(v.cache.is_empty());
        assert!(matches!(check(&t), Outcome::Valid(_)));
        assert_eq!(v.cache.len(), 1, "a valid token is kept");
        let Outcome::Valid(c) = check(&t) else {
            panic!("kept token refused");
        };
        assert_eq!(c.get("sub"), Some("ann"), "claims come back from the cache");
        // Refused tokens are never kept.
        let forged = hs256(b"other", r#"{"sub":"x"}"#);
        assert!(matches!(check(&forged), Outcome::Invalid));
        assert!(matches!(check(&forged), Outcome::Invalid));
        assert_eq!(v.cache.len(), 1);

        let Keys::Static(set) = &v.keys else {
            unreachable!()
        };
        let claims = Arc::new(Claims::default());
        // Keeps `token` under `keys` as a verified token would be (its lookup missing first).
        let put = |token: &str, keys: &Arc<KeySet>, exp, nbf, claims| {
            let Err(miss) = v.cache.get(token.as_bytes(), keys) else {
                panic!("{token} is kept already");
            };
            v.cache.put(miss, token.as_bytes(), keys, exp, nbf, claims)
        };
        // An entry past its exp (beyond the 60 s leeway) is expired, though its signature was
        // good; one whose nbf is ahead is invalid.
        let late = signed(br#"{"alg":"HS256"}"#, b"k3y", r#"{"a":1}"#);
        put(&late, set, Some(now - 61), None, claims.clone());
        assert!(matches!(check(&late), Outcome::Expired));
        let early = signed(br#"{"alg":"HS256"}"#, b"k3y", r#"{"a":2}"#);
        put(&early, set, None, Some(now + 61), claims.clone());
        assert!(matches!(check(&early), Outcome::Invalid));

        // An entry answers only for the key set that verified it: a token kept under another
        // set (a JWKS refresh replaced it) is verified again — and this one was never signed
        // by any key of the current set.
        let unsigned = format!("{}.{}.", b64(br#"{"alg":"HS256"}"#), b64(br#"{"a":3}"#));
        let old_set = Arc::new(KeySet::from_secret(b"gone").unwrap());
        put(&unsigned, &old_set, None, None, claims.clone());
        assert!(matches!(check(&unsigned), Outcome::Invalid));
        put(&unsigned, set, None, None, claims);
        assert!(
            matches!(check(&unsigned), Outcome::Valid(_)),
            "the entry of the current set is what answers"
        );
        // The whole token is compared: one changed byte is another token.
        let mut other = t.clone().into_bytes();
        let last = other.len() - 1;
        other[last] = if other[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            check(std::str::from_utf8(&other).unwrap()),
            Outcome::Invalid
        ));
    }
}
