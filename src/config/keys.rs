//! Verification keys (DESIGN.md §15): what a `key_file` (PEM), a `secret_file` or a JWKS
//! (`jwks_file`, `jwks_url`) turns into — each key with the algorithms it may verify.
//!
//! Owns: the key formats and which algorithm a key may serve. Must not touch: tokens, IO (the
//! callers read files and fetch URLs).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// `kid` of a JWKS key (PEM files and secrets have none, and match any token's `kid`).
    pub kid: Option<Box<str>>,
    /// The algorithms this key can verify (before the `algorithms` list narrows them).
    pub algs: Vec<Algorithm>,
    pub decoding: DecodingKey,
    /// A `secret_file`'s HMAC keys, prepared once per algorithm (ring's key schedule, not per
    /// request); empty for other keys.
    pub hmac: Vec<(Algorithm, ring::hmac::Key)>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algs", &self.algs)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn family(&self) -> AlgorithmFamily {
        self.decoding.family()
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algs.contains(&alg)
    }
}

/// The keys of one `[jwt.NAME]`, immutable once built (a fetched JWKS replaces the whole set).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Content hash of the file the keys were read from (empty for a fetched set): tells a
    /// reload's summary that a key file changed, without keeping its secret anywhere else.
    pub source_hash: String,
}

impl KeySet {
    /// Whether any key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The kids, for logs.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("(no kid)").to_owned())
            .collect()
    }

    /// A shared secret (HS256/384/512): the file's content with one trailing newline stripped.
    pub fn from_secret(content: &[u8]) -> Result<KeySet, String> {
        let s = content
            .strip_suffix(b"\n")
            .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
            .unwrap_or(content);
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        let decoding = DecodingKey::from_secret(s).map_err(|e| e.to_string())?;
        use ring::hmac;
        let hmac = [
            (Algorithm::HS256, hmac::HMAC_SHA256),
            (Algorithm::HS384, hmac::HMAC_SHA384),
            (Algorithm::HS512, hmac::HMAC_SHA512),
        ]
        .map(|(a, h)| (a, hmac::Key::new(h, s)))
        .to_vec();
        Ok(KeySet {
            keys: vec![Key {
                kid: None,
                algs: AlgorithmFamily::Hmac.algorithms().to_vec(),
                decoding,
                hmac,
            }],
            source_hash: String::new(),
        })
    }

    /// A PEM public key (`PUBLIC KEY`, `RSA PUBLIC KEY`) or certificate (`CERTIFICATE`) of an
    /// RSA, EC (P-256, P-384) or Ed25519 key.
    pub fn from_pem(pem: &[u8]) -> Result<KeySet, String> {
        if let Ok(d) = DecodingKey::from_rsa_pem(pem) {
            // ring verifies RSA keys of 2048 bits and more: a smaller one would refuse every
            // token at run time, so it is refused here, at load.
            let der = d.try_get_as_bytes().unwrap_or_default();
            match rsa_modulus_bytes(der) {
                Some(n) if n >= 256 => return Ok(one(d, rsa_algs())),
                Some(n) => {
                    return Err(format!(
                        "an RSA key of {} bits: at least 2048 are needed",
                        n * 8
                    ))
                }
                None => return Err("a malformed RSA public key".into()),
            }
        }
        if let Ok(d) = DecodingKey::from_ec_pem(pem) {
            let alg = ec_alg_of_point(d.try_get_as_bytes().unwrap_or_default())
                .ok_or("unsupported EC curve (P-256 and P-384 are)")?;
            return Ok(one(d, vec![alg]));
        }
        if let Ok(d) = DecodingKey::from_ed_pem(pem) {
            if d.try_get_as_bytes().map(|b| b.len()) != Ok(32) {
                return Err("not an Ed25519 public key".into());
            }
            return Ok(one(d, vec![Algorithm::EdDSA]));
        }
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY") {
            return Err("holds a private key: give the public key or a certificate".into());
        }
        Err("not a PEM RSA, EC (P-256, P-384) or Ed25519 public key or certificate".into())
    }

    /// A JWKS document (`{"keys": [...]}`). Keys tether cannot use (encryption keys, unknown
    /// types or curves, malformed members) are skipped and named in the second value.
    pub fn from_jwks(json: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, v) in doc.keys.into_iter().enumerate() {
            let kid = v.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let name = match &kid {
                Some(k) => format!("key {i} (kid {k:?})"),
                None => format!("key {i}"),
            };
            match serde_json::from_value::<Jwk>(v)
                .map_err(|e| e.to_string())
                .and_then(|jwk| from_jwk(&jwk))
            {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(format!("{name}: {e}")),
            }
        }
        Ok((
            KeySet {
                keys,
                source_hash: String::new(),
            },
            skipped,
        ))
    }
}

