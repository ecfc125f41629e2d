//! The reports' rollups, pure: a [`Cell`] holds what the facts of five minutes, a UTC hour, six
//! UTC hours or a UTC day, one metric and one dimension key amount to, in a form that adds up
//! across cells without the facts: their count, the distinct conversations and contacts (sets of
//! their numbers, exact under any union), and each duration's count, sum and histogram
//! ([`Values`]). A fact counts in the cells of its five minutes, hour and day for the whole
//! tenant, and of its six hours and day for each dimension's key ([`keys_of`]); a superseded fact
//! is taken out of them again (docs/adr/0013).

use chrono::{DateTime, Duration, DurationRound, Utc};
use roaring::{MultiOps, RoaringBitmap};

use super::figures::{Dimension, Durations, Figure};
use super::query::FactRow;
use colloquy_domain::report::Metric;

/// A cell's span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    /// A UTC hour.
    Hour,
    /// A UTC day.
    Day,
    /// Five minutes (from a whole hour on).
    FiveMinutes,
    /// Six hours (from 00:00, 06:00, 12:00 or 18:00 UTC on).
    SixHours,
}

impl Grain {
    /// Its code in the table.
    pub fn code(self) -> i32 {
        match self {
            Self::Hour => 0,
            Self::Day => 1,
            Self::FiveMinutes => 2,
            Self::SixHours => 3,
        }
    }

    /// The grain of `code` in the table.
    pub fn of_code(code: i32) -> Option<Self> {
        [Self::Hour, Self::Day, Self::FiveMinutes, Self::SixHours]
            .into_iter()
            .find(|grain| grain.code() == code)
    }

    /// How long a cell of it is.
    pub fn length(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
            Self::FiveMinutes => Duration::minutes(5),
            Self::SixHours => Duration::hours(6),
        }
    }

    /// The start of the cell `at` falls in.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.length()).unwrap_or(at)
    }
}

/// Where a cell sits: its grain and start, the metric, and the dimension (`""` for the whole
/// tenant, else a [`Dimension`]'s name) with its key (`""` for a fact without one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellKey {
    /// Five minutes, an hour, six hours or a day.
    pub grain: Grain,
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// The metric.
    pub metric: Metric,
    /// The dimension's name, `""` for the whole tenant.
    pub dimension: &'static str,
    /// The dimension's key, `""` for none.
    pub key: String,
}

/// The dimensions cells are kept for, beside the whole tenant.
pub const DIMENSIONS: [Dimension; 6] = [
    Dimension::Agent,
    Dimension::Team,
    Dimension::Inbox,
    Dimension::Channel,
    Dimension::Label,
    Dimension::Priority,
];

/// The grains of the whole tenant's cells, finest first: a period reads the largest whole cells
/// it holds and folds only the facts of the partial five minutes at either end.
pub const TENANT_GRAINS: [Grain; 3] = [Grain::FiveMinutes, Grain::Hour, Grain::Day];

/// The grains of a dimension key's cells, finest first: a breakdown folds the facts of at most six
/// hours at either end of its period (see [`keys_of`]).
pub const KEY_GRAINS: [Grain; 2] = [Grain::SixHours, Grain::Day];

/// Every cell `fact` counts in: of its five minutes, hour and day for the tenant, and of its six
/// hours and day for each dimension's key (each label's, for labels). A key's cells stop at six
/// hours: per hour they would be about as many as the facts themselves (docs/adr/0013).
pub fn keys_of(fact: &FactRow) -> Vec<CellKey> {
    let mut keys =
        Vec::with_capacity(TENANT_GRAINS.len() + KEY_GRAINS.len() * (DIMENSIONS.len() + fact.labels.len()));
    let key = |grain: Grain, dimension: &'static str, key: String| CellKey {
        grain,
        start: grain.start(fact.ended_at),
        metric: fact.metric,
        dimension,
        key,
    };
    for grain in TENANT_GRAINS {
        keys.push(key(grain, "", String::new()));
    }
    for dimension in DIMENSIONS {
        for value in dimension.keys(fact) {
            for grain in KEY_GRAINS {
                keys.push(key(grain, dimension.name(), value.clone().unwrap_or_default()));
            }
        }
    }
    keys
}

