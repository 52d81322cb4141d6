//! The claims of a validated token that tether keeps ([`Claims`]), and the scanner that reads
//! them and the JOSE header out of a token's JSON in one pass each.
//!
//! The JOSE header and the claims object, parsed for what tether checks and keeps. Strict where
//! it matters (RFC 7519 §4.1, and the lesson of CVE-2026-25537): a registered time claim of the
//! wrong type is a refusal, never "absent"; duplicated registered claims are refused.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The claims of a validated token that tether reads: those named in `forward_claims` or in a
/// `jwt:CLAIM` key spec (the config's `Jwt::claims`). Strings as they are; numbers, booleans,
/// arrays and objects as their JSON text; `null` as absent.
#[derive(Debug, Default)]
pub struct Claims {
    pub(super) names: Arc<[Box<str>]>,
    pub(super) values: Vec<Option<Box<str>>>,
}

impl Claims {
    /// Whether tether keeps no claim of this token (nothing reads any).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

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

use jsonwebtoken::Algorithm;

/// `alg` and `kid` of a JOSE header (its decoded JSON). `None` (a refusal) for anything
/// malformed, an unknown or `none` algorithm, and any `crit` or `b64` member: tether
/// implements no JWS extension (RFC 7515 §4.1.11), and an unencoded payload (RFC 7797) is
/// never accepted. The `kid` borrows from `json` unless it has escapes.
pub fn header(json: &[u8]) -> Option<(Algorithm, Option<Cow<'_, str>>)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
        #[serde(borrow, default)]
        kid: Option<Cow<'a, str>>,
        #[serde(default)]
        crit: Option<IgnoredAny>,
        #[serde(default)]
        b64: Option<IgnoredAny>,
    }
    let h: Head = serde_json::from_slice(json).ok()?;
    if h.crit.is_some() || h.b64.is_some() {
        return None;
    }
    let alg = Algorithm::from_str(&h.alg).ok()?;
    Some((alg, h.kid))
}

/// A registered time claim (`exp`, `nbf`).
#[derive(Default)]
pub enum Time {
    #[default]
    Absent,
    /// Not a non-negative number.
    Bad,
    At(u64),
}

#[derive(Default)]
pub struct Registered {
    pub exp: Time,
    pub nbf: Time,
    /// `None` when absent or not a string.
    pub iss: Option<String>,
    /// `None` when absent or neither a string nor an array of strings.
    pub aud: Option<Vec<String>>,
}

/// Parses a claims object: the registered claims, and each of `names` into `values` (same
/// order). `None` for anything malformed.
pub fn scan(
    json: &[u8],
    names: &[Box<str>],
    values: &mut [Option<Box<str>>],
) -> Option<Registered> {
    let mut out = Registered::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    Scan {
        names,
        values,
        out: &mut out,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    Some(out)
}

struct Scan<'a> {
    names: &'a [Box<str>],
    values: &'a mut [Option<Box<str>>],
    out: &'a mut Registered,
}

const REGISTERED: [&str; 4] = ["exp", "nbf", "iss", "aud"];

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a claims object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = [false; 4];
        while let Some((reg, kept)) = map.next_key_seed(Name(self.names))? {
            if reg.is_none() && kept.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let v: Value = map.next_value()?;
            if let Some(r) = reg {
                if std::mem::replace(&mut seen[r], true) {
                    return Err(serde::de::Error::custom("duplicate registered claim"));
                }
                match r {
                    0 => self.out.exp = time(&v),
                    1 => self.out.nbf = time(&v),
                    2 => self.out.iss = v.as_str().map(str::to_owned),
                    _ => self.out.aud = audience(&v),
                }
            }
            if let Some(i) = kept {
                self.values[i] = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.into_boxed_str()),
                    other => Some(other.to_string().into_boxed_str()),
                };
            }
        }
        Ok(())
    }
}

fn time(v: &Value) -> Time {
    match v {
        Value::Null => Time::Absent,
        Value::Number(n) => match n.as_u64() {
            Some(t) => Time::At(t),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                    Time::At(f.round() as u64)
                }
                _ => Time::Bad,
            },
        },
        _ => Time::Bad,
    }
}

fn audience(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

/// A member name: its index among the registered claims and among the kept names.
struct Name<'a>(&'a [Box<str>]);

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = (Option<usize>, Option<usize>);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = (Option<usize>, Option<usize>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a claim name")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok((
            REGISTERED.iter().position(|r| *r == s),
            self.0.iter().position(|n| **n == *s),
        ))
    }
}
