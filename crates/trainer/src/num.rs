//! Floats that may not be finite, in JSON. serde_json writes NaN and
//! infinities as `null` and then refuses to read `null` into an f64, so a
//! diverged run would make its own run.json unreadable. Fields that can
//! hold such values use these modules: finite numbers stay JSON numbers
//! (bit-exact with `float_roundtrip`), the others become the strings
//! `"NaN"`, `"inf"` and `"-inf"` (Rust's spelling; `f64::from_str` reads
//! them), and `null` from older files reads back as NaN.

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

fn name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

struct AnyF64;

impl<'de> Visitor<'de> for AnyF64 {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or \"NaN\", \"inf\" or \"-inf\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "Infinity" | "+inf" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
}

/// An `f64` field: `#[serde(with = "crate::num::f64_any")]`.
pub mod f64_any {
    use super::*;

    /// Writes a number, or a string for a non-finite value.
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_str(name(*x))
        }
    }

    /// Reads what `serialize` writes (and `null`, as NaN).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(AnyF64)
    }
}

/// An `f32` field (a checkpoint's partial loss sum).
pub mod f32_any {
    use super::*;

    /// Writes a number, or a string for a non-finite value.
    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f32(*x)
        } else {
            s.serialize_str(name(*x as f64))
        }
    }

    /// Reads what `serialize` writes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        d.deserialize_any(AnyF64).map(|v| v as f32)
    }
}

/// An `Option<f64>` field; put `#[serde(default)]` beside it.
pub mod opt_f64_any {
    use super::*;

    /// `None` is `null`; a value as [`f64_any`] writes it.
    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(v) => f64_any::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// `null` (or absent, with `default`) is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<f64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, a number, or \"NaN\", \"inf\" or \"-inf\"")
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<f64>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
                d.deserialize_any(AnyF64).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Row {
        #[serde(with = "super::f64_any")]
        a: f64,
        #[serde(default, with = "super::opt_f64_any")]
        b: Option<f64>,
        #[serde(with = "super::f32_any")]
        c: f32,
    }

    #[test]
    fn non_finite_values_survive_a_round_trip_and_finite_ones_stay_exact() {
        let values = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.9332591768631813,
            -0.0,
            5e-324,
        ];
        for v in values {
            let row = Row {
                a: v,
                b: Some(v),
                c: v as f32,
            };
            let json = serde_json::to_string(&row).unwrap();
            let back: Row = serde_json::from_str(&json).unwrap();
            let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            assert!(same(back.a, v), "{json}");
            assert!(same(back.b.unwrap(), v), "{json}");
            assert!(same(back.c as f64, v as f32 as f64), "{json}");
            if v.is_finite() {
                assert!(
                    !json.contains('"') || json.matches('"').count() == 6,
                    "{json}"
                );
            }
        }
        let old: Row = serde_json::from_str(r#"{"a":null,"b":null,"c":1}"#).unwrap();
        assert!(old.a.is_nan() && old.b.is_none() && old.c == 1.0);
        let absent: Row = serde_json::from_str(r#"{"a":1,"c":1}"#).unwrap();
        assert_eq!(absent.b, None);
        assert!(serde_json::from_str::<Row>(r#"{"a":"lots","c":1}"#).is_err());
    }
}
