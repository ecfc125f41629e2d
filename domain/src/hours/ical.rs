//! Import of holidays from an iCalendar (.ics) file: every all-day event closes the dates it
//! covers; anything else is listed as skipped, with why.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use icalendar::parser::{read_components, unfold, Component, Property};
use serde::{Deserialize, Serialize};

use super::{DatedHours, HoursError, MAX_EXCEPTIONS, MAX_EXCEPTION_NAME_CHARS};

/// Largest iCalendar input accepted, in bytes.
pub const MAX_ICAL_BYTES: usize = 1 << 20;
/// Most days one all-day event may close.
pub const MAX_EVENT_DAYS: u64 = 366;
/// How much of the parser's message an error keeps: it quotes the input around the fault.
const MAX_MESSAGE_CHARS: usize = 500;

/// What an iCalendar file yielded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IcalImport {
    /// One closed day per date covered by an all-day event, sorted by date. Events on the same
    /// date share it, their names joined with `" / "`.
    pub exceptions: Vec<DatedHours>,
    /// The events that closed nothing, in file order.
    pub skipped: Vec<SkippedEvent>,
}

/// An event the import passed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedEvent {
    /// The event's UID, if it had one.
    pub uid: Option<String>,
    /// The event's SUMMARY, if it had one.
    pub summary: Option<String>,
    /// Why it was passed over.
    pub reason: String,
}

/// Reads the all-day VEVENTs of an iCalendar file as closed days named by their SUMMARY: one
/// per date from DTSTART up to the exclusive DTEND (or DTSTART plus a DURATION of days or weeks;
/// one day when neither is given). Timed, recurring (RRULE, RDATE) and cancelled events, and
/// events longer than [`MAX_EVENT_DAYS`], are listed in `skipped` instead.
pub fn import_ical(text: &str) -> Result<IcalImport, HoursError> {
    if text.len() > MAX_ICAL_BYTES {
        return Err(HoursError::IcalTooLarge(text.len()));
    }
    let unfolded = unfold(text);
    let roots = read_components(&unfolded).map_err(|message| HoursError::Ical(shorten(&message)))?;
    if !roots.iter().any(|root| root.name.as_str().eq_ignore_ascii_case("VCALENDAR")) {
        return Err(HoursError::Ical("no VCALENDAR component".to_owned()));
    }
    let mut closed: BTreeMap<NaiveDate, DatedHours> = BTreeMap::new();
    let mut skipped = Vec::new();
    // Depth first in file order, without recursion: VEVENTs sit inside VCALENDAR.
    let mut stack: Vec<&Component<'_>> = roots.iter().rev().collect();
    while let Some(component) = stack.pop() {
        if !component.name.as_str().eq_ignore_ascii_case("VEVENT") {
            stack.extend(component.components.iter().rev());
            continue;
        }
        let summary = text_property(component, "SUMMARY");
        match closed_dates(component) {
            Ok((first, days)) => {
                for day in 0..days {
                    let date = first.checked_add_days(Days::new(day)).ok_or_else(out_of_range)?;
                    close(&mut closed, date, summary.as_deref());
                }
                if closed.len() > MAX_EXCEPTIONS {
                    return Err(HoursError::TooManyExceptions(closed.len()));
                }
            }
            Err(reason) => {
                skipped.push(SkippedEvent { uid: text_property(component, "UID"), summary, reason })
            }
        }
    }
    Ok(IcalImport { exceptions: closed.into_values().collect(), skipped })
}

/// Closes `date`, adding `name` to the names of the events already closing it.
fn close(closed: &mut BTreeMap<NaiveDate, DatedHours>, date: NaiveDate, name: Option<&str>) {
    let day = closed.entry(date).or_insert_with(|| DatedHours { date, intervals: Vec::new(), name: None });
    let joined = match (day.name.take(), name) {
        (Some(earlier), Some(name)) if earlier != name => Some(format!("{earlier} / {name}")),
        (earlier, name) => earlier.or_else(|| name.map(str::to_owned)),
    };
    day.name = joined.map(|name| name.chars().take(MAX_EXCEPTION_NAME_CHARS).collect());
}

/// The first date an all-day event closes and how many days it closes, or why it closes none.
fn closed_dates(event: &Component<'_>) -> Result<(NaiveDate, u64), String> {
    if property(event, "STATUS")
        .is_some_and(|status| status.val.as_str().trim().eq_ignore_ascii_case("CANCELLED"))
    {
        return Err("cancelled".to_owned());
    }
    if property(event, "RRULE").is_some() || property(event, "RDATE").is_some() {
        return Err("recurring (RRULE or RDATE): recurrences are not expanded".to_owned());
    }
    let start = property(event, "DTSTART").ok_or("no DTSTART")?;
    let first = all_day_date(start)?;
    let end = match (property(event, "DTEND"), property(event, "DURATION")) {
        (Some(end), _) => all_day_date(end)?,
        (None, Some(duration)) => {
            let days = duration_days(duration.val.as_str())?;
            first.checked_add_days(Days::new(days)).ok_or("DURATION goes beyond the calendar")?
        }
        (None, None) => first.succ_opt().ok_or("DTSTART is beyond the calendar")?,
    };
    let days = u64::try_from((end - first).num_days()).unwrap_or(0);
    if days == 0 {
        return Err("ends before it starts".to_owned());
    }
    if days > MAX_EVENT_DAYS {
        return Err(format!("lasts {days} days, more than {MAX_EVENT_DAYS}"));
    }
    Ok((first, days))
}

