//! Business-time arithmetic: whether an instant is open, the business seconds between two
//! instants, and the instant at which a budget of business seconds is used up.
//!
//! `elapsed` and `add` never step through time: they walk UTC windows of a week, turn the local
//! intervals of the dates that reach into a window into UTC ranges, merge them, and sum.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::{BusinessHours, LocalTime, MINUTES_PER_DAY};

const DAY: i64 = 86_400;
/// The UTC span whose open ranges are computed together; windows partition time, so their sums add.
const WINDOW: i64 = 7 * DAY;
/// Offsets are probed this far apart: tz data has no two transitions this close, so none is missed.
const PROBE: i64 = 6 * 3_600;
/// How far `add` searches before it gives up: about ten years.
const ADD_HORIZON: i64 = 3_653 * DAY;

/// A stretch of UTC seconds `[start, end)` with one UTC offset, in seconds.
#[derive(Debug, Clone, Copy)]
struct OffsetPiece {
    start: i64,
    end: i64,
    offset: i64,
}

/// The calendar indexed for bulk lookups: each date's intervals as `(start, length)` in minutes.
#[derive(Debug)]
struct Schedule {
    time_zone: Tz,
    weekly: [Vec<(i64, i64)>; 7],
    exceptions: BTreeMap<NaiveDate, Vec<(i64, i64)>>,
}

impl BusinessHours {
    /// Whether `at` falls inside an interval, read directly from its local wall-clock time.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.time_zone).naive_local();
        let second = i64::from(local.time().num_seconds_from_midnight());
        let today = local.date();
        let from_today = self
            .intervals_on(today)
            .iter()
            .any(|&(start, length)| start * 60 <= second && second < (start + length) * 60);
        let from_yesterday = today.pred_opt().is_some_and(|yesterday| {
            let spill = |&(start, length): &(i64, i64)| start + length - i64::from(MINUTES_PER_DAY);
            self.intervals_on(yesterday).iter().any(|interval| second < spill(interval) * 60)
        });
        from_today || from_yesterday
    }

    /// Business seconds in `[from, to)`; 0 when `to <= from`.
    pub fn elapsed(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let (mut low, high) = (from.timestamp(), to.timestamp());
        if high <= low {
            return 0;
        }
        let schedule = Schedule::new(self);
        let mut total = 0;
        while low < high {
            let window_end = high.min(low.saturating_add(WINDOW));
            total +=
                schedule.open_ranges(low, window_end).iter().map(|(start, end)| end - start).sum::<i64>();
            low = window_end;
        }
        total
    }

    /// The earliest instant `t >= from` with `elapsed(from, t) == business_seconds`: `from` itself
    /// for 0. `None` for a negative budget, for a calendar with no open time at all, and when the
    /// budget is not used up within about ten years.
    pub fn add(&self, from: DateTime<Utc>, business_seconds: i64) -> Option<DateTime<Utc>> {
        if business_seconds == 0 {
            return Some(from);
        }
        let has_open_time = !self.weekly.is_empty()
            || self.exceptions.iter().any(|exception| !exception.intervals.is_empty());
        if business_seconds < 0 || !has_open_time {
            return None;
        }
        // Without weekly intervals only exceptions open, so past the last of them nothing will:
        // two days after it, one for its overnight spill and one for a clock turned back over midnight.
        let last_open_date = if self.weekly.is_empty() {
            self.exceptions.iter().filter(|e| !e.intervals.is_empty()).map(|e| e.date).max()
        } else {
            None
        };
        let schedule = Schedule::new(self);
        let mut remaining = business_seconds;
        let mut low = from.timestamp();
        let horizon = low.checked_add(ADD_HORIZON)?;
        while low < horizon {
            if let Some(last) = last_open_date {
                if local_date(self.time_zone, low)? > last.checked_add_days(Days::new(2))? {
                    return None;
                }
            }
            let window_end = low.checked_add(WINDOW)?;
            for (start, end) in schedule.open_ranges(low, window_end) {
                if remaining <= end - start {
                    return DateTime::from_timestamp(start + remaining, 0);
                }
                remaining -= end - start;
            }
            low = window_end;
        }
        None
    }

    /// The intervals of `date` as `(start, length)` in minutes: its exception's if it has one
    /// (the first, should there be several), otherwise its weekday's.
    fn intervals_on(&self, date: NaiveDate) -> Vec<(i64, i64)> {
        match self.exceptions.iter().find(|exception| exception.date == date) {
            Some(exception) => {
                exception.intervals.iter().map(|i| minutes(i.start, i.length_minutes())).collect()
            }
            None => self
                .weekly
                .iter()
                .filter(|interval| interval.weekday == date.weekday())
                .map(|interval| minutes(interval.start, interval.length_minutes()))
                .collect(),
        }
    }
}

