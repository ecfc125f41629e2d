//! Serde helpers for request bodies.

use serde::{Deserialize, Deserializer};

/// Tells an absent field (`None`, with `#[serde(default)]`) from an explicit `null`
/// (`Some(None)`), as PATCH bodies need.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