/// The date of a DATE-valued DTSTART or DTEND (`YYYYMMDD`), or why it is not one.
fn all_day_date(property: &Property<'_>) -> Result<NaiveDate, String> {
    let value = property.val.as_str().trim();
    if value.contains(['T', 't']) {
        return Err("has a time of day: only all-day events close dates".to_owned());
    }
    let digits = |range: std::ops::Range<usize>| value.get(range).and_then(|part| part.parse::<u32>().ok());
    let date = match (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()), digits(0..4)) {
        (true, Some(year)) => digits(4..6)
            .zip(digits(6..8))
            .and_then(|(month, day)| NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)),
        _ => None,
    };
    date.ok_or_else(|| format!("{} {value:?} is not a date", property.name.as_str()))
}

/// The days of a DURATION of whole days or weeks (`P3D`, `P1W`), or why it is not one.
fn duration_days(value: &str) -> Result<u64, String> {
    let unsupported = || format!("DURATION {value:?} is not a whole number of days or weeks");
    let body = value.trim().strip_prefix('P').ok_or_else(unsupported)?;
    let (count, per) = match (body.strip_suffix('D'), body.strip_suffix('W')) {
        (Some(count), _) => (count, 1),
        (None, Some(count)) => (count, 7),
        (None, None) => return Err(unsupported()),
    };
    let count: u64 = count.parse().map_err(|_| unsupported())?;
    count.checked_mul(per).ok_or_else(unsupported)
}

/// The component's first property of that name; iCalendar names ignore case.
fn property<'c>(component: &'c Component<'_>, name: &str) -> Option<&'c Property<'c>> {
    component.properties.iter().find(|property| property.name.as_str().eq_ignore_ascii_case(name))
}

/// A property's value, trimmed; `None` when absent or blank.
fn text_property(component: &Component<'_>, name: &str) -> Option<String> {
    property(component, name)
        .map(|property| property.val.as_str().trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn out_of_range() -> HoursError {
    HoursError::Ical("an event's dates go beyond the calendar".to_owned())
}

/// The parser's message, cut to a readable length on a character boundary.
fn shorten(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holidays feed as calendar apps export it: CRLF, folded lines, a VTIMEZONE block.
    const HOLIDAYS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example Corp//Holidays 2026//EN\r\n\
        BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
        DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\n\
        TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
        END:STANDARD\r\nEND:VTIMEZONE\r\n\
        BEGIN:VEVENT\r\nUID:xmas-2026@example.com\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261225\r\n\
        DTEND;VALUE=DATE:20261226\r\nSUMMARY:Christmas\r\n  Day\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:shutdown-2026@example.com\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261230\r\n\
        DTEND;VALUE=DATE:20270102\r\nSUMMARY:Year-end shutdown\\, all offices\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:newyear-2027@example.com\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20270101\r\n\
        SUMMARY:New Year's Day\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:party-2026@example.com\r\nDTSTAMP:20260101T000000Z\r\n\
        DTSTART;TZID=Europe/Berlin:20261218T150000\r\nDTEND;TZID=Europe/Berlin:20261218T180000\r\nSUMMARY:Team party\r\n\
        END:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:founders@example.com\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260601\r\n\
        RRULE:FREQ=YEARLY\r\nSUMMARY:Founders' Day\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:offsite@example.com\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260910\r\n\
        STATUS:CANCELLED\r\nSUMMARY:Offsite\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn closed(date: &str, name: &str) -> DatedHours {
        DatedHours {
            date: date.parse().expect("a valid date"),
            intervals: Vec::new(),
            name: Some(name.to_owned()),
        }
    }

    fn skipped(uid: &str, summary: &str, reason: &str) -> SkippedEvent {
        SkippedEvent {
            uid: Some(uid.to_owned()),
            summary: Some(summary.to_owned()),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn all_day_events_become_closed_days_and_the_rest_is_skipped_with_a_reason() {
        let imported = import_ical(HOLIDAYS).expect("a valid calendar");

        assert_eq!(
            imported.exceptions,
            vec![
                closed("2026-12-25", "Christmas Day"),
                closed("2026-12-30", "Year-end shutdown, all offices"),
                closed("2026-12-31", "Year-end shutdown, all offices"),
                closed("2027-01-01", "Year-end shutdown, all offices / New Year's Day"),
            ]
        );
        assert_eq!(
            imported.skipped,
            vec![
                skipped(
                    "party-2026@example.com",
                    "Team party",
                    "has a time of day: only all-day events close dates"
                ),
                skipped(
                    "founders@example.com",
                    "Founders' Day",
                    "recurring (RRULE or RDATE): recurrences are not expanded"
                ),
                skipped("offsite@example.com", "Offsite", "cancelled"),
            ]
        );
    }

    #[test]
    fn malformed_oversized_and_overlong_input_is_refused() {
        let unterminated = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\n";
        let too_long = HOLIDAYS.replace("DTEND;VALUE=DATE:20270102", "DTEND;VALUE=DATE:20280102");

        assert!(matches!(import_ical(unterminated), Err(HoursError::Ical(_))));
        assert!(matches!(import_ical("just some text"), Err(HoursError::Ical(_))));
        assert_eq!(
            import_ical(&" ".repeat(MAX_ICAL_BYTES + 1)),
            Err(HoursError::IcalTooLarge(MAX_ICAL_BYTES + 1))
        );
        let skipped = import_ical(&too_long).expect("a valid calendar").skipped;
        assert_eq!(skipped[0].reason, "lasts 368 days, more than 366");
    }

    #[test]
    fn a_duration_of_days_or_weeks_sets_the_length() {
        assert_eq!(duration_days("P3D"), Ok(3));
        assert_eq!(duration_days("P2W"), Ok(14));
        assert!(duration_days("PT4H").is_err());
    }
}