fn minutes(start: LocalTime, length: u16) -> (i64, i64) {
    (i64::from(start.minutes()), i64::from(length))
}

impl Schedule {
    fn new(hours: &BusinessHours) -> Schedule {
        let mut weekly: [Vec<(i64, i64)>; 7] = Default::default();
        for interval in &hours.weekly {
            let day = interval.weekday.num_days_from_monday() as usize;
            if let Some(intervals) = weekly.get_mut(day) {
                intervals.push(minutes(interval.start, interval.length_minutes()));
            }
        }
        let mut exceptions = BTreeMap::new();
        for exception in &hours.exceptions {
            // The first exception of a date wins, as in `intervals_on`.
            exceptions.entry(exception.date).or_insert_with(|| {
                exception.intervals.iter().map(|i| minutes(i.start, i.length_minutes())).collect()
            });
        }
        Schedule { time_zone: hours.time_zone, weekly, exceptions }
    }

    fn day(&self, date: NaiveDate) -> &[(i64, i64)] {
        match self.exceptions.get(&date) {
            Some(intervals) => intervals,
            None => {
                self.weekly.get(date.weekday().num_days_from_monday() as usize).map_or(&[], Vec::as_slice)
            }
        }
    }

    /// The open part of the UTC seconds `[low, high)`, as sorted, disjoint ranges. Empty where
    /// the instants or dates are beyond chrono's range.
    fn open_ranges(&self, low: i64, high: i64) -> Vec<(i64, i64)> {
        self.try_open_ranges(low, high).unwrap_or_default()
    }

    fn try_open_ranges(&self, low: i64, high: i64) -> Option<Vec<(i64, i64)>> {
        let pieces = offset_pieces(self.time_zone, low, high)?;
        // An interval lasts at most a day, so the dates that can reach an instant are its local
        // date and the one before; one more on each side covers a DST change that turns the
        // clock back over midnight.
        let mut date = local_date(self.time_zone, low)?.checked_sub_days(Days::new(2))?;
        let last = local_date(self.time_zone, high)?.checked_add_days(Days::new(1))?;
        let mut ranges = Vec::new();
        while date <= last {
            // Local wall-clock seconds, counted like UTC seconds since the epoch.
            let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
            for &(start, length) in self.day(date) {
                let (local_start, local_end) = (midnight + start * 60, midnight + (start + length) * 60);
                // Where the offset is `o`, local time is `t + o`: the instants of the interval
                // are those with `local_start - o <= t < local_end - o`.
                for piece in &pieces {
                    let range_start = piece.start.max(local_start - piece.offset);
                    let range_end = piece.end.min(local_end - piece.offset);
                    if range_start < range_end {
                        ranges.push((range_start, range_end));
                    }
                }
            }
            date = date.succ_opt()?;
        }
        Some(merge(ranges))
    }
}

/// Sorts ranges and joins those that overlap or touch.
fn merge(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Splits the UTC seconds `[low, high)` where the zone's offset changes: probes every few hours
/// and binary-searches each change down to the second.
fn offset_pieces(time_zone: Tz, low: i64, high: i64) -> Option<Vec<OffsetPiece>> {
    let mut pieces = Vec::new();
    let (mut start, mut offset) = (low, offset_at(time_zone, low)?);
    let mut probe = low;
    while probe < high {
        let next = high.min(probe + PROBE);
        if offset_at(time_zone, next)? == offset {
            probe = next;
            continue;
        }
        // offset(before) is the current offset, offset(after) is not.
        let (mut before, mut after) = (probe, next);
        while after - before > 1 {
            let middle = before + (after - before) / 2;
            if offset_at(time_zone, middle)? == offset {
                before = middle;
            } else {
                after = middle;
            }
        }
        pieces.push(OffsetPiece { start, end: after, offset });
        (start, offset, probe) = (after, offset_at(time_zone, after)?, after);
    }
    pieces.push(OffsetPiece { start, end: high, offset });
    Some(pieces)
}

/// The zone's UTC offset at a UTC second, in seconds.
fn offset_at(time_zone: Tz, second: i64) -> Option<i64> {
    let instant = DateTime::from_timestamp(second, 0)?;
    Some(i64::from(time_zone.offset_from_utc_datetime(&instant.naive_utc()).fix().local_minus_utc()))
}

/// The local date at a UTC second.
fn local_date(time_zone: Tz, second: i64) -> Option<NaiveDate> {
    Some(DateTime::from_timestamp(second, 0)?.with_timezone(&time_zone).date_naive())
}