/// Values below this are kept one bucket each, in every histogram: short durations are exact.
const EXACT_BELOW: i64 = 128;
/// A larger value's bucket: `BASE + ⌈log_γ value⌉`, sorted as the values are.
const BASE: i64 = 1 << 40;
/// γ of the buckets, (1 + α) / (1 - α) with α = 0.5%: a bucket's middle is within 0.5% of every
/// value in it (rounded to the second: within 1% from 128 s up).
const GAMMA: f64 = 1.005 / 0.995;

/// The bucket of `value`.
fn bucket(value: i64) -> i64 {
    if value < EXACT_BELOW {
        return value;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let index = ((value as f64).ln() / GAMMA.ln()).ceil() as i64;
    BASE + index
}

/// The value a bucket stands for: its own for an exact one, else the middle of its range.
fn representative(bucket: i64) -> i64 {
    if bucket < BASE {
        return bucket;
    }
    #[allow(clippy::cast_precision_loss)]
    let upper = GAMMA.powf((bucket - BASE) as f64);
    #[allow(clippy::cast_possible_truncation)]
    let middle = (2.0 * upper / (GAMMA + 1.0)).round() as i64;
    middle
}

/// The most distinct values a stored cell keeps exactly; past it, its histogram.
pub const CELL_EXACT: usize = 256;
/// The most distinct values a figure read from cells keeps exactly: merging maps of tens of
/// thousands of values led a profile of the breakdowns (docs/adr/0013).
pub const FIGURE_EXACT: usize = 4096;

/// Durations, in seconds: their count and sum, and their values (while there are few distinct
/// ones) or their histogram ([`bucket`]s), as `(value or bucket, count)` sorted by the first:
/// merging two is one pass over both, where a map took a search per entry (docs/adr/0013).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    count: u64,
    sum: i64,
    exact: bool,
    counts: Vec<(i64, u64)>,
}

impl Values {
    fn new() -> Self {
        Self { exact: true, ..Self::default() }
    }

    fn key(&self, value: i64) -> i64 {
        if self.exact {
            value
        } else {
            bucket(value)
        }
    }

