//! Lists in request bodies, bounded while they are parsed: a list longer than its limit is
//! refused at the item past it, before any per-item work (normalising, deduplicating, a lookup
//! per item) and before the rest is even read. Use with `#[serde(deserialize_with = ...)]` and
//! state the same limit as the field's `max_items` in its schema.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

/// The most values one list filter (`status`, `label`, `channel`, `priority`) takes.
pub const MAX_FILTER_VALUES: usize = 50;
/// The most reactions one request adds or removes.
pub const MAX_REACTIONS: usize = 20;
/// The most scopes one token is given (there are fewer scopes than that).
pub const MAX_SCOPES: usize = 32;

/// A JSON array of at most `N` items.
pub fn at_most<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(AtMost::<T, N>(PhantomData))
}

/// An optional JSON array of at most `N` items (`null` or absent is `None`; give the field
/// `#[serde(default)]` too).
pub fn optional_at_most<'de, D, T, const N: usize>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_option(Optional::<T, N>(PhantomData))
}

struct AtMost<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for AtMost<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a list of at most {N} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
        while let Some(item) = seq.next_element()? {
            if items.len() == N {
                return Err(serde::de::Error::custom(format!("at most {N} items are allowed")));
            }
            items.push(item);
        }
        Ok(items)
    }
}

struct Optional<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Optional<T, N> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "null or a list of at most {N} items")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        at_most::<D, T, N>(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "at_most::<_, _, 3>")]
        items: Vec<String>,
        #[serde(default, deserialize_with = "optional_at_most::<_, _, 2>")]
        more: Option<Vec<u8>>,
    }

    #[test]
    fn a_list_past_its_limit_is_refused_and_one_within_it_parses() {
        let body: Body = serde_json::from_str(r#"{"items": ["a", "b", "c"]}"#).expect("parsed");
        assert_eq!((body.items.len(), body.more), (3, None));
        let body: Body = serde_json::from_str(r#"{"items": [], "more": [1, 2]}"#).expect("parsed");
        assert_eq!(body.more, Some(vec![1, 2]));
        let body: Body = serde_json::from_str(r#"{"items": [], "more": null}"#).expect("parsed");
        assert_eq!(body.more, None);
        let error = serde_json::from_str::<Body>(r#"{"items": ["a", "b", "c", "d"]}"#).expect_err("refused");
        assert!(error.to_string().contains("at most 3 items"), "{error}");
        let error = serde_json::from_str::<Body>(r#"{"items": [], "more": [1, 2, 3]}"#).expect_err("refused");
        assert!(error.to_string().contains("at most 2 items"), "{error}");
    }

    #[test]
    fn a_long_list_is_refused_at_the_item_past_the_limit() {
        // The items after the limit are not even valid: the parse stopped before them.
        let error =
            serde_json::from_str::<Body>(r#"{"items": ["a", "b", "c", "d", 5]}"#).expect_err("refused");
        assert!(error.to_string().contains("at most 3 items"), "{error}");
    }
}
