//! jsonwebtoken's signature verification on `ring` — the crypto library tether already runs
//! for TLS (rustls) and the affinity cookie — through jsonwebtoken's own extension point
//! ([`CryptoProvider`]). jsonwebtoken 10+ otherwise needs `aws-lc-rs` (a second C crypto
//! library to build) or the RustCrypto stack (whose `rsa` crate carries an open timing
//! advisory); ring verifies every algorithm tether accepts with the same primitives that
//! `aws-lc-rs`'s provider uses (aws-lc-rs mirrors ring's API), so this is a name-for-name port.
//!
//! Owns: mapping each JWS algorithm to ring's verification. Must not touch: claims or keys'
//! selection. tether never signs tokens: the signer factory refuses.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{hmac, signature as sig};

/// Installs the ring provider as jsonwebtoken's process default (idempotent). Called before any
/// key is built, so that every later `decode` finds it.
pub fn install() {
    let _ = RING.install_default();
}

static RING: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

fn new_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::Provider("tether verifies tokens and never signs them".into()).into())
}

enum Check {
    Hmac(hmac::Key),
    /// A public key in the encoding ring expects for the algorithm: PKCS#1 `RSAPublicKey` DER
    /// for RSA, the uncompressed point for ECDSA, the 32 raw bytes for Ed25519.
    Public(&'static dyn sig::VerificationAlgorithm, Vec<u8>),
    RsaComponents(&'static sig::RsaParameters, Vec<u8>, Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.check {
            Check::Hmac(k) => hmac::verify(k, msg, signature).is_ok(),
            Check::Public(alg, der) => sig::UnparsedPublicKey::new(*alg, der)
                .verify(msg, signature)
                .is_ok(),
            Check::RsaComponents(params, n, e) => sig::RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn rsa_params(alg: Algorithm) -> &'static sig::RsaParameters {
    match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        _ => &sig::RSA_PSS_2048_8192_SHA512,
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let check = match (alg.family(), key.kind()) {
        (AlgorithmFamily::Hmac, DecodingKeyKind::SecretOrDer(secret)) => {
            let h = match alg {
                Algorithm::HS256 => hmac::HMAC_SHA256,
                Algorithm::HS384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            Check::Hmac(hmac::Key::new(h, secret))
        }
        (AlgorithmFamily::Rsa, DecodingKeyKind::SecretOrDer(der)) => {
            Check::Public(rsa_params(alg), der.clone())
        }
        (AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            Check::RsaComponents(rsa_params(alg), n.clone(), e.clone())
        }
        (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
            let a: &'static dyn sig::VerificationAlgorithm = match alg {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
                _ => &sig::ECDSA_P384_SHA384_FIXED,
            };
            Check::Public(a, point.clone())
        }
        (AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(raw)) => {
            Check::Public(&sig::ED25519, raw.clone())
        }
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    };
    Ok(Box::new(RingVerifier { alg, check }))
}
