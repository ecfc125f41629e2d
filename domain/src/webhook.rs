//! Webhook subscriptions: a URL that receives a tenant's events over HTTP, with the event and
//! aggregate types it wants, versioned as a [`Definition`] so that who changed a subscription's
//! URL, and when, is on its stream like any other edit. Its signing secret is not part of it
//! (events are exported and relayed; the secret is kept sealed beside them), nor is how its
//! deliveries go (a cursor, retries, a pause), which changes with every delivery.

use serde::{Deserialize, Serialize};

use crate::definition::{Defined, Definition};
use crate::validate::{self, FieldError, MAX_SHORT_TEXT};

/// The most event (or aggregate) types one subscription names.
pub const MAX_TYPES: usize = 100;

/// The longest URL a subscription takes.
pub const MAX_URL: usize = 2048;

/// How events are put into requests (CloudEvents 1.0 HTTP binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContentMode {
    /// One event per request, `application/cloudevents+json`.
    #[default]
    Structured,
    /// Up to 100 events per request, in order, as a JSON array
    /// (`application/cloudevents-batch+json`).
    Batched,
}

/// A webhook subscription, as one version records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "CRM sync",
    "url": "https://crm.example.com/hooks/colloquy", "event_types": ["MessageAdded", "StatusChanged"],
    "aggregate_types": [], "active": true, "content_mode": "structured"})))]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// What people call it.
    pub name: String,
    /// Where events are POSTed: `http` or `https`, with a host.
    pub url: String,
    /// The event types it receives (`MessageAdded`); none: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The aggregate types it receives (`conversation`, `contact`, `group`, `sla`...); none:
    /// every type. An event is sent when it passes both lists.
    #[serde(default)]
    pub aggregate_types: Vec<String>,
    /// Whether it receives events; an inactive one keeps its place and resumes from there.
    #[serde(default = "active_by_default")]
    pub active: bool,
    /// One event per request, or batches.
    #[serde(default)]
    pub content_mode: ContentMode,
}

fn active_by_default() -> bool {
    true
}

impl Webhook {
    /// Whether an event of `event_type` on an aggregate of `aggregate_type` is sent to it.
    pub fn wants(&self, aggregate_type: &str, event_type: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.aggregate_types.is_empty() || self.aggregate_types.iter().any(|t| t == aggregate_type))
    }
}

/// A type name in a filter: 1 to 64 ASCII letters, digits and underscores.
fn type_names(field: &str, names: &[String]) -> Result<Vec<String>, FieldError> {
    if names.len() > MAX_TYPES {
        return Err(FieldError::new(field, format!("at most {MAX_TYPES} types")));
    }
    let mut kept: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(FieldError::new(
                field,
                format!("{name:?} is not a type name (1 to 64 letters, digits, _)"),
            ));
        }
        if !kept.iter().any(|k| k == name) {
            kept.push(name.to_owned());
        }
    }
    Ok(kept)
}

/// An absolute `http` or `https` URL with a host, no credentials and no fragment. Whether its
/// host may be reached (not a private address) is the delivering side's question.
pub fn webhook_url(field: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.len() > MAX_URL {
        return Err(FieldError::new(field, format!("at most {MAX_URL} characters")));
    }
    let url = url::Url::parse(value).map_err(|e| FieldError::new(field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(field, "must be an http or https URL"));
    }
    if url.host().is_none() {
        return Err(FieldError::new(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not carry credentials; requests are signed instead"));
    }
    if url.fragment().is_some() {
        return Err(FieldError::new(field, "must not have a fragment"));
    }
    Ok(url.to_string())
}

impl Definition for Webhook {
    const TYPE: &'static str = "webhook";
    const NOUN: &'static str = "webhook";
    const EVENT_PREFIX: &'static str = "Webhook";

    fn name(&self) -> &str {
        &self.name
    }

    fn validated(mut self) -> Result<Self, FieldError> {
        self.name = validate::text("name", &self.name, MAX_SHORT_TEXT, true)?;
        self.url = webhook_url("url", &self.url)?;
        self.event_types = type_names("event_types", &self.event_types)?;
        self.aggregate_types = type_names("aggregate_types", &self.aggregate_types)?;
        Ok(self)
    }
}

/// The Webhook aggregate.
pub type WebhookAggregate = Defined<Webhook>;

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> Webhook {
        Webhook {
            name: " CRM ".into(),
            url: url.into(),
            event_types: vec!["MessageAdded".into(), "MessageAdded".into()],
            aggregate_types: vec![],
            active: true,
            content_mode: ContentMode::Structured,
        }
    }

    #[test]
    fn a_valid_subscription_is_normalised() {
        let valid = webhook(" https://crm.example.com/hooks?x=1 ").validated().expect("valid");
        assert_eq!(valid.name, "CRM");
        assert_eq!(valid.url, "https://crm.example.com/hooks?x=1");
        assert_eq!(valid.event_types, vec!["MessageAdded".to_owned()]);
    }

    #[test]
    fn urls_without_http_a_host_or_with_credentials_are_refused() {
        for url in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
            "https://example.com/#frag",
            "mailto:a@example.com",
        ] {
            let refused = webhook(url).validated().expect_err(url);
            assert_eq!(refused.field, "url", "{url}");
        }
    }

    #[test]
    fn filters_take_type_names_only() {
        let mut bad = webhook("https://example.com/");
        bad.event_types = vec!["Message Added".into()];
        assert_eq!(bad.validated().expect_err("space").field, "event_types");
    }

    #[test]
    fn wants_passes_both_filters() {
        let mut hook = webhook("https://example.com/").validated().expect("valid");
        assert!(hook.wants("conversation", "MessageAdded"));
        assert!(!hook.wants("conversation", "StatusChanged"));
        hook.aggregate_types = vec!["group".into()];
        assert!(!hook.wants("conversation", "MessageAdded"));
        assert!(hook.wants("group", "MessageAdded"));
        hook.event_types.clear();
        hook.aggregate_types.clear();
        assert!(hook.wants("contact", "ContactErased"));
    }
}