    /// Counts `value` in, keeping at most `exact` distinct values exactly.
    fn add(&mut self, value: i64, exact: usize) {
        self.count += 1;
        self.sum += value;
        let key = self.key(value);
        match self.counts.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(at) => self.counts[at].1 += 1,
            Err(at) => self.counts.insert(at, (key, 1)),
        }
        self.bound(exact);
    }

    /// Takes `value` out (a superseded fact's).
    fn remove(&mut self, value: i64) {
        self.count = self.count.saturating_sub(1);
        self.sum -= value;
        let key = self.key(value);
        if let Ok(at) = self.counts.binary_search_by_key(&key, |(k, _)| *k) {
            self.counts[at].1 -= 1;
            if self.counts[at].1 == 0 {
                self.counts.remove(at);
            }
        }
    }

    /// Adds `other` in, keeping at most `exact` distinct values exactly.
    fn merge(&mut self, other: &Self, exact: usize) {
        self.count += other.count;
        self.sum += other.sum;
        if other.counts.is_empty() {
            return;
        }
        if self.exact && !other.exact {
            self.bucket_values();
        }
        // Bucketing keeps the order (a larger value never has a smaller bucket), so `other`'s
        // keys stay sorted, equal ones side by side.
        if !self.exact && other.exact {
            let theirs = other.counts.iter().map(|&(key, count)| (bucket(key), count));
            let ours = std::mem::take(&mut self.counts);
            self.counts = merged(ours.into_iter(), theirs, other.counts.len());
        } else {
            self.counts = merged_runs(&self.counts, &other.counts);
        }
        self.bound(exact);
    }

    fn bound(&mut self, exact: usize) {
        if self.exact && self.counts.len() > exact {
            self.bucket_values();
        }
    }

    /// `all` merged at once: the same as merging them one by one into a new figure's, since a
    /// figure turns into a histogram exactly when its distinct values pass `exact` (they only
    /// grow) or when it takes one in, whatever the order. Each one's values are a sorted run;
    /// the runs merge pairwise, round by round (a profile of the breakdowns found sorting them
    /// all together costing a sixth of a breakdown).
    fn merged<'a>(all: impl Iterator<Item = &'a Self> + Clone, exact: usize) -> Self {
        let bucketed = all.clone().any(|values| !values.exact && !values.counts.is_empty());
        let mut out = Self::new();
        let mut runs: Vec<Vec<(i64, u64)>> = Vec::new();
        for values in all {
            out.count += values.count;
            out.sum += values.sum;
            if values.counts.is_empty() {
                continue;
            }
            runs.push(if bucketed && values.exact {
                // Bucketing keeps the order, equal buckets side by side.
                let rebucketed = values.counts.iter().map(|&(key, count)| (bucket(key), count));
                merged(std::iter::empty(), rebucketed, values.counts.len())
            } else {
                values.counts.clone()
            });
        }
        while runs.len() > 1 {
            let mut round = Vec::with_capacity(runs.len().div_ceil(2));
            let mut pairs = runs.into_iter();
            while let Some(ours) = pairs.next() {
                round.push(match pairs.next() {
                    Some(theirs) => merged_runs(&ours, &theirs),
                    None => ours,
                });
            }
            runs = round;
        }
        out.counts = runs.pop().unwrap_or_default();
        out.exact = !bucketed;
        out.bound(exact);
        out
    }

    /// Durations counted one each, as a figure keeps them.
    fn of(mut durations: Vec<i64>, exact: usize) -> Self {
        durations.sort_unstable();
        let mut out = Self::new();
        out.count = durations.len() as u64;
        out.sum = durations.iter().sum();
        out.counts = merged(std::iter::empty(), durations.into_iter().map(|value| (value, 1)), 0);
        out.bound(exact);
        out
    }

    fn bucket_values(&mut self) {
        let values = std::mem::take(&mut self.counts);
        self.counts = merged(std::iter::empty(), values.into_iter().map(|(v, c)| (bucket(v), c)), 0);
        self.exact = false;
    }

    /// The value at the nearest rank of `percent`: one that occurred while exact, else within 1%
    /// of one.
    fn rank(&self, percent: u64) -> i64 {
        let wanted = (self.count * percent).div_ceil(100).max(1);
        let mut seen = 0;
        let shown = |key: i64| if self.exact { key } else { representative(key) };
        for &(key, count) in &self.counts {
            seen += count;
            if seen >= wanted {
                return shown(key);
            }
        }
        self.counts.last().map_or(0, |&(key, _)| shown(key))
    }

    fn durations(&self) -> Option<Durations> {
        if self.count == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = self.sum as f64 / self.count as f64;
        Some(Durations {
            sum: self.sum,
            mean,
            median: self.rank(50),
            p90: self.rank(90),
            estimated: !self.exact,
        })
    }
}

/// What the facts of one cell (or of several, merged) amount to.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    count: u64,
    conversations: RoaringBitmap,
    contacts: RoaringBitmap,
    calendar: Values,
    business: Values,
}

impl Default for Cell {
    fn default() -> Self {
        Self {
            count: 0,
            conversations: RoaringBitmap::new(),
            contacts: RoaringBitmap::new(),
            calendar: Values::new(),
            business: Values::new(),
        }
    }
}

/// A fact as a cell counts it: its conversation's and contact's numbers and its durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The conversation's number.
    pub conversation: u32,
    /// The contact's number.
    pub contact: u32,
    /// Wall-clock seconds.
    pub value: Option<i64>,
    /// Business seconds.
    pub business_value: Option<i64>,
}

impl Cell {
    /// Counts a fact in, as a stored cell does.
    pub fn add(&mut self, fact: &Counted) {
        self.add_keeping(fact, CELL_EXACT);
    }

    /// Counts a fact in, as a figure read from many cells does (as [`Cell::merge`] keeps values):
    /// what [`Gathered`] does for many facts at once, kept as its tests' reference.
    #[cfg(test)]
    pub fn add_to_figure(&mut self, fact: &Counted) {
        self.add_keeping(fact, FIGURE_EXACT);
    }

