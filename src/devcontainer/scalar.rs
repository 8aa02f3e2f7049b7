//! Values the reference CLI takes as strings whatever their JSON type: `build.args`,
//! `containerEnv`, `remoteEnv` and feature options accept numbers and booleans
//! (`"LLVM_VERSION": 20`, `"INSTALL": true`) and use their JSON text.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, MapAccess, Visitor};

/// A string, number or boolean as the string the reference CLI makes of it.
pub fn to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `NULLABLE`: whether `null` (unset) is allowed.
struct Scalar<const NULLABLE: bool>(Option<String>);

impl<'de, const NULLABLE: bool> serde::Deserialize<'de> for Scalar<NULLABLE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: bool>;
        impl<'de, const N: bool> Visitor<'de> for V<N> {
            type Value = Scalar<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<N>, E> {
                Ok(Scalar(Some(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<N>, E> {
                if N { Ok(Scalar(None)) } else { Err(E::invalid_type(de::Unexpected::Other("null"), &self)) }
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar<N>, E> {
                self.visit_unit()
            }
        }
        d.deserialize_any(V::<NULLABLE>)
    }
}

fn read_map<'de, D: Deserializer<'de>, const NULLABLE: bool>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    struct M<const N: bool>;
    impl<'de, const N: bool> Visitor<'de> for M<N> {
        type Value = BTreeMap<String, Option<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of names to strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let Scalar::<N>(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(M::<NULLABLE>)
}

/// An object whose values are strings, numbers or booleans.
pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(read_map::<D, false>(d)?.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
}

/// The same, where `null` (unset) is allowed.
pub fn map_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    read_map::<D, true>(d)
}
