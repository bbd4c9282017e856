//! The wire form of an endpoint, as files and registries hold it.
//!
//! The same form as the endpoint model's own serde support (`addr`
//! required; `id`, `locality`, `weight`, `priority`, `labels`, `health`
//! optional; unknown fields rejected), but every rule is checked while its
//! field is read, so a parser reports the line and path of the field at
//! fault rather than of the whole endpoint.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer};
use watertight_core::endpoint::DEFAULT_WEIGHT;
use watertight_core::{Address, Endpoint, Health, Locality};

/// An endpoint read field by field.
pub(crate) struct WireEndpoint(pub(crate) Endpoint);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(default)]
    id: Option<Id>,
    addr: Addr,
    #[serde(default)]
    locality: Locality,
    #[serde(default)]
    weight: Option<Weight>,
    #[serde(default)]
    priority: u8,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    health: Health,
}

/// The path to the failing value (`endpoints[2].weight`), as far as it is
/// known, or `None` at the root.
pub(crate) fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut s = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            // A key that did not parse: the path ends where it was.
            Segment::Unknown => break,
        }
    }
    (!s.is_empty()).then_some(s)
}

impl<'de> Deserialize<'de> for WireEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only a map: a derived struct would also take a list of its fields
        // in order, and name itself in errors.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an endpoint: a table with at least `addr`")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                Fields::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        let f = d.deserialize_map(V)?;
        let mut e = Endpoint::new(f.addr.0);
        if let Some(id) = f.id {
            e.id = id.0.into();
        }
        e.locality = f.locality;
        e.weight = f.weight.map_or(DEFAULT_WEIGHT, |w| w.0);
        e.priority = f.priority;
        e.labels = f.labels;
        e.health = f.health;
        Ok(WireEndpoint(e))
    }
}

struct Addr(Address);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Addr).map_err(de::Error::custom)
    }
}

struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(Id(s))
    }
}

struct Weight(u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Weight;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a weight from 1 to 4294967295")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                match u32::try_from(v) {
                    Ok(0) => Err(E::custom("must be at least 1")),
                    Ok(w) => Ok(Weight(w)),
                    Err(_) => Err(E::custom("must be at most 4294967295")),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("must be at least 1")),
                }
            }
        }
        d.deserialize_u64(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form reads what the endpoint model's serde support reads,
    /// and rejects what it rejects.
    #[test]
    fn agrees_with_the_endpoint_model() {
        let good = [
            r#"{"addr":"10.0.0.1:80"}"#,
            r#"{"addr":"[::1]:443","id":"a","weight":7,"priority":2}"#,
            r#"{"addr":"api.svc:80","locality":{"region":"r","zone":"z","subzone":"s"},"labels":{"version":"v2"},"health":"degraded"}"#,
        ];
        for doc in good {
            let ours = serde_json::from_str::<WireEndpoint>(doc).unwrap().0;
            let core: Endpoint = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, core, "{doc}");
        }
        let bad = [
            r#"{"addr":"nowhere"}"#,
            r#"{"addr":"a:1","weight":0}"#,
            r#"{"addr":"a:1","weight":-3}"#,
            r#"{"addr":"a:1","id":""}"#,
            r#"{"addr":"a:1","wieght":3}"#,
            r#"{"addr":"a:1","health":"sick"}"#,
            r#"{"weight":3}"#,
        ];
        for doc in bad {
            assert!(serde_json::from_str::<WireEndpoint>(doc).is_err(), "{doc}");
            assert!(serde_json::from_str::<Endpoint>(doc).is_err(), "{doc}");
        }
    }
}
