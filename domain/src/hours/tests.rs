//! Business hours: given a calendar, when asking the arithmetic, then the business time. The
//! property tests check `elapsed` and `add` against a minute-by-minute walk that reads each
//! instant's local time directly.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::{America, Asia, Australia, Europe, Tz, UTC};
use proptest::prelude::*;

use super::*;

const WORKDAYS: [Weekday; 5] = [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri];
const EVERY_DAY: [Weekday; 7] =
    [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

fn time(text: &str) -> LocalTime {
    text.parse().expect("a valid local time")
}

fn interval(start: &str, end: &str) -> Interval {
    Interval { start: time(start), end: time(end) }
}

fn on(days: &[Weekday], start: &str, end: &str) -> Vec<WeeklyInterval> {
    days.iter().map(|&weekday| WeeklyInterval { weekday, start: time(start), end: time(end) }).collect()
}

fn calendar(time_zone: Tz, weekly: Vec<WeeklyInterval>) -> BusinessHours {
    BusinessHours { time_zone, weekly, exceptions: Vec::new() }
}

/// Monday to Friday, 09:00 to 17:00.
fn office(time_zone: Tz) -> BusinessHours {
    calendar(time_zone, on(&WORKDAYS, "09:00", "17:00"))
}

fn date(text: &str) -> NaiveDate {
    text.parse().expect("a valid date")
}

fn dated(day: &str, intervals: Vec<Interval>, name: &str) -> DatedHours {
    DatedHours { date: date(day), intervals, name: Some(name.to_owned()) }
}

/// The instant of a local wall-clock time, the earlier one where the clock repeats.
fn local(time_zone: Tz, text: &str) -> DateTime<Utc> {
    let wall = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a valid local time");
    time_zone.from_local_datetime(&wall).earliest().expect("an existing local time").with_timezone(&Utc)
}

fn berlin(text: &str) -> DateTime<Utc> {
    local(Europe::Berlin, text)
}

fn hours(count: i64) -> i64 {
    count * 3_600
}

#[test]
fn friday_afternoon_plus_two_business_hours_is_monday_ten() {
    let office = office(Europe::Berlin);
    let friday = berlin("2026-03-06 16:00");

    let due = office.add(friday, hours(2));

    assert_eq!(due, Some(berlin("2026-03-09 10:00")));
    assert_eq!(office.elapsed(friday, berlin("2026-03-09 10:00")), hours(2));
}

#[test]
fn a_split_shift_does_not_count_lunch() {
    let mut weekly = on(&[Weekday::Mon], "09:00", "12:00");
    weekly.extend(on(&[Weekday::Mon], "13:00", "17:00"));
    let split = calendar(Europe::Berlin, weekly);

    let day = split.elapsed(berlin("2026-03-02 08:00"), berlin("2026-03-02 18:00"));
    let due = split.add(berlin("2026-03-02 11:30"), hours(1));

    assert_eq!(day, hours(7));
    assert_eq!(due, Some(berlin("2026-03-02 13:30")));
}

#[test]
fn an_overnight_shift_runs_past_midnight() {
    let nights = calendar(Europe::Berlin, on(&EVERY_DAY, "22:00", "06:00"));

    let one_day = nights.elapsed(berlin("2026-01-14 00:00"), berlin("2026-01-15 00:00"));
    let due = nights.add(berlin("2026-01-14 21:00"), hours(3));

    assert_eq!(one_day, hours(8));
    assert_eq!(due, Some(berlin("2026-01-15 01:00")));
    assert!(nights.is_open(berlin("2026-01-15 05:59")));
    assert!(!nights.is_open(berlin("2026-01-15 06:00")));
}

#[test]
fn a_holiday_exception_closes_the_day() {
    let mut office = office(Europe::Berlin);
    office.exceptions.push(dated("2026-03-06", Vec::new(), "Company holiday"));

    let due = office.add(berlin("2026-03-05 16:00"), hours(2));

    assert_eq!(due, Some(berlin("2026-03-09 10:00")));
    assert!(!office.is_open(berlin("2026-03-06 12:00")));
}

#[test]
fn a_special_hours_exception_replaces_the_weekday() {
    let mut office = office(Europe::Berlin);
    office.exceptions.push(dated("2026-03-07", vec![interval("10:00", "14:00")], "Open Saturday"));

    let due = office.add(berlin("2026-03-06 16:00"), hours(2));

    assert_eq!(due, Some(berlin("2026-03-07 11:00")));
}

#[test]
fn an_overnight_interval_spills_into_a_closed_exception_day() {
    let mut nights = calendar(Europe::Berlin, on(&[Weekday::Thu], "22:00", "06:00"));
    nights.exceptions.push(dated("2026-03-06", Vec::new(), "Holiday"));

    assert!(nights.is_open(berlin("2026-03-06 03:00")));
    assert_eq!(nights.elapsed(berlin("2026-03-05 12:00"), berlin("2026-03-07 12:00")), hours(8));
}

#[test]
fn spring_forward_counts_only_the_hours_that_exist() {
    let sundays = calendar(Europe::Berlin, on(&[Weekday::Sun], "01:00", "04:00"));

    let day = sundays.elapsed(berlin("2026-03-29 00:00"), berlin("2026-03-30 00:00"));
    let due = sundays.add(berlin("2026-03-29 00:00"), hours(2));

    assert_eq!(day, hours(2));
    assert_eq!(due, Some(berlin("2026-03-29 04:00")));
}

#[test]
fn fall_back_counts_the_repeated_hour_twice() {
    let sundays = calendar(Europe::Berlin, on(&[Weekday::Sun], "01:00", "04:00"));

    let day = sundays.elapsed(berlin("2026-10-25 00:00"), berlin("2026-10-26 00:00"));

    assert_eq!(day, hours(4));
}

#[test]
fn new_york_business_time_crosses_its_own_dst_change() {
    let new_york = office(America::New_York);

    let due = new_york.add(local(America::New_York, "2026-03-06 16:00"), hours(2));

    assert_eq!(due, Some(Utc.with_ymd_and_hms(2026, 3, 9, 14, 0, 0).single().expect("a valid instant")));
}

#[test]
fn lord_howe_shifts_by_half_an_hour() {
    let sundays = calendar(Australia::Lord_Howe, on(&[Weekday::Sun], "01:00", "03:00"));
    let day = |text: &str| {
        let start = local(Australia::Lord_Howe, &format!("{text} 00:00"));
        sundays.elapsed(start, start + Duration::hours(30))
    };

    assert_eq!(day("2026-04-05"), hours(2) + 1_800);
    assert_eq!(day("2026-10-04"), hours(1) + 1_800);
    assert_eq!(day("2026-04-12"), hours(2));
}

#[test]
fn always_counts_wall_clock_seconds() {
    let from = Utc.with_ymd_and_hms(2026, 3, 28, 17, 3, 11).single().expect("a valid instant");
    let to = from + Duration::seconds(987_654);

    assert_eq!(BusinessHours::always().elapsed(from, to), 987_654);
    assert_eq!(BusinessHours::always().add(from, 12_345), Some(from + Duration::seconds(12_345)));
    assert_eq!(BusinessHours::always().validate(), Ok(()));
}

#[test]
fn elapsed_is_zero_when_to_is_not_after_from() {
    let from = berlin("2026-03-04 12:00");

    assert_eq!(office(Europe::Berlin).elapsed(from, from - Duration::hours(1)), 0);
    assert_eq!(office(Europe::Berlin).elapsed(from, from), 0);
}

#[test]
fn add_without_any_open_time_is_none() {
    let from = berlin("2026-03-04 12:00");
    let mut closed = calendar(Europe::Berlin, Vec::new());
    closed.exceptions.push(dated("2026-03-05", Vec::new(), "Closed"));
    let mut past_only = calendar(Europe::Berlin, Vec::new());
    past_only.exceptions.push(dated("2026-03-01", vec![interval("09:00", "10:00")], "Once"));

    assert_eq!(closed.add(from, 1), None);
    assert_eq!(past_only.add(from, 1), None);
    assert_eq!(office(Europe::Berlin).add(from, -1), None);
    assert_eq!(closed.add(from, 0), Some(from));
}

#[test]
fn validation_refuses_overlapping_weekly_intervals() {
    let mut weekly = on(&[Weekday::Mon], "09:00", "17:00");
    weekly.extend(on(&[Weekday::Mon], "12:00", "13:00"));
    let mut spill = on(&[Weekday::Sun], "22:00", "06:00");
    spill.extend(on(&[Weekday::Mon], "05:00", "09:00"));
    let mut back_to_back = on(&[Weekday::Sun], "22:00", "06:00");
    back_to_back.extend(on(&[Weekday::Mon], "06:00", "09:00"));

    let refusal = calendar(UTC, weekly.clone()).validate();

    assert_eq!(refusal, Err(HoursError::WeeklyOverlap { first: weekly[0], second: weekly[1] }));
    assert_eq!(
        calendar(UTC, spill.clone()).validate(),
        Err(HoursError::WeeklyOverlap { first: spill[0], second: spill[1] })
    );
    assert_eq!(calendar(UTC, back_to_back).validate(), Ok(()));
    assert_eq!(
        refusal.map_err(|error| error.to_string()),
        Err("weekly intervals Mon 09:00-17:00 and Mon 12:00-13:00 overlap".to_owned())
    );
}

#[test]
fn validation_refuses_bad_exceptions_and_too_much() {
    let with = |exceptions: Vec<DatedHours>| BusinessHours { exceptions, ..office(UTC) };
    let overlapping =
        dated("2026-12-24", vec![interval("09:00", "12:00"), interval("11:00", "13:00")], "Eve");
    let long_name = dated("2026-12-24", Vec::new(), &"x".repeat(MAX_EXCEPTION_NAME_CHARS + 1));
    let many = (0..=MAX_EXCEPTIONS as u64)
        .map(|day| DatedHours {
            date: date("2026-01-01") + chrono::Days::new(day),
            intervals: Vec::new(),
            name: None,
        })
        .collect();
    let crowded = calendar(
        UTC,
        (0..=MAX_WEEKLY_INTERVALS).flat_map(|_| on(&[Weekday::Mon], "09:00", "10:00")).collect(),
    );

    assert_eq!(
        with(vec![overlapping.clone()]).validate(),
        Err(HoursError::ExceptionOverlap {
            date: date("2026-12-24"),
            first: overlapping.intervals[0],
            second: overlapping.intervals[1]
        })
    );
    assert_eq!(with(vec![long_name]).validate(), Err(HoursError::NameTooLong(date("2026-12-24"))));
    let twice = vec![dated("2026-12-25", Vec::new(), "A"), dated("2026-12-25", Vec::new(), "B")];
    assert_eq!(with(twice).validate(), Err(HoursError::DuplicateException(date("2026-12-25"))));
    assert_eq!(with(many).validate(), Err(HoursError::TooManyExceptions(MAX_EXCEPTIONS + 1)));
    assert_eq!(crowded.validate(), Err(HoursError::TooManyWeeklyIntervals(MAX_WEEKLY_INTERVALS + 1)));
}

#[test]
fn the_json_shape_reads_and_writes_local_times_as_hh_mm() {
    let json = r#"{"time_zone":"Europe/Berlin","weekly":[{"weekday":"Mon","start":"09:00","end":"17:00"}],
        "exceptions":[{"date":"2026-12-25","name":"Christmas Day"},{"date":"2026-12-24","intervals":[{"start":"09:00","end":"12:00"}]}]}"#;

    let read: BusinessHours = serde_json::from_str(json).expect("the documented shape");
    let written = serde_json::to_value(&read).expect("serialisable");

    assert_eq!(read.time_zone, Europe::Berlin);
    assert_eq!(read.exceptions[0], dated("2026-12-25", Vec::new(), "Christmas Day"));
    assert_eq!(written["weekly"][0]["start"], "09:00");
    assert_eq!(written["exceptions"][1].get("name"), None);
    assert!(serde_json::from_str::<LocalTime>(r#""24:00""#).is_err());
    assert!(serde_json::from_str::<LocalTime>(r#""9:00""#).is_err());
}

// Property tests: random calendars around the 2026 DST changes, checked against a walk that
// reads each UTC minute's local time directly.

const ZONES: [Tz; 6] =
    [Europe::Berlin, America::New_York, Australia::Lord_Howe, Asia::Kolkata, UTC, America::Sao_Paulo];
/// Sundays with a DST change in some of the zones.
const DST_DAYS: [(u32, u32); 6] = [(3, 8), (3, 29), (4, 5), (10, 4), (10, 25), (11, 1)];

/// `(start, length)` in minutes; short and long ones alike.
fn raw_interval() -> impl Strategy<Value = (u16, u16)> {
    (0u16..1_440, prop_oneof![1u16..=600, 1u16..=1_440])
}

fn from_raw((start, length): (u16, u16)) -> Interval {
    let at = |minutes: u16| LocalTime::from_minutes(minutes % 1_440).expect("below 1440");
    Interval { start: at(start), end: at(start + length) }
}

prop_compose! {
    /// A valid calendar (overlapping candidates are dropped) and its anchor day.
    fn calendars()(
        zone in prop::sample::select(ZONES.to_vec()),
        (month, day) in prop::sample::select(DST_DAYS.to_vec()),
        raw_weekly in prop::collection::vec((0u8..7, raw_interval()), 0..=6),
        raw_exceptions in prop::collection::vec((-5i64..=5, prop::collection::vec(raw_interval(), 0..=2)), 0..=3),
    ) -> (BusinessHours, NaiveDate) {
        let anchor = NaiveDate::from_ymd_opt(2026, month, day).expect("a valid date");
        let mut hours = calendar(zone, Vec::new());
        for (weekday, raw) in raw_weekly {
            let Interval { start, end } = from_raw(raw);
            hours.weekly.push(WeeklyInterval { weekday: EVERY_DAY[usize::from(weekday)], start, end });
            if hours.validate().is_err() {
                hours.weekly.pop();
            }
        }
        for (shift, raws) in raw_exceptions {
            let mut exception = DatedHours { date: anchor + Duration::days(shift), intervals: Vec::new(), name: None };
            for raw in raws {
                exception.intervals.push(from_raw(raw));
                if exception.validate().is_err() {
                    exception.intervals.pop();
                }
            }
            hours.exceptions.push(exception);
            if hours.validate().is_err() {
                hours.exceptions.pop();
            }
        }
        (hours, anchor)
    }
}

/// The intervals of `day` as local date-times, built with chrono rather than minute counts.
fn oracle_intervals(hours: &BusinessHours, day: NaiveDate) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let bounds: Vec<(LocalTime, LocalTime)> = match hours.exceptions.iter().find(|e| e.date == day) {
        Some(exception) => exception.intervals.iter().map(|i| (i.start, i.end)).collect(),
        None => {
            hours.weekly.iter().filter(|w| w.weekday == day.weekday()).map(|w| (w.start, w.end)).collect()
        }
    };
    let wall = |time: LocalTime| {
        let clock = chrono::NaiveTime::parse_from_str(&time.to_string(), "%H:%M").expect("HH:MM");
        day.and_time(clock)
    };
    bounds
        .into_iter()
        .map(|(start, end)| {
            let (opens, closes) = (wall(start), wall(end));
            (opens, if closes <= opens { closes + Duration::days(1) } else { closes })
        })
        .collect()
}

/// Open iff the local wall-clock time lies in an interval of its date or of the date before.
fn oracle_is_open(hours: &BusinessHours, second: i64) -> bool {
    let wall =
        hours.time_zone.timestamp_opt(second, 0).single().expect("UTC maps to one local time").naive_local();
    [wall.date().pred_opt(), Some(wall.date())]
        .into_iter()
        .flatten()
        .flat_map(|day| oracle_intervals(hours, day))
        .any(|(opens, closes)| opens <= wall && wall < closes)
}

/// Business seconds by walking UTC minutes: bounds are whole local minutes and the zones'
/// offsets whole minutes, so a UTC minute is open or closed as a whole.
fn oracle_elapsed(hours: &BusinessHours, from: i64, to: i64) -> i64 {
    let (mut total, mut second) = (0, from);
    while second < to {
        let next = to.min((second.div_euclid(60) + 1) * 60);
        if oracle_is_open(hours, second) {
            total += next - second;
        }
        second = next;
    }
    total
}

fn instant(anchor: NaiveDate, offset: i64) -> DateTime<Utc> {
    anchor.and_hms_opt(0, 0, 0).expect("midnight").and_utc() + Duration::seconds(offset)
}

const DAY: i64 = 86_400;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn elapsed_matches_a_minute_by_minute_walk(
        (hours, anchor) in calendars(), offset in -5 * DAY..3 * DAY, length in 0..7 * DAY,
    ) {
        let from = instant(anchor, offset);
        let to = from + Duration::seconds(length);
        prop_assert_eq!(hours.elapsed(from, to), oracle_elapsed(&hours, from.timestamp(), to.timestamp()));
    }

    #[test]
    fn add_lands_on_the_first_instant_with_the_budget_used(
        (hours, anchor) in calendars(), offset in -5 * DAY..3 * DAY, budget in 0..2 * DAY,
    ) {
        let from = instant(anchor, offset);
        match hours.add(from, budget) {
            Some(due) => {
                prop_assert_eq!(hours.elapsed(from, due), budget);
                if budget > 0 {
                    prop_assert_eq!(hours.elapsed(from, due - Duration::seconds(1)), budget - 1);
                }
                if due - from <= Duration::days(10) {
                    prop_assert_eq!(oracle_elapsed(&hours, from.timestamp(), due.timestamp()), budget);
                }
            }
            None => prop_assert!(hours.elapsed(from, from + Duration::days(30)) < budget),
        }
    }

    #[test]
    fn is_open_agrees_with_the_local_lookup_and_with_elapsed(
        (hours, anchor) in calendars(), offsets in prop::collection::vec(-5 * DAY..5 * DAY, 20),
    ) {
        for offset in offsets {
            let at = instant(anchor, offset);
            let open = oracle_is_open(&hours, at.timestamp());
            prop_assert_eq!(hours.is_open(at), open);
            prop_assert_eq!(hours.elapsed(at, at + Duration::seconds(1)), i64::from(open));
        }
    }

    #[test]
    fn elapsed_adds_up_over_consecutive_spans(
        (hours, anchor) in calendars(), offset in -5 * DAY..0, first in 0..5 * DAY, second in 0..5 * DAY,
    ) {
        let (from, middle) = (instant(anchor, offset), instant(anchor, offset + first));
        let to = middle + Duration::seconds(second);
        prop_assert_eq!(hours.elapsed(from, to), hours.elapsed(from, middle) + hours.elapsed(middle, to));
    }

    #[test]
    fn calendars_survive_a_json_round_trip((hours, _) in calendars()) {
        let json = serde_json::to_string(&hours).expect("serialisable");
        prop_assert_eq!(serde_json::from_str::<BusinessHours>(&json).expect("readable"), hours);
    }
}
