//! The signed affinity cookie codec (DESIGN §4, policy `cookie`).
//!
//! Owns the cookie *value*: its binary layout, its HMAC-SHA256 signature and its validity rules.
//! It must not touch headers, cookie attributes, backend state, clocks or randomness: the caller
//! parses the `Cookie` header, passes `now` and a fresh nonce, maps the digest back to a backend
//! and counts the outcome. Untrusted input: `decode` never panics and never allocates.
//!
//! Value: base64url without padding (always [`ENCODED_LEN`] characters) of
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` |
//! | 8 | backend digest ([`backend_digest`]) |
//! | 12 | session nonce |
//! | 8 | issue time, unix seconds, big-endian |
//! | 16 | tag: first 16 bytes of HMAC-SHA256(key, `"tether-affinity-v1\0" ‖ pool ‖ "\0" ‖` the 29 bytes above) |
//!
//! It reveals no id or address: the digest is a hash of pool and id. Binding the pool into the tag
//! makes a cookie of one pool invalid in another.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::{digest, hmac};

/// Length of the random session nonce.
pub const NONCE_LEN: usize = 12;

/// Stable digest naming a backend inside a cookie.
pub type BackendDigest = [u8; 8];

/// Length of every encoded cookie value, in characters (45 bytes of base64url, no padding).
pub const ENCODED_LEN: usize = 60;

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 8 + NONCE_LEN + 8;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = BODY_LEN + TAG_LEN;
const DOMAIN: &[u8] = b"tether-affinity-v1\0";
/// Clock skew tolerated between instances: an issue time further in the future is forged or
/// broken, not skewed.
const MAX_FUTURE_SECS: u64 = 300;

const _: () = assert!(RAW_LEN.is_multiple_of(3) && RAW_LEN / 3 * 4 == ENCODED_LEN);

/// Stable digest of a backend id: first 8 bytes of SHA-256(`"tether/backend\0" ‖ pool ‖ "\0" ‖ id`).
pub fn backend_digest(pool: &str, id: &str) -> BackendDigest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tether/backend\0");
    ctx.update(pool.as_bytes());
    ctx.update(b"\0");
    ctx.update(id.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&ctx.finish().as_ref()[..8]);
    out
}

/// What a valid cookie says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub backend: BackendDigest,
    pub nonce: [u8; NONCE_LEN],
    /// Unix seconds.
    pub issued: u64,
}

/// Why a cookie value was rejected; every case means "treat as absent".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Wrong length, not base64url, unknown version, or issued implausibly far in the future.
    Malformed,
    /// No configured secret produced its tag: tampered, from another pool, or a retired secret.
    BadSignature,
    /// Validly signed but older than `max_age`.
    Expired,
}

impl Invalid {
    /// Short snake_case name, e.g. for a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::BadSignature => "bad_signature",
            Invalid::Expired => "expired",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Invalid {}

/// Signs and verifies one pool's affinity cookies.
#[derive(Clone)]
pub struct CookieCodec {
    /// One HMAC context per secret, already fed the domain prefix and pool name; cloned per
    /// operation. The first signs; all verify, in order.
    keys: Box<[hmac::Context]>,
}

impl CookieCodec {
    /// `secrets`: the first signs new cookies, all verify (rotation: list the new secret first,
    /// keep the old one until its cookies have expired). Never panics. With no secrets every
    /// cookie is rejected as `BadSignature`; `encode` is then meaningless (its value verifies
    /// nowhere) and the caller's validation ensures it is not called.
    pub fn new(pool: &str, secrets: &[Vec<u8>]) -> CookieCodec {
        let keys = secrets
            .iter()
            .map(|secret| {
                let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, secret));
                ctx.update(DOMAIN);
                ctx.update(pool.as_bytes());
                ctx.update(b"\0");
                ctx
            })
            .collect();
        CookieCodec { keys }
    }

    fn tag(prefixed: &hmac::Context, body: &[u8]) -> [u8; TAG_LEN] {
        let mut ctx = prefixed.clone();
        ctx.update(body);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&ctx.sign().as_ref()[..TAG_LEN]);
        tag
    }

    /// The cookie value for `a`, signed with the first secret: [`ENCODED_LEN`] base64url characters.
    pub fn encode(&self, a: &Affinity) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&a.backend);
        raw[9..9 + NONCE_LEN].copy_from_slice(&a.nonce);
        raw[9 + NONCE_LEN..BODY_LEN].copy_from_slice(&a.issued.to_be_bytes());
        if let Some(key) = self.keys.first() {
            let tag = Self::tag(key, &raw[..BODY_LEN]);
            raw[BODY_LEN..].copy_from_slice(&tag);
        }
        let mut out = String::with_capacity(ENCODED_LEN);
        URL_SAFE_NO_PAD.encode_string(raw, &mut out);
        out
    }

    /// Verifies `value` against each secret in order (constant-time tag comparison), then its age:
    /// expired when `now > issued + max_age`; an issue time more than 300 s after `now` is
    /// `Malformed`. Returns the affinity and the index of the secret that verified: 0 is the
    /// current signing secret, > 0 means the caller should re-issue the cookie.
    /// Allocation-free: the value is decoded into a stack buffer after a length check.
    pub fn decode(
        &self,
        value: &[u8],
        now: u64,
        max_age: Option<u64>,
    ) -> Result<(Affinity, usize), Invalid> {
        if value.len() != ENCODED_LEN {
            return Err(Invalid::Malformed);
        }
        let mut raw = [0u8; RAW_LEN];
        // ENCODED_LEN is a multiple of 4, so the decoding is canonical: no spare bits, no padding.
        match URL_SAFE_NO_PAD.decode_slice(value, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return Err(Invalid::Malformed),
        }
        if raw[0] != VERSION {
            return Err(Invalid::Malformed);
        }
        let (body, tag) = raw.split_at(BODY_LEN);
        let secret = self
            .keys
            .iter()
            .position(|key| tags_equal(&Self::tag(key, body), tag))
            .ok_or(Invalid::BadSignature)?;

        let mut affinity = Affinity {
            backend: [0; 8],
            nonce: [0; NONCE_LEN],
            issued: 0,
        };
        affinity.backend.copy_from_slice(&body[1..9]);
        affinity.nonce.copy_from_slice(&body[9..9 + NONCE_LEN]);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&body[9 + NONCE_LEN..]);
        affinity.issued = u64::from_be_bytes(issued);

        if affinity.issued > now.saturating_add(MAX_FUTURE_SECS) {
            return Err(Invalid::Malformed);
        }
        if let Some(max_age) = max_age {
            if now > affinity.issued.saturating_add(max_age) {
                return Err(Invalid::Expired);
            }
        }
        Ok((affinity, secret))
    }
}

/// Constant-time equality of a computed tag and a received one: no early exit on the first
/// differing byte, so timing does not reveal how much of a forged tag was right.
fn tags_equal(computed: &[u8; TAG_LEN], received: &[u8]) -> bool {
    if received.len() != TAG_LEN {
        return false;
    }
    let diff = computed
        .iter()
        .zip(received)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("CookieCodec")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn affinity() -> Affinity {
        Affinity {
            backend: backend_digest("shop", "shop-1"),
            nonce: *b"0123456789ab",
            issued: NOW,
        }
    }

    fn codec(pool: &str, secrets: &[&[u8]]) -> CookieCodec {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        CookieCodec::new(pool, &secrets)
    }

    fn b64(raw: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn unb64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = codec("shop", &[b"secret-one"]);
        let a = affinity();
        let text = c.encode(&a);
        assert_eq!(c.decode(text.as_bytes(), NOW, None), Ok((a, 0)));
        assert_eq!(c.decode(text.as_bytes(), NOW + 10, Some(3600)), Ok((a, 0)));
    }

    #[test]
    fn digest_is_stable_and_pool_bound() {
        assert_eq!(
            backend_digest("shop", "shop-1"),
            backend_digest("shop", "shop-1")
        );
        assert_ne!(
            backend_digest("shop", "shop-1"),
            backend_digest("shop", "shop-2")
        );
        assert_ne!(
            backend_digest("shop", "shop-1"),
            backend_digest("cart", "shop-1")
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(backend_digest("ab", "c"), backend_digest("a", "bc"));
        // Pinned: cookies in users' browsers name backends by this digest.
        assert_eq!(
            backend_digest("shop", "shop-1"),
            [0x1f, 0x3b, 0xde, 0x47, 0x75, 0xaa, 0x2c, 0x73]
        );
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let c = codec("shop", &[b"secret-one"]);
        let raw = unb64(&c.encode(&affinity()));
        assert_eq!(raw.len(), RAW_LEN);
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[byte] ^= 1 << bit;
                let result = c.decode(b64(&bad).as_bytes(), NOW, None);
                assert!(result.is_err(), "flip of byte {byte} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn every_char_change_is_rejected() {
        let c = codec("shop", &[b"secret-one"]);
        let text = c.encode(&affinity());
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. %";
        for pos in 0..text.len() {
            for &ch in alphabet {
                if ch == text.as_bytes()[pos] {
                    continue;
                }
                let mut bad = text.clone().into_bytes();
                bad[pos] = ch;
                assert!(
                    c.decode(&bad, NOW, None).is_err(),
                    "char {} at {pos} accepted",
                    ch as char
                );
            }
        }
    }

    #[test]
    fn malformed_inputs() {
        let c = codec("shop", &[b"secret-one"]);
        let text = c.encode(&affinity());
        let malformed = |v: &[u8]| c.decode(v, NOW, None) == Err(Invalid::Malformed);
        assert!(malformed(b""));
        assert!(malformed(&text.as_bytes()[..ENCODED_LEN - 1]));
        assert!(malformed(&text.as_bytes()[..ENCODED_LEN - 4]));
        assert!(malformed(format!("{text}A").as_bytes()));
        assert!(malformed(format!("{text}====").as_bytes()));
        assert!(malformed(&[b'!'; ENCODED_LEN]));
        assert!(malformed(&[0xff; ENCODED_LEN]));
        assert!(malformed("é".repeat(ENCODED_LEN / 2).as_bytes()));
        // Standard-alphabet base64 of the same bytes is not base64url.
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(unb64(&text));
        if std_b64.contains(['+', '/']) {
            assert!(malformed(std_b64.as_bytes()));
        }
        // Right length and alphabet, unknown version.
        let mut raw = unb64(&text);
        raw[0] = 2;
        assert!(malformed(b64(&raw).as_bytes()));
        // Garbage of the right shape fails the signature.
        assert_eq!(
            c.decode(&[b'A'; ENCODED_LEN], NOW, None),
            Err(Invalid::Malformed), // version byte 0
        );
        let mut garbage = [b'A'; ENCODED_LEN];
        garbage[..2].copy_from_slice(b"AQ"); // version 1
        assert_eq!(c.decode(&garbage, NOW, None), Err(Invalid::BadSignature));
    }

    #[test]
    fn expiry_boundary() {
        let c = codec("shop", &[b"secret-one"]);
        let text = c.encode(&affinity());
        let max_age = Some(3600);
        assert!(c.decode(text.as_bytes(), NOW + 3600, max_age).is_ok());
        assert_eq!(
            c.decode(text.as_bytes(), NOW + 3601, max_age),
            Err(Invalid::Expired)
        );
        // No max_age: a session cookie never expires by age.
        assert!(c
            .decode(text.as_bytes(), NOW + 10 * 365 * 86_400, None)
            .is_ok());
        // No overflow near the end of time.
        let late = Affinity {
            issued: u64::MAX - 1,
            ..affinity()
        };
        let text = c.encode(&late);
        assert!(c.decode(text.as_bytes(), u64::MAX, Some(u64::MAX)).is_ok());
    }

    #[test]
    fn future_issue_is_malformed() {
        let c = codec("shop", &[b"secret-one"]);
        let text = c.encode(&affinity());
        // Issued 300 s ahead of our clock: tolerated skew.
        assert!(c.decode(text.as_bytes(), NOW - 300, Some(60)).is_ok());
        assert_eq!(
            c.decode(text.as_bytes(), NOW - 301, Some(60)),
            Err(Invalid::Malformed)
        );
        assert_eq!(c.decode(text.as_bytes(), 0, None), Err(Invalid::Malformed));
    }

    #[test]
    fn rotation() {
        let old = codec("shop", &[b"old-secret"]);
        let rotated = codec("shop", &[b"new-secret", b"old-secret"]);
        let retired = codec("shop", &[b"new-secret"]);
        let a = affinity();

        let by_old = old.encode(&a);
        assert_eq!(rotated.decode(by_old.as_bytes(), NOW, None), Ok((a, 1)));
        assert_eq!(
            retired.decode(by_old.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );

        let by_new = rotated.encode(&a);
        assert_eq!(rotated.decode(by_new.as_bytes(), NOW, None), Ok((a, 0)));
        assert_eq!(retired.decode(by_new.as_bytes(), NOW, None), Ok((a, 0)));
        assert_eq!(
            old.decode(by_new.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );
    }

    #[test]
    fn no_secrets_rejects_everything() {
        let none = CookieCodec::new("shop", &[]);
        let signed = codec("shop", &[b"secret-one"]).encode(&affinity());
        assert_eq!(
            none.decode(signed.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );
        let unsigned = none.encode(&affinity());
        assert_eq!(unsigned.len(), ENCODED_LEN);
        assert_eq!(
            none.decode(unsigned.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );
        // An empty secret is still a key (HMAC accepts any length); validation forbids it.
        let empty = CookieCodec::new("shop", &[Vec::new()]);
        let text = empty.encode(&affinity());
        assert!(empty.decode(text.as_bytes(), NOW, None).is_ok());
    }

    #[test]
    fn pool_is_bound() {
        let a_codec = codec("a", &[b"shared"]);
        let b_codec = codec("b", &[b"shared"]);
        let text = a_codec.encode(&affinity());
        assert!(a_codec.decode(text.as_bytes(), NOW, None).is_ok());
        assert_eq!(
            b_codec.decode(text.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );
        // The separator keeps pool "ab" apart from pool "a" with a body starting "b".
        assert_eq!(
            codec("ab", &[b"shared"]).decode(text.as_bytes(), NOW, None),
            Err(Invalid::BadSignature)
        );
    }

    #[test]
    fn reveals_nothing_and_has_fixed_length() {
        let c = codec("shop", &[b"secret-one"]);
        for (i, id) in ["shop-1", "10.0.0.11:8080", "backend.example.com"]
            .iter()
            .enumerate()
        {
            for issued in [0, 1, NOW, u64::MAX] {
                let a = Affinity {
                    backend: backend_digest("shop", id),
                    nonce: [i as u8; NONCE_LEN],
                    issued,
                };
                let text = c.encode(&a);
                assert_eq!(text.len(), ENCODED_LEN);
                assert!(!text.contains(id));
                assert!(text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                // Nothing address-like: no dots or colons, so no IPv4/IPv6/host:port.
                assert!(!text.contains(['.', ':']));
            }
        }
    }
}
