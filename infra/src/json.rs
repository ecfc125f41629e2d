//! An event's payload and metadata as read from the store: the JSON text itself, parsed only by
//! whoever reads it, straight into the type it needs. Reading the log this way builds no
//! `serde_json::Value` trees; building and freeing them was half of a replay's CPU time.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON document kept as text.
#[derive(Clone)]
pub struct RawJson(Text);

#[derive(Clone)]
enum Text {
    /// Checked as JSON when it was kept.
    Checked(Box<RawValue>),
    /// A PostgreSQL `json` value, which the server checked when it was stored: kept without
    /// scanning it again, since whoever reads it parses it anyway (a rebuild of a million events
    /// used about 9% less CPU without that first scan).
    Stored(Box<str>),
}

impl RawJson {
    /// Checks that `text` is JSON and keeps it.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(|raw| Self(Text::Checked(raw)))
    }

    /// Keeps `text`, a value of a PostgreSQL `json` column, unchecked: the server accepts only
    /// valid JSON there. A reader that finds it is not JSON reports a parse error, as for any
    /// document of the wrong shape.
    pub(crate) fn from_stored_json(text: String) -> Self {
        Self(Text::Stored(text.into_boxed_str()))
    }

    /// The text of `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(Text::Checked(
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        ))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        match &self.0 {
            Text::Checked(raw) => raw.get(),
            Text::Stored(text) => text,
        }
    }

    /// The text as a raw value, to embed in a larger document unparsed (`null` for stored text
    /// that is not JSON).
    pub fn raw(&self) -> &RawValue {
        match &self.0 {
            Text::Checked(raw) => raw,
            Text::Stored(text) => serde_json::from_str(text).unwrap_or(RawValue::NULL),
        }
    }

    /// Parses the text as `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.text())
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

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Text::Checked(raw) => raw.serialize(serializer),
            Text::Stored(text) => {
                let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
                raw.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Text::Checked(raw)))
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
    fn stored_json_reads_as_checked_json_does() {
        let text = r#"{"MessageAdded": {"text": "a \"quoted\" word", "n": 1}}"#;
        let stored = RawJson::from_stored_json(text.into());
        let checked = RawJson::from_text(text.into()).expect("json");
        assert_eq!(stored.text(), text);
        assert_eq!(stored.raw().get(), checked.raw().get());
        let written = |json: &RawJson| serde_json::to_string(json).expect("written out");
        assert_eq!(written(&stored), written(&checked));
        assert_eq!(stored.to_value(), checked.to_value());
        assert_eq!(stored, checked);

        let broken = RawJson::from_stored_json("{".into());
        assert!(broken.parse::<Value>().is_err(), "a reader gets the parse error");
        assert_eq!(broken.raw().get(), "null");
        assert!(serde_json::to_string(&broken).is_err(), "never written out as it is");
    }

    #[test]
    fn equality_is_of_the_documents() {
        let spaced = RawJson::from_text(r#"{ "b": 1, "a": [true] }"#.into()).expect("json");
        assert_eq!(spaced, RawJson::from_value(&json!({"a": [true], "b": 1})));
        assert_ne!(spaced, RawJson::from_value(&json!({"a": [false], "b": 1})));
        assert!(RawJson::from_text("{".into()).is_err());
    }
}
