//! Field rules shared by the aggregates: phone numbers, e-mail addresses, labels, free text.
//! Each returns the normalised value or a [`FieldError`] naming the field and what is wrong.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A field that breaks its rule: which field, and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's name as the API spells it.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A refusal of `field` because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// The longest subject, name or label we store, in characters.
pub const MAX_SHORT_TEXT: usize = 255;
/// The longest message text we store, in characters (WhatsApp allows 4,096; e-mail bodies more).
pub const MAX_MESSAGE_TEXT: usize = 65_536;
/// The most labels one conversation or contact carries.
pub const MAX_LABELS: usize = 50;

/// The earliest instant a client may give (a time, a filter bound, a moment in the past to read
/// as of): the Unix epoch. Nothing Colloquy records happened before it.
pub fn earliest_instant() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest instant a client may give: the last second of year 9999, the last that RFC 3339's
/// four-digit year can write (and so every client, JSON schema and database can read back).
pub fn latest_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An instant a client gave: between [`earliest_instant`] and [`latest_instant`], the one rule for
/// every client-given time. (Outside it chrono still parses a year like -100000, which
/// PostgreSQL's `timestamptz` cannot hold: stored in an event, it would stop a projector.)
pub fn instant(field: &str, value: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if value < earliest_instant() || value > latest_instant() {
        return Err(FieldError::new(field, INSTANT_RANGE));
    }
    Ok(value)
}

/// What [`instant`] says of a time outside its range.
pub const INSTANT_RANGE: &str = "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z";

/// An E.164 phone number: `+`, a non-zero country digit, at most 15 digits in all. Spaces, dashes,
/// dots and parentheses are removed first, as people type them.
pub fn phone(field: &str, value: &str) -> Result<String, FieldError> {
    let compact: String = value.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let valid = digits.len() >= 2
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(compact)
    } else {
        Err(FieldError::new(field, format!("{value:?} is not an E.164 phone number (like +14155550123)")))
    }
}

/// An e-mail address: one `@`, a non-empty local part, a domain with a dot, no spaces or control
/// characters, at most 254 characters. Lowercases the domain, which is case-insensitive.
pub fn email(field: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    let refuse = || FieldError::new(field, format!("{value:?} is not an e-mail address"));
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    let (local, domain) = value.rsplit_once('@').ok_or_else(refuse)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
        return Err(refuse());
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// Free text of at most `max` characters with no control characters but line breaks and tabs.
/// Surrounding white space is trimmed; `required` refuses an empty result.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<String, FieldError> {
    let trimmed = value.trim();
    if required && trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// An optional short text: `None` or blank both mean absent.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) => text(field, v, max, false).map(|t| (!t.is_empty()).then_some(t)),
    }
}

/// A label: trimmed, lowercased, 1 to 64 characters, no control characters or commas (commas
/// separate labels in query strings).
pub fn label(field: &str, value: &str) -> Result<String, FieldError> {
    let label = text(field, value, 64, true)?.to_lowercase();
    if label.contains(',') {
        return Err(FieldError::new(field, format!("label {label:?} must not contain a comma")));
    }
    Ok(label)
}

/// A set of labels, each checked by [`label`], duplicates removed, at most [`MAX_LABELS`] given.
/// The count is checked first, so a long list costs no per-label work.
pub fn labels(field: &str, values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.len() > MAX_LABELS {
        return Err(FieldError::new(field, format!("at most {MAX_LABELS} labels are allowed")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let label = label(field, value)?;
        if !out.contains(&label) {
            out.push(label);
        }
    }
    Ok(out)
}

/// A list of external ids (see [`external_id`]), at most `max`, duplicates dropped, in the order
/// given.
pub fn external_ids(field: &str, values: &[String], max: usize) -> Result<Vec<String>, FieldError> {
    if values.len() > max {
        return Err(FieldError::new(field, format!("at most {max} ids are allowed")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let id = external_id(field, value)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// An identifier that comes from outside Colloquy (a user, team, inbox or provider id): 1 to 128
/// printable characters.
pub fn external_id(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty()
        || value.chars().count() > 128
        || value.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(FieldError::new(
            field,
            "must be 1 to 128 characters without spaces or control characters",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_compacted_to_e164() {
        assert_eq!(phone("phone", "+1 (415) 555-0123"), Ok("+14155550123".to_owned()));
        assert_eq!(phone("phone", "+447911123456"), Ok("+447911123456".to_owned()));
    }

    #[test]
    fn phone_numbers_without_plus_or_too_long_or_with_letters_are_refused() {
        for bad in ["14155550123", "+0123456", "+1234567890123456", "+1415abc0123", "+", "+1"] {
            assert!(phone("phone", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn emails_keep_their_local_part_and_lowercase_the_domain() {
        assert_eq!(email("email", " Ann.Lee@Example.COM "), Ok("Ann.Lee@example.com".to_owned()));
        for bad in ["ann", "ann@", "@x.com", "ann@localhost", "a b@x.com", "ann@x..com", "ann@.x.com"] {
            assert!(email("email", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn text_refuses_control_characters_but_keeps_line_breaks() {
        assert_eq!(text("t", " a\nb ", 10, true), Ok("a\nb".to_owned()));
        assert!(text("t", "a\u{0}b", 10, true).is_err());
        assert!(text("t", "   ", 10, true).is_err());
        assert!(text("t", "abcdef", 5, false).is_err());
    }

    #[test]
    fn instants_outside_1970_to_9999_are_refused() {
        let year = |y: i32| Utc.with_ymd_and_hms(y, 6, 1, 0, 0, 0).single().expect("a valid date");
        assert_eq!(instant("at", year(2026)), Ok(year(2026)));
        assert_eq!(instant("at", earliest_instant()), Ok(earliest_instant()));
        assert_eq!(instant("at", latest_instant()), Ok(latest_instant()));
        for bad in [year(-100_000), year(1969), year(10_000), year(200_000)] {
            assert_eq!(instant("at", bad), Err(FieldError::new("at", INSTANT_RANGE)), "{bad} was accepted");
        }
    }

    #[test]
    fn labels_are_lowercased_and_deduplicated() {
        let given = vec!["Billing".to_owned(), "billing ".to_owned(), "vip".to_owned()];
        assert_eq!(labels("labels", &given), Ok(vec!["billing".to_owned(), "vip".to_owned()]));
        assert!(labels("labels", &["a,b".to_owned()]).is_err());
        let too_many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}")).collect();
        assert!(labels("labels", &too_many).is_err());
    }
}
