//! `Instant`: a time a client gives (a body's time, a filter bound, `as_of`), parsed as RFC 3339
//! and held to `validate::instant`'s range at the edge, so no request carries a time the domain,
//! the stores or a client reading it back could not hold.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

use colloquy_domain::validate;

/// A client-given instant between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub DateTime<Utc>);

impl From<Instant> for DateTime<Utc> {
    fn from(instant: Instant) -> Self {
        instant.0
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = DateTime::<Utc>::deserialize(deserializer)?;
        // The field's name is added by the extractor (serde's path), so the rule speaks alone.
        validate::instant("", value).map(Self).map_err(|_| serde::de::Error::custom(validate::INSTANT_RANGE))
    }
}

impl utoipa::PartialSchema for Instant {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some("^(19[7-9][0-9]|[2-9][0-9]{3})-"))
            .description(Some(
                "An RFC 3339 time between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z; \
                 one outside that range is refused with 400.",
            ))
            .examples(["2026-11-23T14:05:00Z"])
            .into()
    }
}

impl utoipa::ToSchema for Instant {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Instant")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_outside_1970_to_9999_does_not_parse() {
        let parse = |text: &str| serde_json::from_value::<Instant>(serde_json::json!(text));
        assert!(parse("2026-11-23T14:05:00Z").is_ok());
        assert!(parse("1970-01-01T00:00:00Z").is_ok());
        for bad in ["-100000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "+10000-01-01T00:00:00Z"] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(error.contains("between 1970"), "{bad}: {error}");
        }
    }
}
