//! Unknown-key suggestions: the keys the schema accepts for a table, read from its derived
//! `Deserialize` so they cannot drift from it, and the closest one to a typo.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::keypath::*;
use super::schema::*;

/// The keys serde accepts for `T`, read from its derived `Deserialize` so they cannot drift
/// from the schema above.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// The keys allowed in the table at `parent`, if it is one of the schema's structs.
pub(super) fn known_keys(parent: &KeyPath) -> Option<&'static [&'static str]> {
    use Seg::{Index as I, Key as K};
    let segs: Vec<Result<&str, usize>> = parent
        .0
        .iter()
        .map(|s| match s {
            K(k) => Ok(k.as_str()),
            I(i) => Err(*i),
        })
        .collect();
    Some(match segs.as_slice() {
        [] => fields_of::<File>(),
        [Ok("server")] => fields_of::<Server>(),
        [Ok("server"), Ok("tls"), Err(_)] => fields_of::<Tls>(),
        [Ok("server"), Ok("tls"), Err(_), Ok("certs"), Err(_)] => fields_of::<CertFiles>(),
        [Ok("log")] => fields_of::<Log>(),
        [Ok("affinity")] => fields_of::<Affinity>(),
        [Ok("route"), Err(_)] => fields_of::<Route>(),
        [Ok("pool"), Ok(_)] => fields_of::<Pool>(),
        [Ok("pool"), Ok(_), Ok("cookie")] => fields_of::<Cookie>(),
        [Ok("pool"), Ok(_), Ok("hash")] => fields_of::<Hash>(),
        [Ok("pool"), Ok(_), Ok("health")] => fields_of::<Health>(),
        [Ok("pool"), Ok(_), Ok("circuit_breaker")] => fields_of::<CircuitBreaker>(),
        [Ok("pool"), Ok(_), Ok("tls")] => fields_of::<UpstreamTls>(),
        [Ok("pool"), Ok(_), Ok("discover")] => fields_of::<Discover>(),
        [Ok("pool"), Ok(_), Ok("affinity")] => fields_of::<PoolAffinity>(),
        [Ok("pool"), Ok(_), Ok("backend"), Err(_)] => fields_of::<Backend>(),
        [Ok("pool"), Ok(_), Ok("outlier")] => fields_of::<Outlier>(),
        [Ok("jwt"), Ok(_)] => fields_of::<Jwt>(),
        [Ok("rate_limit"), Ok(_)] => fields_of::<RateLimit>(),
        [Ok("redis")] => fields_of::<Redis>(),
        _ => return None,
    })
}

/// The closest known key within edit distance 2 (and closer than the key's own length, so
/// `x` does not suggest `id`).
pub(super) fn suggest(unknown: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2 && *d < unknown.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
