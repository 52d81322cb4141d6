//! Building the verifiers of a snapshot: one [`Verifier`] per `[jwt.NAME]`, with where its
//! token is, its key source (a `jwks_url`'s live key set kept across a reload when the URL is
//! unchanged), its checks and metric handles, and the claim header names `forward_claims`
//! writes.

use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use prometheus::IntCounter;

use super::cache;
use super::fetch::Remote;
use super::outcome::RESULTS;
use crate::config::keys::KeySet;
use crate::config::{Config, Jwt as JwtConf, JwtKeys, TokenFrom};
use crate::state::metrics::Metrics;

/// Where a key set comes from at run time.
pub enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<Remote>),
}

/// One `[jwt.NAME]`, ready for requests: checks and metric handles resolved at load.
pub struct Verifier {
    pub name: Arc<str>,
    pub(super) from: From,
    pub keys: Keys,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) issuer: Option<Box<str>>,
    pub(super) audience: Box<[Box<str>]>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub(super) leeway: u64,
    pub(super) claim_names: Arc<[Box<str>]>,
    /// (index into the kept claims, header name) for `forward_claims`.
    pub forward: Vec<(usize, HeaderName)>,
    /// `tether_jwt_total` by [`RESULTS`] order.
    pub counters: [IntCounter; 4],
    /// Tokens found valid, so that a session's next requests need no signature check.
    pub(super) cache: cache::Cache,
}

pub(super) enum From {
    Authorization,
    Header(HeaderName),
    Cookie(String),
}

impl Verifier {
    /// Builds the verifier of `conf`. `prev` lends the live key set of a `jwks_url` whose URL is
    /// unchanged (keys survive a reload); a new URL starts empty until the fetcher fills it.
    pub fn new(conf: &JwtConf, counters: [IntCounter; 4], prev: &[Verifier]) -> Verifier {
        crate::config::crypto::install();
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
            issuer: conf.issuer.as_deref().map(Into::into),
            audience: conf.audience.iter().map(|a| a.as_str().into()).collect(),
            leeway: conf.leeway.as_secs(),
            claim_names,
            forward,
            counters,
            cache: cache::Cache::default(),
        }
    }

    /// The remote key set, if this verifier has one.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match &self.keys {
            Keys::Remote(r) => Some(r),
            Keys::Static(_) => None,
        }
    }
}

/// The verifiers of `config`'s `[jwt.NAME]` tables, with their metric series. `prev`: the
/// snapshot being replaced, whose `jwks_url` key sets are kept when the URL is unchanged.
pub fn verifiers(config: &Config, metrics: &Metrics, prev: Option<&[Verifier]>) -> Vec<Verifier> {
    config
        .jwts
        .iter()
        .map(|j| {
            let counters = RESULTS.map(|r| metrics.jwt.with_label_values(&[&j.name, r]));
            Verifier::new(j, counters, prev.unwrap_or(&[]))
        })
        .collect()
}

/// Every header name some `forward_claims` writes.
pub fn claim_headers(verifiers: &[Verifier]) -> Vec<HeaderName> {
    let mut v: Vec<HeaderName> = Vec::new();
    for j in verifiers {
        for (_, h) in &j.forward {
            if !v.contains(h) {
                v.push(h.clone());
            }
        }
    }
    v
}
