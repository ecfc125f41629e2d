//! An event's payload and metadata as read from the store: the JSON text itself, parsed only by
//! whoever reads it, straight into the type it needs. Reading the log this way builds no
//! `serde_json::Value` trees; building and freeing them was half of a replay's CPU time.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON document kept as text (always valid JSON).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Checks that `text` is JSON and keeps it.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The text of `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The text as a borrowed raw value, to embed in a larger document unparsed.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// Parses the text as `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The document as a `Value` tree.
    pub fn to_value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }

    /// The string at top-level key `key` of an object; `None` when missing, not a string, or
    /// the document not an object.
    pub fn str_field(&self, key: &str) -> Option<String> {
        let fields: std::collections::HashMap<Cow<'_, str>, &RawValue> = self.parse().ok()?;
        let value = fields.get(key)?;
        serde_json::from_str::<String>(value.get()).ok()
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl PartialEq for RawJson {
    /// Equal when the documents are, whatever their spacing and key order.
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_read_from_the_text() {
        let raw =
            RawJson::from_text(r#"{"tenant_id": "acme", "n": 3, "escaped": "a\"b"}"#.into()).expect("json");
        assert_eq!(raw.str_field("tenant_id").as_deref(), Some("acme"));
        assert_eq!(raw.str_field("escaped").as_deref(), Some("a\"b"));
        assert_eq!(raw.str_field("n"), None);
        assert_eq!(raw.str_field("missing"), None);
        assert_eq!(RawJson::from_text("[1]".into()).expect("json").str_field("tenant_id"), None);
    }

    #[test]
    fn equality_is_of_the_documents() {
        let spaced = RawJson::from_text(r#"{ "b": 1, "a": [true] }"#.into()).expect("json");
        assert_eq!(spaced, RawJson::from_value(&json!({"a": [true], "b": 1})));
        assert_ne!(spaced, RawJson::from_value(&json!({"a": [false], "b": 1})));
        assert!(RawJson::from_text("{".into()).is_err());
    }
}
