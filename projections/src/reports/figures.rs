//! Figures folded from facts: counts (of facts, and of distinct conversations and contacts) and,
//! for durations, the sum, mean, median and 90th percentile in calendar and business seconds.
//! Every report (summary, time series, breakdowns) folds the same facts through [`Tally`], so
//! their counts and sums agree by construction: a time series' buckets and a breakdown's rows
//! add up to the summary (each fact falls in one bucket and, but for labels, in one row).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::query::FactRow;

/// A duration's statistics, in seconds. Median and 90th percentile are nearest-rank (values
/// that occurred, never interpolated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Durations {
    /// Their sum.
    pub sum: i64,
    /// Their mean.
    pub mean: f64,
    /// Their median.
    pub median: i64,
    /// Their 90th percentile.
    pub p90: i64,
    /// Whether median and p90 are read from a histogram (within 1% of a value at their rank)
    /// rather than being values at their rank.
    pub estimated: bool,
}

/// What a set of facts amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Facts.
    pub count: u64,
    /// Distinct conversations among them.
    pub conversations: u64,
    /// Distinct contacts among them.
    pub contacts: u64,
    /// Their durations in calendar seconds (none for counts, or no facts).
    pub calendar: Option<Durations>,
    /// Their durations in business seconds.
    pub business: Option<Durations>,
}

/// Facts being folded into a [`Figure`].
#[derive(Debug, Default, Clone)]
pub struct Tally {
    count: u64,
    conversations: HashSet<String>,
    contacts: HashSet<String>,
    calendar: Vec<i64>,
    business: Vec<i64>,
}

/// The nearest-rank `percent` percentile of sorted `values`.
fn rank(values: &[i64], percent: usize) -> i64 {
    let index = (values.len() * percent).div_ceil(100).max(1) - 1;
    values[index.min(values.len() - 1)]
}

fn durations(mut values: Vec<i64>) -> Option<Durations> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let sum: i64 = values.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let mean = sum as f64 / values.len() as f64;
    Some(Durations { sum, mean, median: rank(&values, 50), p90: rank(&values, 90), estimated: false })
}

impl Tally {
    /// Counts `fact` in.
    pub fn add(&mut self, fact: &FactRow) {
        self.count += 1;
        if !self.conversations.contains(&fact.conversation_id) {
            self.conversations.insert(fact.conversation_id.clone());
        }
        if !self.contacts.contains(&fact.contact_id) {
            self.contacts.insert(fact.contact_id.clone());
        }
        if let Some(value) = fact.value {
            self.calendar.push(value);
        }
        if let Some(value) = fact.business_value {
            self.business.push(value);
        }
    }

    /// What it amounts to.
    pub fn figure(self) -> Figure {
        Figure {
            count: self.count,
            conversations: self.conversations.len() as u64,
            contacts: self.contacts.len() as u64,
            calendar: durations(self.calendar),
            business: durations(self.business),
        }
    }
}

/// A time series' bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Local hours.
    Hour,
    /// Local days, from midnight.
    Day,
    /// ISO weeks, from Monday's midnight.
    Week,
    /// Calendar months, from the first's midnight.
    Month,
}

impl Bucket {
    /// The bucket named `name` (`hour`, `day`, `week`, `month`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }
}

/// The first instant of local `date` in `zone`: its midnight, or where a DST change skips
/// midnight, the first local time that exists.
fn start_of(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut local = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    for _ in 0..8 {
        if let Some(instant) = zone.from_local_datetime(&local).earliest() {
            return instant.with_timezone(&Utc);
        }
        local += Duration::minutes(15);
    }
    zone.from_utc_datetime(&local).with_timezone(&Utc)
}

/// The start of the bucket `at` falls in, in `zone`: bucket boundaries are local (a day is a
/// local day, 23 or 25 hours long across a DST change).
pub fn bucket_start(at: DateTime<Utc>, bucket: Bucket, zone: Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&zone);
    match bucket {
        // The local hour's start: minutes and seconds off, the offset kept (a half-hour zone's
        // hours start at :30 UTC).
        Bucket::Hour => {
            at - Duration::seconds(i64::from(local.minute()) * 60 + i64::from(local.second()))
                - Duration::nanoseconds(i64::from(local.nanosecond() % 1_000_000_000))
        }
        Bucket::Day => start_of(zone, local.date_naive()),
        Bucket::Week => {
            let monday =
                local.date_naive() - Duration::days(i64::from(local.weekday().num_days_from_monday()));
            start_of(zone, monday)
        }
        Bucket::Month => start_of(zone, local.date_naive().with_day(1).expect("the first exists")),
    }
}

/// The bucket after the one starting at `start`.
fn next_bucket(start: DateTime<Utc>, bucket: Bucket, zone: Tz) -> DateTime<Utc> {
    let local = start.with_timezone(&zone).date_naive();
    match bucket {
        Bucket::Hour => bucket_start(start + Duration::hours(1), bucket, zone),
        Bucket::Day => start_of(zone, local + Duration::days(1)),
        Bucket::Week => start_of(zone, local + Duration::days(7)),
        Bucket::Month => {
            let (year, month) =
                if local.month() == 12 { (local.year() + 1, 1) } else { (local.year(), local.month() + 1) };
            start_of(zone, NaiveDate::from_ymd_opt(year, month, 1).expect("the first exists"))
        }
    }
}

/// The starts of the buckets that cover `[since, until)`, at most `most` of them, and where
/// there are more, the start of the next (where a client continues).
pub fn buckets(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    bucket: Bucket,
    zone: Tz,
    most: usize,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut starts = Vec::new();
    let mut start = bucket_start(since, bucket, zone);
    while start < until {
        if starts.len() == most {
            return (starts, Some(start));
        }
        starts.push(start);
        start = next_bucket(start, bucket, zone);
    }
    (starts, None)
}

