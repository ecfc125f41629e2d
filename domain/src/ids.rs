//! Identifiers. Aggregate and message ids are UUIDs (v7, so they sort by creation time); tenant
//! ids are short slugs chosen by the operator.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id. Ids are chosen outside the domain, so this is called
            /// by the API layer and by tests, never by `handle`.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a Contact aggregate.
    ContactId
);
uuid_id!(
    /// Identifies a Conversation aggregate.
    ConversationId
);
uuid_id!(
    /// Identifies a message inside its conversation.
    MessageId
);

/// The tenant (an account or location) that owns a stream. Every event belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// A tenant id: 1 to 63 characters of lowercase ASCII letters, digits, `-` and `_`, starting
    /// with a letter or digit. The shape is kept narrow because it becomes part of NATS subjects.
    pub fn parse(value: &str) -> Result<Self, InvalidTenantId> {
        let valid_chars =
            value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let valid_start = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if (1..=63).contains(&value.len()) && valid_chars && valid_start {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidTenantId(value.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant id that does not have the allowed shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant id {0:?} must be 1-63 lowercase letters, digits, '-' or '_'")]
pub struct InvalidTenantId(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_slugs_and_refuse_subject_breaking_characters() {
        assert!(TenantId::parse("default").is_ok());
        assert!(TenantId::parse("acme-eu_1").is_ok());
        for bad in ["", "Acme", "a.b", "a b", "a*", "-lead", &"x".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