    fn add_keeping(&mut self, fact: &Counted, exact: usize) {
        self.count += 1;
        self.conversations.insert(fact.conversation);
        self.contacts.insert(fact.contact);
        if let Some(value) = fact.value {
            self.calendar.add(value, exact);
        }
        if let Some(value) = fact.business_value {
            self.business.add(value, exact);
        }
    }

    /// Takes a superseded fact out. Its conversation leaves the cell (a conversation has one
    /// current fact of a superseding metric); its contact leaves only where `contact_stays` is
    /// false (the contact's other conversations have no current fact in the cell).
    pub fn remove(&mut self, fact: &Counted, contact_stays: bool) {
        self.count = self.count.saturating_sub(1);
        self.conversations.remove(fact.conversation);
        if !contact_stays {
            self.contacts.remove(fact.contact);
        }
        if let Some(value) = fact.value {
            self.calendar.remove(value);
        }
        if let Some(value) = fact.business_value {
            self.business.remove(value);
        }
    }

    /// `cells` merged as a figure read from them, in one pass over their sets and values: the
    /// same as merging them one by one ([`Cell::merge`]), which unions each set into a growing
    /// one (most of a breakdown's time, in a profile at 1,000,000 conversations).
    pub fn merged(cells: Vec<Self>) -> Self {
        let count = cells.iter().map(|cell| cell.count).sum();
        let calendar = Values::merged(cells.iter().map(|cell| &cell.calendar), FIGURE_EXACT);
        let business = Values::merged(cells.iter().map(|cell| &cell.business), FIGURE_EXACT);
        let (conversations, contacts): (Vec<_>, Vec<_>) =
            cells.into_iter().map(|cell| (cell.conversations, cell.contacts)).unzip();
        Self { count, conversations: conversations.union(), contacts: contacts.union(), calendar, business }
    }

    /// Adds `other` in, as a figure read from many cells does.
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.conversations |= &other.conversations;
        self.contacts |= &other.contacts;
        self.calendar.merge(&other.calendar, FIGURE_EXACT);
        self.business.merge(&other.business, FIGURE_EXACT);
    }

    /// Whether no fact is left in it.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// What it amounts to.
    pub fn figure(&self) -> Figure {
        Figure {
            count: self.count,
            conversations: self.conversations.len(),
            contacts: self.contacts.len(),
            calendar: self.calendar.durations(),
            business: self.business.durations(),
        }
    }

    /// Its stored form: the count, both sets (roaring's portable format) and both histograms,
    /// each number a LEB128 varint (signed ones zigzagged).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        put(&mut out, self.count);
        for set in [&self.conversations, &self.contacts] {
            put(&mut out, set.serialized_size() as u64);
            // Writing into a Vec cannot fail.
            let _ = set.serialize_into(&mut out);
        }
        for values in [&self.calendar, &self.business] {
            put(&mut out, values.count);
            put(&mut out, zigzag(values.sum));
            put(&mut out, u64::from(values.exact));
            put(&mut out, values.counts.len() as u64);
            let mut last = 0;
            for &(key, count) in &values.counts {
                put(&mut out, zigzag(key - last));
                put(&mut out, count);
                last = key;
            }
        }
        out
    }

    /// A cell from its stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, at: 0 };
        let count = reader.next()?;
        let mut sets = Vec::with_capacity(2);
        for _ in 0..2 {
            let length = usize::try_from(reader.next()?).map_err(|e| e.to_string())?;
            let bytes = reader.take(length)?;
            sets.push(RoaringBitmap::deserialize_from(bytes).map_err(|e| e.to_string())?);
        }
        let mut values = Vec::with_capacity(2);
        for _ in 0..2 {
            let count = reader.next()?;
            let sum = unzigzag(reader.next()?);
            let exact = reader.next()? == 1;
            let entries = usize::try_from(reader.next()?).map_err(|e| e.to_string())?;
            // Each entry takes two bytes at least: a count past that is a damaged cell.
            let mut counts = Vec::with_capacity(entries.min(bytes.len() / 2));
            let mut last: i64 = 0;
            for index in 0..entries {
                let step = unzigzag(reader.next()?);
                if index > 0 && step <= 0 {
                    return Err("a cell's values out of order".into());
                }
                last = last.checked_add(step).ok_or("a cell's value out of range")?;
                counts.push((last, reader.next()?));
            }
            values.push(Values { count, sum, exact, counts });
        }
        let contacts = sets.pop().unwrap_or_default();
        let conversations = sets.pop().unwrap_or_default();
        let business = values.pop().unwrap_or_default();
        let calendar = values.pop().unwrap_or_default();
        Ok(Self { count, conversations, contacts, calendar, business })
    }
}

