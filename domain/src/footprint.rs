//! How much memory an aggregate's state holds, estimated, so that a cache of loaded aggregates
//! can be bounded in bytes: a conversation grows with its messages and their texts, and a count
//! of aggregates or of events says little about what they weigh.
//!
//! The estimate counts each value's own size and what it owns on the heap (string and vector
//! capacities, boxed parts, map entries) plus an allocator's overhead per allocation. It is an
//! estimate: the allocator's rounding and a map's spare room are not counted exactly.

use serde_json::{Map, Value};

/// What the allocator adds to each allocation, about (glibc's header and its rounding).
pub const PER_ALLOCATION: usize = 16;

/// What a tree map adds per entry beyond its key and value, about (a B-tree node's share).
const PER_MAP_ENTRY: usize = 16;

/// An aggregate state's estimated memory: its own size and what it owns on the heap.
pub trait Footprint {
    /// Bytes, estimated.
    fn footprint(&self) -> usize;
}

/// The heap a string owns.
pub fn string(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        value.len() + PER_ALLOCATION
    }
}

/// The heap an optional string owns.
pub fn optional_string(value: Option<&String>) -> usize {
    value.map_or(0, |v| string(v))
}

/// The heap some optional strings own, together.
pub fn optional_strings<const N: usize>(parts: [&Option<String>; N]) -> usize {
    parts.into_iter().map(|part| optional_string(part.as_ref())).sum()
}

/// The heap a vector owns: its buffer and what each element owns.
pub fn vec<T>(items: &[T], capacity: usize, owned: impl Fn(&T) -> usize) -> usize {
    let buffer = if capacity == 0 { 0 } else { capacity * size_of::<T>() + PER_ALLOCATION };
    buffer + items.iter().map(owned).sum::<usize>()
}

/// The heap a set or map of strings owns, entries included.
pub fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> usize {
    items.into_iter().map(|item| size_of::<String>() + PER_MAP_ENTRY + string(item)).sum()
}

/// The heap a map's entries own, given the heap each value owns beyond its own size.
pub fn map_entries<K, V>(entries: usize, owned: usize) -> usize {
    entries * (size_of::<K>() + size_of::<V>() + PER_MAP_ENTRY) + owned
}

/// The heap a JSON value owns.
pub fn json(value: &Value) -> usize {
    match value {
        Value::String(text) => string(text),
        Value::Array(items) => vec(items, items.capacity(), json),
        Value::Object(object) => json_object(object),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// The heap a JSON object owns.
pub fn json_object(object: &Map<String, Value>) -> usize {
    let owned = object.iter().map(|(key, value)| string(key) + json(value)).sum();
    map_entries::<String, Value>(object.len(), owned)
}

/// The heap a box owns: what it holds, and what that owns.
pub fn boxed<T>(value: Option<&T>, owned: impl Fn(&T) -> usize) -> usize {
    value.map_or(0, |v| size_of::<T>() + PER_ALLOCATION + owned(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_string_weighs_its_length_and_empty_ones_nothing() {
        assert_eq!(string(""), 0);
        assert_eq!(string("hello"), 5 + PER_ALLOCATION);
        assert_eq!(optional_string(None), 0);
        assert_eq!(optional_string(Some(&"hi".to_owned())), 2 + PER_ALLOCATION);
    }

    #[test]
    fn nested_json_weighs_more_than_its_parts() {
        let flat = json!({"plan": "pro"});
        let nested = json!({"plan": "pro", "seats": [{"name": "Ada"}, {"name": "Grace"}]});
        assert!(json(&flat) > string("plan") + string("pro"));
        assert!(json(&nested) > json(&flat) + string("Ada") + string("Grace"));
        assert_eq!(json(&json!(null)), 0);
    }

    #[test]
    fn a_vector_weighs_its_capacity_not_its_length() {
        let mut items: Vec<u64> = Vec::with_capacity(10);
        items.push(1);
        assert_eq!(vec(&items, items.capacity(), |_| 0), 10 * 8 + PER_ALLOCATION);
        assert_eq!(vec::<u64>(&[], 0, |_| 0), 0);
    }
}
