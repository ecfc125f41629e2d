//! Business hours: a weekly schedule in one time zone with dated exceptions, and the arithmetic
//! that SLA targets need (is it open now, how much business time lies between two instants, when
//! is a budget of business time used up).
//!
//! Semantics:
//! - An interval `[start, end)` belongs to the local date it starts on. If `end <= start` it runs
//!   past midnight into the next local date (`end == start` is a full 24 hours), so no interval
//!   is longer than a day.
//! - The intervals of local date `d` are those of its exception if `d` has one (an exception with
//!   no intervals closes the day), otherwise the weekly intervals of `d`'s weekday. An overnight
//!   interval that starts on `d - 1` still spills into `d`, whatever `d`'s exception says.
//! - An instant is open iff its wall-clock time in `time_zone` lies inside some interval of some
//!   date. A local hour skipped by a DST change has no instants and so counts nothing; a local
//!   hour repeated by a DST change is two real hours and both count.
//! - Instants count at whole-second precision: sub-second parts are dropped.

mod ical;
mod math;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use ical::{import_ical, IcalImport, SkippedEvent, MAX_EVENT_DAYS, MAX_ICAL_BYTES};

/// Most weekly intervals one calendar may have.
pub const MAX_WEEKLY_INTERVALS: usize = 50;
/// Most dated exceptions one calendar may have.
pub const MAX_EXCEPTIONS: usize = 2_000;
/// Longest exception name, in characters.
pub const MAX_EXCEPTION_NAME_CHARS: usize = 200;

const MINUTES_PER_DAY: u16 = 1_440;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY as u32;

/// When a team works: a weekly schedule in one IANA time zone, with dated exceptions (holidays,
/// special opening hours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BusinessHours {
    /// The IANA zone the local times are read in, e.g. `"Europe/Berlin"`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Europe/Berlin"))]
    pub time_zone: chrono_tz::Tz,
    /// The regular opening intervals; a weekday may have several (split shifts).
    pub weekly: Vec<WeeklyInterval>,
    /// Dates whose intervals replace their weekday's.
    #[serde(default)]
    pub exceptions: Vec<DatedHours>,
}

/// One opening interval of the weekly schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WeeklyInterval {
    /// The weekday the interval starts on, `"Mon"` to `"Sun"`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Mon"))]
    pub weekday: Weekday,
    /// Local opening time, `"HH:MM"`.
    pub start: LocalTime,
    /// Local closing time, `"HH:MM"`; at or before `start` means the next day.
    pub end: LocalTime,
}

/// The opening intervals of one local date, replacing its weekday's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatedHours {
    /// The local date.
    pub date: NaiveDate,
    /// The date's intervals; none means closed all day.
    #[serde(default)]
    pub intervals: Vec<Interval>,
    /// What the date is, e.g. `"Christmas Day"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An opening interval within a date; `end` at or before `start` means the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interval {
    /// Local opening time, `"HH:MM"`.
    pub start: LocalTime,
    /// Local closing time, `"HH:MM"`.
    pub end: LocalTime,
}

/// A local wall-clock time at minute precision, `"00:00"` to `"23:59"`. There is no `"24:00"`:
/// an interval ending at midnight ends at `"00:00"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "09:00"))]
pub struct LocalTime(u16);

/// Why a calendar or an iCalendar file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HoursError {
    /// Two weekly intervals share time (an overnight one counts into the next weekday).
    #[error("weekly intervals {first} and {second} overlap")]
    WeeklyOverlap {
        /// The earlier-listed interval.
        first: WeeklyInterval,
        /// The later-listed interval.
        second: WeeklyInterval,
    },
    /// Two intervals of one exception share time.
    #[error("intervals {first} and {second} of the exception on {date} overlap")]
    ExceptionOverlap {
        /// The exception's date.
        date: NaiveDate,
        /// The earlier-listed interval.
        first: Interval,
        /// The later-listed interval.
        second: Interval,
    },
    /// A date has more than one exception.
    #[error("more than one exception for {0}")]
    DuplicateException(NaiveDate),
    /// More weekly intervals than [`MAX_WEEKLY_INTERVALS`].
    #[error("{0} weekly intervals, at most {MAX_WEEKLY_INTERVALS} allowed")]
    TooManyWeeklyIntervals(usize),
    /// More exceptions than [`MAX_EXCEPTIONS`].
    #[error("{0} exceptions, at most {MAX_EXCEPTIONS} allowed")]
    TooManyExceptions(usize),
    /// An exception's name is longer than [`MAX_EXCEPTION_NAME_CHARS`].
    #[error("the name of the exception on {0} is longer than {MAX_EXCEPTION_NAME_CHARS} characters")]
    NameTooLong(NaiveDate),
    /// A local time that is not `"HH:MM"` from `"00:00"` to `"23:59"`.
    #[error("local time {0:?} is not HH:MM from 00:00 to 23:59")]
    InvalidTime(String),
    /// The iCalendar parser refused the input; its message.
    #[error("invalid iCalendar: {0}")]
    Ical(String),
    /// The iCalendar input is larger than [`MAX_ICAL_BYTES`].
    #[error("iCalendar input of {0} bytes, at most {MAX_ICAL_BYTES} allowed")]
    IcalTooLarge(usize),
}