/// Facts gathered for one figure, then made its cell at once ([`Gathered::cell`]): numbers and
/// durations sorted once, where adding facts to a cell one by one shifts its sets' arrays at
/// each insert. The cell is the one a figure would be, the facts counted in one by one.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    count: u64,
    conversations: Vec<u32>,
    contacts: Vec<u32>,
    calendar: Vec<i64>,
    business: Vec<i64>,
}

impl Gathered {
    /// Gathers a fact.
    pub fn add(&mut self, fact: &Counted) {
        self.count += 1;
        self.conversations.push(fact.conversation);
        self.contacts.push(fact.contact);
        self.calendar.extend(fact.value);
        self.business.extend(fact.business_value);
    }

    /// What the facts amount to, as a figure's cell.
    pub fn cell(self) -> Cell {
        let set = |mut numbers: Vec<u32>| {
            numbers.sort_unstable();
            numbers.dedup();
            // Sorted and without repeats, so never refused.
            RoaringBitmap::from_sorted_iter(numbers).unwrap_or_default()
        };
        Cell {
            count: self.count,
            conversations: set(self.conversations),
            contacts: set(self.contacts),
            calendar: Values::of(self.calendar, FIGURE_EXACT),
            business: Values::of(self.business, FIGURE_EXACT),
        }
    }
}

fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    #[allow(clippy::cast_sign_loss)]
    let encoded = ((value << 1) ^ (value >> 63)) as u64;
    encoded
}

fn unzigzag(value: u64) -> i64 {
    #[allow(clippy::cast_possible_wrap)]
    let decoded = (value >> 1) as i64 ^ -((value & 1) as i64);
    decoded
}

/// `ours` and `theirs`, each sorted by key (equal keys side by side), as one list sorted by key
/// with each key once, its counts added; `extra` is about how many `theirs` brings.
fn merged(
    ours: impl Iterator<Item = (i64, u64)>,
    theirs: impl Iterator<Item = (i64, u64)>,
    extra: usize,
) -> Vec<(i64, u64)> {
    let (mut ours, mut theirs) = (ours.peekable(), theirs.peekable());
    let mut out: Vec<(i64, u64)> = Vec::with_capacity(ours.size_hint().0 + extra);
    loop {
        let next = match (ours.peek(), theirs.peek()) {
            (Some(a), Some(b)) if a.0 <= b.0 => ours.next(),
            (Some(_), Some(_)) | (None, Some(_)) => theirs.next(),
            (Some(_), None) => ours.next(),
            (None, None) => None,
        };
        let Some((key, count)) = next else { return out };
        match out.last_mut() {
            Some(last) if last.0 == key => last.1 += count,
            _ => out.push((key, count)),
        }
    }
}

