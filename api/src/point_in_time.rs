//! `?as_of=` and `?at_position=` on an aggregate's read: the state as it stood then, folded from
//! the events of its stream up to that point by the code that folds the live state
//! (`Repository::read_at`); `Colloquy-Position` names the last event folded.

use serde::Deserialize;

use colloquy_infra::Until;

use crate::instant::Instant;
use crate::problem::ApiError;

/// Where a read looks back to; neither: now.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PointInTime {
    /// The state as it stood at this instant: the events recorded by then (with `at_position`
    /// too, whichever point comes first).
    pub as_of: Option<Instant>,
    /// The state as of this global position: the events of the log up to it.
    #[param(minimum = 0)]
    pub at_position: Option<i64>,
}

impl PointInTime {
    /// Where the read stops, if in the past.
    pub fn until(&self) -> Result<Option<Until>, ApiError> {
        match (self.as_of, self.at_position) {
            (_, Some(position)) if position < 0 => {
                Err(ApiError::invalid_field("at_position", "must be 0 or more"))
            }
            (Some(at), Some(position)) => Ok(Some(Until::Both(position, at.into()))),
            (None, Some(position)) => Ok(Some(Until::Position(position))),
            (Some(at), None) => Ok(Some(Until::Instant(at.into()))),
            (None, None) => Ok(None),
        }
    }
}

/// The 404 of a read at a point where the aggregate had no event yet.
pub fn not_yet(what: &str) -> ApiError {
    ApiError::not_found(format!("{what} (it had no events at that point)"))
}