impl LocalTime {
    /// Midnight, `"00:00"`.
    pub const MIDNIGHT: LocalTime = LocalTime(0);

    /// The time `hour:minute`, or `None` unless `hour < 24` and `minute < 60`.
    pub fn from_hm(hour: u16, minute: u16) -> Option<Self> {
        (hour < 24 && minute < 60).then_some(Self(hour * 60 + minute))
    }

    /// The time this many minutes after midnight, or `None` from 1440 on.
    pub fn from_minutes(minutes: u16) -> Option<Self> {
        (minutes < MINUTES_PER_DAY).then_some(Self(minutes))
    }

    /// Minutes since midnight, `0..1440`.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl FromStr for LocalTime {
    type Err = HoursError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || HoursError::InvalidTime(text.to_owned());
        let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
        let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(hour) || !two_digits(minute) {
            return Err(invalid());
        }
        let hour = hour.parse().map_err(|_| invalid())?;
        let minute = minute.parse().map_err(|_| invalid())?;
        Self::from_hm(hour, minute).ok_or_else(invalid)
    }
}

impl Serialize for LocalTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Interval {
    /// How long the interval lasts, in minutes: 1 to 1440.
    pub fn length_minutes(&self) -> u16 {
        span_minutes(self.start, self.end)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl WeeklyInterval {
    /// How long the interval lasts, in minutes: 1 to 1440.
    pub fn length_minutes(&self) -> u16 {
        span_minutes(self.start, self.end)
    }

    /// Where the interval starts, in minutes since Monday 00:00.
    fn week_start(&self) -> u32 {
        self.weekday.num_days_from_monday() * u32::from(MINUTES_PER_DAY) + u32::from(self.start.0)
    }
}

impl fmt::Display for WeeklyInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{}", self.weekday, self.start, self.end)
    }
}

/// The minutes from `start` to `end`, past midnight when `end <= start`.
fn span_minutes(start: LocalTime, end: LocalTime) -> u16 {
    if end.0 > start.0 {
        end.0 - start.0
    } else {
        end.0 + MINUTES_PER_DAY - start.0
    }
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` share a minute on a circle of `modulus`
/// minutes. Two arcs meet iff one starts inside the other.
fn arcs_overlap(a: u32, a_len: u32, b: u32, b_len: u32, modulus: u32) -> bool {
    (b + modulus - a) % modulus < a_len || (a + modulus - b) % modulus < b_len
}

impl BusinessHours {
    /// Open around the clock in UTC: for SLA targets kept in wall-clock time, where `elapsed`
    /// is plain seconds.
    pub fn always() -> BusinessHours {
        let weekly = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .map(|weekday| WeeklyInterval {
            weekday,
            start: LocalTime::MIDNIGHT,
            end: LocalTime::MIDNIGHT,
        });
        BusinessHours { time_zone: chrono_tz::UTC, weekly: weekly.to_vec(), exceptions: Vec::new() }
    }

    /// Checks the limits and that no two intervals share time: weekly ones around the week
    /// (Sunday's overnight interval spills into Monday), and those of one exception.
    pub fn validate(&self) -> Result<(), HoursError> {
        if self.weekly.len() > MAX_WEEKLY_INTERVALS {
            return Err(HoursError::TooManyWeeklyIntervals(self.weekly.len()));
        }
        if self.exceptions.len() > MAX_EXCEPTIONS {
            return Err(HoursError::TooManyExceptions(self.exceptions.len()));
        }
        for (index, first) in self.weekly.iter().enumerate() {
            for second in &self.weekly[index + 1..] {
                let (a, a_len) = (first.week_start(), u32::from(first.length_minutes()));
                let (b, b_len) = (second.week_start(), u32::from(second.length_minutes()));
                if arcs_overlap(a, a_len, b, b_len, MINUTES_PER_WEEK) {
                    return Err(HoursError::WeeklyOverlap { first: *first, second: *second });
                }
            }
        }
        let mut dates = BTreeSet::new();
        for exception in &self.exceptions {
            exception.validate()?;
            if !dates.insert(exception.date) {
                return Err(HoursError::DuplicateException(exception.date));
            }
        }
        Ok(())
    }
}

impl DatedHours {
    /// Checks the name's length and that no two of the date's intervals share time.
    fn validate(&self) -> Result<(), HoursError> {
        if self.name.as_ref().is_some_and(|name| name.chars().count() > MAX_EXCEPTION_NAME_CHARS) {
            return Err(HoursError::NameTooLong(self.date));
        }
        for (index, first) in self.intervals.iter().enumerate() {
            for second in &self.intervals[index + 1..] {
                let (a, a_len) = (u32::from(first.start.0), u32::from(first.length_minutes()));
                let (b, b_len) = (u32::from(second.start.0), u32::from(second.length_minutes()));
                // Both start within one day and last at most a day, so a circle of two days
                // never wraps: the test is the plain linear one.
                if arcs_overlap(a, a_len, b, b_len, 2 * u32::from(MINUTES_PER_DAY)) {
                    return Err(HoursError::ExceptionOverlap {
                        date: self.date,
                        first: *first,
                        second: *second,
                    });
                }
            }
        }
        Ok(())
    }
}