/// A dimension facts are broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The agent the fact is about.
    Agent,
    /// The team then.
    Team,
    /// The inbox.
    Inbox,
    /// The channel.
    Channel,
    /// Each label then (a fact with several counts in each).
    Label,
    /// The priority then.
    Priority,
}

impl Dimension {
    /// The dimension named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "agent" => Some(Self::Agent),
            "team" => Some(Self::Team),
            "inbox" => Some(Self::Inbox),
            "channel" => Some(Self::Channel),
            "label" => Some(Self::Label),
            "priority" => Some(Self::Priority),
            _ => None,
        }
    }

    /// Its name, as in a path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Team => "team",
            Self::Inbox => "inbox",
            Self::Channel => "channel",
            Self::Label => "label",
            Self::Priority => "priority",
        }
    }

    /// The keys `fact` counts under: one (none for a fact without it), or one per label.
    pub fn keys(self, fact: &FactRow) -> Vec<Option<String>> {
        match self {
            Self::Agent => vec![fact.agent_id.clone()],
            Self::Team => vec![fact.team_id.clone()],
            Self::Inbox => vec![fact.inbox_id.clone()],
            Self::Channel => vec![Some(fact.channel.clone())],
            Self::Priority => vec![Some(fact.priority.clone())],
            Self::Label if fact.labels.is_empty() => vec![None],
            Self::Label => fact.labels.iter().cloned().map(Some).collect(),
        }
    }
}

/// Tallies by a key: a time series' buckets, a breakdown's rows.
pub type Tallies<K> = BTreeMap<K, Tally>;

/// The first-response-time distribution's bands, in seconds: 0-1 h, 1-4 h, 4-8 h, 8-24 h, 24 h+.
pub const FIRST_RESPONSE_BANDS: [(&str, i64); 5] =
    [("0-1h", 3_600), ("1-4h", 14_400), ("4-8h", 28_800), ("8-24h", 86_400), ("24h+", i64::MAX)];

/// The band of [`FIRST_RESPONSE_BANDS`] `seconds` falls in.
pub fn first_response_band(seconds: i64) -> &'static str {
    FIRST_RESPONSE_BANDS.iter().find(|(_, below)| seconds < *below).map_or("24h+", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn a_day_is_a_local_day_across_a_dst_change() {
        let berlin: Tz = "Europe/Berlin".parse().expect("a zone");
        // 2026-03-29: Berlin moves from +01:00 to +02:00 at 02:00 local.
        let (days, more) =
            buckets(utc("2026-03-28T12:00:00Z"), utc("2026-03-31T00:00:00Z"), Bucket::Day, berlin, 10);
        assert_eq!(more, None);
        assert_eq!(
            days,
            vec![
                utc("2026-03-27T23:00:00Z"),
                utc("2026-03-28T23:00:00Z"),
                utc("2026-03-29T22:00:00Z"),
                utc("2026-03-30T22:00:00Z")
            ]
        );
        // 23:30 local on the 29th is in the 29th's bucket (a 23-hour day).
        assert_eq!(
            bucket_start(utc("2026-03-29T21:30:00Z"), Bucket::Day, berlin),
            utc("2026-03-28T23:00:00Z")
        );
    }

    #[test]
    fn hours_of_a_half_hour_zone_start_at_half_past_utc() {
        let kolkata: Tz = "Asia/Kolkata".parse().expect("a zone");
        assert_eq!(
            bucket_start(utc("2026-01-05T10:10:07Z"), Bucket::Hour, kolkata),
            utc("2026-01-05T09:30:00Z")
        );
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first_locally() {
        let new_york: Tz = "America/New_York".parse().expect("a zone");
        // Wednesday 2026-11-04 03:00 UTC is Tuesday 22:00 in New York.
        assert_eq!(
            bucket_start(utc("2026-11-04T03:00:00Z"), Bucket::Week, new_york),
            utc("2026-11-02T05:00:00Z")
        );
        assert_eq!(
            bucket_start(utc("2026-11-01T03:00:00Z"), Bucket::Month, new_york),
            utc("2026-10-01T04:00:00Z")
        );
        let (months, _) =
            buckets(utc("2026-10-15T00:00:00Z"), utc("2026-12-01T00:00:00Z"), Bucket::Month, new_york, 10);
        assert_eq!(
            months.len(),
            2,
            "October and November: UTC midnight of 1 December is 30 November in New York"
        );
    }

    #[test]
    fn a_long_series_stops_at_its_most_buckets_and_says_where_the_next_starts() {
        let utc_zone: Tz = "UTC".parse().expect("a zone");
        let (since, until) = (utc("2026-01-01T00:00:00Z"), utc("2026-02-01T00:00:00Z"));
        let (hours, next) = buckets(since, until, Bucket::Hour, utc_zone, 100);
        assert_eq!(hours.len(), 100);
        assert_eq!(next, Some(utc("2026-01-05T04:00:00Z")));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let figure = durations((1..=10).collect()).expect("values");
        assert_eq!((figure.sum, figure.median, figure.p90), (55, 5, 9));
        assert!((figure.mean - 5.5).abs() < f64::EPSILON);
        let one = durations(vec![7]).expect("a value");
        assert_eq!((one.median, one.p90), (7, 7));
    }

    #[test]
    fn first_response_bands_are_half_open() {
        assert_eq!(first_response_band(0), "0-1h");
        assert_eq!(first_response_band(3_599), "0-1h");
        assert_eq!(first_response_band(3_600), "1-4h");
        assert_eq!(first_response_band(86_400), "24h+");
    }
}
