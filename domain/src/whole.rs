//! Whole numbers as JSON Schema reads them: `integer` admits `2.0` as well as `2`, and a generated
//! client (or a JavaScript one, whose numbers are all floats) may send either. serde refuses a
//! float for an integer field; these accept one whose fraction is zero and that is in range.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// An optional `u64` given as `7` or `7.0`.
pub fn optional_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Number>::deserialize(deserializer)?
        .map(|number| {
            number
                .as_u64()
                .or_else(|| {
                    whole(&number)
                        .filter(|f| *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number of 0 or more")))
        })
        .transpose()
}

/// An optional `i64` given as `-7` or `-7.0`.
pub fn optional_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<Number>::deserialize(deserializer)?
        .map(|number| {
            number
                .as_i64()
                .or_else(|| {
                    whole(&number)
                        .filter(|f| *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))
        })
        .transpose()
}

/// A whole number of type `T` given as `7` or `7.0`, in `T`'s range.
pub fn int<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let value = optional_i64(deserializer)?.ok_or_else(|| D::Error::custom("a whole number is required"))?;
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range")))
}

/// An optional whole number of type `T` given as `7` or `7.0`, in `T`'s range.
pub fn optional_int<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    optional_i64(deserializer)?
        .map(|value| T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range"))))
        .transpose()
}

/// The number, if it is a float with no fraction.
fn whole(number: &Number) -> Option<f64> {
    number.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sized {
        #[serde(default, deserialize_with = "optional_u64")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "optional_i64")]
        at: Option<i64>,
    }

    fn parse(json: &str) -> Result<Sized, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_whole_float_is_a_whole_number() {
        let sized = parse(r#"{"size": 6304910.0, "at": -3.0}"#).expect("whole floats");
        assert_eq!((sized.size, sized.at), (Some(6_304_910), Some(-3)));
        let sized = parse(r#"{"size": 7, "at": null}"#).expect("integers and null");
        assert_eq!((sized.size, sized.at), (Some(7), None));
        assert_eq!(parse("{}").expect("absent").size, None);
    }

    #[test]
    fn fractions_negatives_and_out_of_range_are_refused() {
        for body in [
            r#"{"size": 1.5}"#,
            r#"{"size": -1}"#,
            r#"{"size": -1.0}"#,
            r#"{"size": 1e20}"#,
            r#"{"at": 1e19}"#,
            r#"{"size": "7"}"#,
        ] {
            assert!(parse(body).is_err(), "{body}");
        }
    }
}
