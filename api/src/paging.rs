//! Limits and opaque cursors of list endpoints.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::problem::ApiError;

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Most items per page.
pub const MAX_LIMIT: usize = 100;

/// `limit` and `cursor` of a list request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (empty: the first page).
    pub cursor: Option<String>,
    /// Accepted for uniformity with list queries: reads of one aggregate come from its current
    /// state, which always includes every acknowledged write, so there is nothing to wait for.
    pub min_position: Option<i64>,
}

impl PageParams {
    /// The limit, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(0) => Err(ApiError::invalid_field("limit", "must be at least 1")),
            Some(n) if n > MAX_LIMIT => {
                Err(ApiError::invalid_field("limit", format!("must be at most {MAX_LIMIT}")))
            }
            Some(n) => Ok(n),
        }
    }

    /// The position the cursor stands after (0 without a cursor). `kind` tells cursors of
    /// different lists apart so one is not taken for another.
    pub fn after(&self, kind: &str) -> Result<u64, ApiError> {
        // An empty `cursor=` is the first page, as no cursor is: clients that fill every
        // parameter of a form send it so.
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(0);
        };
        let bad = || ApiError::invalid_field("cursor", "is not a cursor this list issued");
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (prefix, value) = text.split_once(':').ok_or_else(bad)?;
        if prefix != kind {
            return Err(bad());
        }
        value.parse().map_err(|_| bad())
    }
}

/// The cursor that continues after `position` in a list of `kind`.
pub fn cursor(kind: &str, position: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}