/// The modulus length in bytes (leading zeros not counted) of a PKCS#1 `RSAPublicKey` DER
/// (`SEQUENCE { modulus INTEGER, publicExponent INTEGER }`).
fn rsa_modulus_bytes(der: &[u8]) -> Option<usize> {
    /// One DER tag-length-value: (tag, contents).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        let (len, start) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = len << 8 | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        Some((tag, b.get(start..start.checked_add(len)?)?))
    }
    let (0x30, seq) = tlv(der)? else {
        return None;
    };
    let (0x02, modulus) = tlv(seq)? else {
        return None;
    };
    Some(modulus.iter().skip_while(|b| **b == 0).count())
}

fn one(decoding: DecodingKey, algs: Vec<Algorithm>) -> KeySet {
    KeySet {
        keys: vec![Key {
            kid: None,
            algs,
            decoding,
            hmac: Vec::new(),
        }],
        source_hash: String::new(),
    }
}

fn rsa_algs() -> Vec<Algorithm> {
    AlgorithmFamily::Rsa.algorithms().to_vec()
}

/// ES256 for a P-256 point, ES384 for a P-384 one (uncompressed points: 65 and 97 bytes).
fn ec_alg_of_point(point: &[u8]) -> Option<Algorithm> {
    match (point.first(), point.len()) {
        (Some(4), 65) => Some(Algorithm::ES256),
        (Some(4), 97) => Some(Algorithm::ES384),
        _ => None,
    }
}

fn from_jwk(jwk: &Jwk) -> Result<Key, String> {
    if let Some(u) = &jwk.common.public_key_use {
        if *u != PublicKeyUse::Signature {
            return Err("not a signature key (\"use\" is not \"sig\")".into());
        }
    }
    let mut algs = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => rsa_algs(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKey(_) => AlgorithmFamily::Hmac.algorithms().to_vec(),
        _ => return Err("unsupported key type".into()),
    };
    if let Some(ka) = jwk.common.key_algorithm {
        let a = Algorithm::try_from(ka).map_err(|_| format!("unsupported \"alg\" {ka}"))?;
        if !algs.contains(&a) {
            return Err(format!("\"alg\" {ka} does not fit the key type"));
        }
        algs = vec![a];
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let bytes = decoding.try_get_as_bytes().map(<[u8]>::len);
    let fits = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_) => {
            ec_alg_of_point(decoding.try_get_as_bytes().unwrap_or_default()) == Some(algs[0])
        }
        AlgorithmParameters::OctetKeyPair(_) => bytes == Ok(32),
        AlgorithmParameters::RSA(p) => {
            // ring verifies RSA keys of 2048 bits and more.
            let n = jsonwebtoken_b64(&p.n).unwrap_or_default();
            n.iter().skip_while(|b| **b == 0).count() >= 256
        }
        _ => true,
    };
    if !fits {
        return Err("malformed or too small key".into());
    }
    Ok(Key {
        kid: jwk.common.key_id.as_deref().map(Into::into),
        algs,
        decoding,
        hmac: Vec::new(),
    })
}

fn jsonwebtoken_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_key_files_of_2048_bits_and_more_only() {
        let fixture = |name: &str| {
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/jwt")
                    .join(name),
            )
            .unwrap()
        };
        for ok in ["rsa.pub.pem", "rsa.cert.pem"] {
            let set = KeySet::from_pem(&fixture(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(set.keys[0].allows(Algorithm::RS256), "{ok}");
        }
        let e = KeySet::from_pem(&fixture("rsa1024.pub.pem")).unwrap_err();
        assert_eq!(e, "an RSA key of 1024 bits: at least 2048 are needed");
        assert_eq!(rsa_modulus_bytes(&[0x30, 0x03, 0x02, 0x01, 0x00]), Some(0));
        assert_eq!(
            rsa_modulus_bytes(&[0x30, 0x05, 0x02, 0x09]),
            None,
            "truncated"
        );
        assert_eq!(rsa_modulus_bytes(&[0x04, 0x00]), None, "not a sequence");
    }

    #[test]
    fn a_secret_loses_one_trailing_newline_only() {
        let k = KeySet::from_secret(b"abc\n\n").unwrap();
        assert_eq!(k.keys[0].decoding.try_get_as_bytes().unwrap(), b"abc\n");
        assert!(KeySet::from_secret(b"\n").is_err());
        assert!(KeySet::from_secret(b"").is_err());
    }

    #[test]
    fn jwks_keys_tether_cannot_use_are_skipped_and_named() {
        let doc = br#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"RSA","use":"enc","kid":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0LXNlY3JldA"}
        ]}"#;
        let (set, skipped) = KeySet::from_jwks(doc).unwrap();
        assert_eq!(set.kids(), vec!["ed", "h"]);
        assert_eq!(set.keys[0].algs, vec![Algorithm::EdDSA]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"not json").is_err());
    }
}