/// Two sorted runs, each with one entry per key, merged into one: [`merged`] for the common case,
/// on slices (the figures' merges, in a profile of the breakdowns).
fn merged_runs(ours: &[(i64, u64)], theirs: &[(i64, u64)]) -> Vec<(i64, u64)> {
    let mut out = Vec::with_capacity(ours.len() + theirs.len());
    let (mut i, mut j) = (0, 0);
    while i < ours.len() && j < theirs.len() {
        let (a, b) = (ours[i], theirs[j]);
        match a.0.cmp(&b.0) {
            std::cmp::Ordering::Less => {
                out.push(a);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a.0, a.1 + b.1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&ours[i..]);
    out.extend_from_slice(&theirs[j..]);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<u64, String> {
        // Most numbers are deltas and counts under 128: one byte.
        if let Some(&byte) = self.bytes.get(self.at).filter(|byte| **byte < 0x80) {
            self.at += 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("a cell cut short")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("a cell's number too long".into())
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        let end =
            self.at.checked_add(length).filter(|end| *end <= self.bytes.len()).ok_or("a cell cut short")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counted(conversation: u32, contact: u32, value: i64) -> Counted {
        Counted { conversation, contact, value: Some(value), business_value: Some(value / 2) }
    }

    fn exact_ranks(mut values: Vec<i64>) -> (i64, i64) {
        values.sort_unstable();
        let at = |percent: usize| values[(values.len() * percent).div_ceil(100).max(1) - 1];
        (at(50), at(90))
    }

    #[test]
    fn a_fact_counts_in_the_tenants_minutes_hour_and_day_and_in_each_keys_six_hours_and_day() {
        let at: DateTime<Utc> = "2026-11-23T09:41:00Z".parse().expect("a time");
        let fact = FactRow {
            metric: Metric::FirstResponse,
            kind: None,
            conversation_id: "c1".into(),
            contact_id: "p1".into(),
            value: Some(60),
            business_value: Some(60),
            started_at: at,
            ended_at: at,
            start_position: 1,
            end_position: 2,
            agent_id: Some("ana".into()),
            assignee_id: None,
            team_id: None,
            inbox_id: Some("support".into()),
            channel: "email".into(),
            priority: "high".into(),
            labels: vec!["vip".into(), "billing".into()],
            group: false,
            bot: false,
            superseded_at: None,
        };
        let keys = keys_of(&fact);
        // The tenant's five minutes and hour; the six hours of the agent, team, inbox, channel, two
        // labels and priority; the day of each of those and of the tenant.
        assert_eq!(keys.len(), 17);
        let five = keys.iter().filter(|k| k.grain == Grain::FiveMinutes).collect::<Vec<_>>();
        assert_eq!(five.len(), 1);
        assert_eq!((five[0].start, five[0].dimension), ("2026-11-23T09:40:00Z".parse().expect("a time"), ""));
        let hour = "2026-11-23T09:00:00Z".parse::<DateTime<Utc>>().expect("a time");
        let day = "2026-11-23T00:00:00Z".parse::<DateTime<Utc>>().expect("a time");
        let hours: Vec<&CellKey> = keys.iter().filter(|k| k.grain == Grain::Hour).collect();
        assert_eq!(hours.len(), 1);
        assert_eq!((hours[0].start, hours[0].dimension), (hour, ""));
        assert!(keys.iter().filter(|k| k.grain == Grain::Day).all(|k| k.start == day));
        let six = "2026-11-23T06:00:00Z".parse::<DateTime<Utc>>().expect("a time");
        let sixes: Vec<&CellKey> = keys.iter().filter(|k| k.grain == Grain::SixHours).collect();
        assert_eq!(sixes.len(), 7);
        assert!(sixes.iter().all(|k| k.start == six && !k.dimension.is_empty()));
        let labels: Vec<&str> = keys
            .iter()
            .filter(|k| k.grain == Grain::Day && k.dimension == "label")
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(labels, ["vip", "billing"]);
    }

    #[test]
    fn a_superseded_fact_leaves_its_cell_but_a_contact_with_another_conversation_stays() {
        let mut cell = Cell::default();
        cell.add(&counted(1, 7, 600));
        cell.add(&counted(2, 7, 900));
        cell.remove(&counted(1, 7, 600), true);
        let figure = cell.figure();
        assert_eq!((figure.count, figure.conversations, figure.contacts), (1, 1, 1));
        assert_eq!(figure.calendar.map(|d| (d.sum, d.median)), Some((900, 900)));
        cell.remove(&counted(2, 7, 900), false);
        assert!(cell.is_empty());
        assert_eq!(cell.figure().contacts, 0);
    }

    #[test]
    fn few_values_stay_exact_and_many_become_a_histogram_within_one_percent() {
        let mut cell = Cell::default();
        for n in 0..(CELL_EXACT as u32) {
            cell.add(&counted(n, n, 1_000 + i64::from(n)));
        }
        let exact = cell.figure().calendar.expect("durations");
        assert!(!exact.estimated);
        cell.add(&counted(9_999, 9_999, 50_000));
        let estimated = cell.figure().calendar.expect("durations");
        assert!(estimated.estimated);
        assert_eq!(estimated.sum, exact.sum + 50_000, "sums stay exact");
    }

    #[test]
    fn every_grain_reads_back_from_its_code() {
        for grain in TENANT_GRAINS.into_iter().chain(KEY_GRAINS) {
            assert_eq!(Grain::of_code(grain.code()), Some(grain));
        }
        assert_eq!(Grain::of_code(7), None);
    }

    #[test]
    fn a_damaged_cell_is_refused_never_a_panic() {
        let mut cell = Cell::default();
        cell.add(&counted(1, 1, 10));
        cell.add(&counted(2, 2, 20));
        let bytes = cell.encode();
        assert_eq!(Cell::decode(&bytes), Ok(cell.clone()));
        for end in 0..bytes.len() {
            assert!(Cell::decode(&bytes[..end]).is_err(), "cut at {end}");
        }
        // Values stored out of order would merge wrongly: refused.
        cell.calendar.counts.reverse();
        assert_eq!(Cell::decode(&cell.encode()), Err("a cell's values out of order".to_owned()));
    }

    #[test]
    fn merging_keeps_one_sorted_entry_per_value() {
        let (mut ours, mut theirs) = (Values::new(), Values::new());
        for value in [5, 1, 9, 5] {
            ours.add(value, CELL_EXACT);
        }
        for value in [9, 2, 5] {
            theirs.add(value, CELL_EXACT);
        }
        ours.merge(&theirs, FIGURE_EXACT);
        assert_eq!(ours.counts, [(1, 1), (2, 1), (5, 3), (9, 2)]);
        assert_eq!((ours.count, ours.sum), (7, 36));
        ours.remove(5);
        ours.remove(2);
        assert_eq!(ours.counts, [(1, 1), (5, 2), (9, 2)]);
    }

    proptest! {
        #[test]
        fn merging_at_once_equals_merging_one_by_one_and_gathering_equals_adding(
            cells in proptest::collection::vec(
                proptest::collection::vec((0u32..5_000, 0u32..2_000, 0i64..200_000), 0..600), 0..10),
        ) {
            let mut one_by_one = Cell::default();
            let mut added = Cell::default();
            let mut gathered = Gathered::default();
            let mut stored = Vec::new();
            for facts in &cells {
                let mut cell = Cell::default();
                for &(conversation, contact, value) in facts {
                    let fact = counted(conversation, contact, value);
                    cell.add(&fact);
                    added.add_to_figure(&fact);
                    gathered.add(&fact);
                }
                one_by_one.merge(&cell);
                stored.push(cell);
            }
            prop_assert_eq!(Cell::merged(stored), one_by_one);
            prop_assert_eq!(gathered.cell(), added);
        }
    }

    proptest! {
        #[test]
        fn merged_cells_give_exact_counts_and_sums_and_ranks_within_one_percent(
            cells in proptest::collection::vec(
                proptest::collection::vec((0u32..500, 0u32..200, 0i64..2_000_000), 0..400), 1..12),
        ) {
            let mut merged = Cell::default();
            let mut all = Vec::new();
            let mut conversations = std::collections::BTreeSet::new();
            for facts in &cells {
                let mut cell = Cell::default();
                for &(conversation, contact, value) in facts {
                    cell.add(&counted(conversation, contact, value));
                    all.push(value);
                    conversations.insert(conversation);
                }
                // Through the stored form.
                let cell = Cell::decode(&cell.encode()).expect("decodes");
                merged.merge(&cell);
            }
            let figure = merged.figure();
            prop_assert_eq!(figure.count, all.len() as u64);
            prop_assert_eq!(figure.conversations, conversations.len() as u64);
            if all.is_empty() {
                prop_assert!(figure.calendar.is_none());
            } else {
                let calendar = figure.calendar.expect("durations");
                prop_assert_eq!(calendar.sum, all.iter().sum::<i64>());
                let (median, p90) = exact_ranks(all.clone());
                for (got, wanted) in [(calendar.median, median), (calendar.p90, p90)] {
                    if calendar.estimated {
                        #[allow(clippy::cast_precision_loss)]
                        let error = (got - wanted).abs() as f64 / (wanted.max(1)) as f64;
                        prop_assert!(error <= 0.01, "{got} for {wanted}");
                    } else {
                        prop_assert_eq!(got, wanted);
                    }
                }
            }
        }
    }
}
