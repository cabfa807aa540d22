//! Run windows: when a task, or the nodes of a node group, may run (weekdays and a time range
//! in a time zone). A start outside every window of its task, or of a group of one of its
//! nodes, is refused with [`OutsideWindow`], naming the next opening.

use haechi_types::{Error, Result};
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One window: on `days` (all days when empty), from `start` to `end` (`HH:MM`, 24 h) in
/// `timezone` (IANA name or `±HH:MM`; default the server's). An `end` at or before `start`
/// crosses midnight: the window opens on a listed day and closes on the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunWindow {
    /// `MON` … `SUN` (case-insensitive); empty = every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Opening time, `HH:MM`.
    pub start: String,
    /// Closing time, `HH:MM` (exclusive).
    pub end: String,
    /// IANA time zone (`Asia/Seoul`) or `±HH:MM`; absent = the server's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

const DAYS: [(&str, Weekday); 7] = [
    ("MON", Weekday::Monday),
    ("TUE", Weekday::Tuesday),
    ("WED", Weekday::Wednesday),
    ("THU", Weekday::Thursday),
    ("FRI", Weekday::Friday),
    ("SAT", Weekday::Saturday),
    ("SUN", Weekday::Sunday),
];

fn hhmm(field: &str, s: &str) -> Result<Time> {
    let bad = || {
        Error::field(
            field,
            format_args!("{s:?} is not a time of day as HH:MM (00:00 to 24:00)"),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h == 24 && m == 0 {
        return Ok(Time::MAX);
    }
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// A window checked and ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    tz: TimeZone,
}

/// Checks `windows` (the field is named `field` in errors) and normalizes day names.
pub(crate) fn validate(
    field: &str,
    windows: &[RunWindow],
    default_offset: i32,
) -> Result<Vec<RunWindow>> {
    if windows.len() > 64 {
        return Err(Error::field(field, "at most 64 windows"));
    }
    let mut out = Vec::with_capacity(windows.len());
    for (i, w) in windows.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let mut days = Vec::new();
        for d in &w.days {
            let up = d.trim().to_ascii_uppercase();
            let name = DAYS
                .iter()
                .find(|(n, _)| up == *n || (is_day_name(&up) && up.starts_with(n)))
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    Error::field(
                        format!("{f}.days"),
                        format_args!("{d:?} is not a weekday (MON, TUE, WED, THU, FRI, SAT, SUN)"),
                    )
                })?;
            if !days.contains(&name.to_owned()) {
                days.push(name.to_owned());
            }
        }
        let start = hhmm(&format!("{f}.start"), w.start.trim())?;
        let end = hhmm(&format!("{f}.end"), w.end.trim())?;
        if start == end {
            return Err(Error::field(
                format!("{f}.end"),
                "must differ from start (a window of no time never opens)",
            ));
        }
        let timezone = w
            .timezone
            .as_deref()
            .map(str::trim)
            .filter(|z| !z.is_empty())
            .map(str::to_owned);
        if let Some(z) = &timezone {
            crate::scheduler::zone(z, default_offset)
                .map_err(|e| Error::field(format!("{f}.timezone"), e))?;
        }
        out.push(RunWindow {
            days,
            start: w.start.trim().to_owned(),
            end: w.end.trim().to_owned(),
            timezone,
        });
    }
    Ok(out)
}

fn is_day_name(up: &str) -> bool {
    [
        "MONDAY",
        "TUESDAY",
        "WEDNESDAY",
        "THURSDAY",
        "FRIDAY",
        "SATURDAY",
        "SUNDAY",
    ]
    .contains(&up)
}

/// Parses stored (already validated) windows; an unusable one is skipped with a warning.
pub(crate) fn parse(windows: &[RunWindow], default_offset: i32) -> Vec<Parsed> {
    windows
        .iter()
        .filter_map(|w| {
            let tz = match &w.timezone {
                Some(z) => crate::scheduler::zone(z, default_offset).ok()?,
                None => jiff::tz::Offset::from_seconds(default_offset)
                    .map(TimeZone::fixed)
                    .unwrap_or(TimeZone::UTC),
            };
            let days = w
                .days
                .iter()
                .filter_map(|d| DAYS.iter().find(|(n, _)| n == d).map(|(_, w)| *w))
                .collect();
            Some(Parsed {
                days,
                start: hhmm("start", &w.start).ok()?,
                end: hhmm("end", &w.end).ok()?,
                tz,
            })
        })
        .collect()
}

impl Parsed {
    fn on(&self, day: Date) -> bool {
        self.days.is_empty() || self.days.contains(&day.weekday())
    }

    /// The openings of this window on the days around `at`: (open, close) in unix ms.
    fn intervals(&self, at: Timestamp, days_ahead: i64) -> Vec<(i64, i64)> {
        let today = at.to_zoned(self.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -1..=days_ahead {
            let Ok(day) = today.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            if !self.on(day) {
                continue;
            }
            let open = day.to_datetime(self.start);
            let close = if self.end > self.start {
                day.to_datetime(self.end)
            } else {
                match day.tomorrow() {
                    Ok(next) => next.to_datetime(self.end),
                    Err(_) => continue,
                }
            };
            let (Ok(o), Ok(c)) = (
                open.to_zoned(self.tz.clone()),
                close.to_zoned(self.tz.clone()),
            ) else {
                continue;
            };
            let (o, c) = (
                o.timestamp().as_millisecond(),
                c.timestamp().as_millisecond(),
            );
            // 24:00 is the last representable instant of the day: include it.
            let c = if self.end == Time::MAX { c + 1 } else { c };
            out.push((o, c));
        }
        out
    }
}

/// Whether `at_ms` is inside one of `windows` (no windows: always), and if not, the next
/// opening within the coming two weeks.
pub(crate) fn check(windows: &[Parsed], at_ms: i64) -> WindowState {
    if windows.is_empty() {
        return WindowState::Open;
    }
    let Ok(at) = Timestamp::from_millisecond(at_ms) else {
        return WindowState::Open;
    };
    let mut next: Option<i64> = None;
    for w in windows {
        for (o, c) in w.intervals(at, 15) {
            if o <= at_ms && at_ms < c {
                return WindowState::Open;
            }
            if o > at_ms {
                next = Some(next.map_or(o, |n| n.min(o)));
            }
        }
    }
    WindowState::Closed { next_open: next }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowState {
    Open,
    Closed { next_open: Option<i64> },
}

/// A start refused because it is outside the run windows of its task or of a node's group.
/// The scheduler turns it into a skipped, audited fire; the API into a 409.
#[derive(Debug, Clone)]
pub struct OutsideWindow {
    pub task_id: String,
    /// `task 'ID'` or `node group 'NAME'` (of node 'N').
    pub scope: String,
    /// The next opening of that scope's windows (unix ms), if one comes within two weeks.
    pub next_open: Option<i64>,
    /// What to tell a person.
    pub message: String,
}

/// Why a start was refused: outside a run window (typed, for the scheduler), or any other
/// reason ([`Error`]).
#[derive(Debug, Clone)]
pub enum StartError {
    OutsideWindow(OutsideWindow),
    Refused(Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::OutsideWindow(w) => f.write_str(&w.message),
            StartError::Refused(e) => f.write_str(&e.message),
        }
    }
}

impl std::error::Error for StartError {}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Refused(e)
    }
}

impl From<sqlx::Error> for StartError {
    fn from(e: sqlx::Error) -> Self {
        StartError::Refused(e.into())
    }
}

impl From<serde_json::Error> for StartError {
    fn from(e: serde_json::Error) -> Self {
        StartError::Refused(e.into())
    }
}

impl From<StartError> for Error {
    fn from(e: StartError) -> Self {
        match e {
            StartError::OutsideWindow(w) => Error::conflict(w.message),
            StartError::Refused(e) => e,
        }
    }
}

impl StartError {
    /// The error as an [`Error`] (409 for a window).
    pub fn into_error(self) -> Error {
        self.into()
    }

    pub fn code(&self) -> haechi_types::Code {
        match self {
            StartError::OutsideWindow(_) => haechi_types::Code::Conflict,
            StartError::Refused(e) => e.code,
        }
    }
}

/// `2026-12-07 09:00 Asia/Seoul (2026-12-07T00:00:00.000Z)`: an opening as a person reads it,
/// in the window's own zone and in UTC.
pub(crate) fn describe_opening(ms: i64, windows: &[RunWindow], default_offset: i32) -> String {
    let iso = haechi_types::time::iso_ms(ms);
    let zone_name = windows.iter().find_map(|w| w.timezone.clone());
    let tz = zone_name
        .as_deref()
        .and_then(|z| crate::scheduler::zone(z, default_offset).ok());
    match (tz, Timestamp::from_millisecond(ms)) {
        (Some(tz), Ok(ts)) => format!(
            "{} {} ({iso})",
            ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M"),
            zone_name.unwrap_or_default()
        ),
        _ => iso,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(days: &[&str], start: &str, end: &str, tz: &str) -> RunWindow {
        RunWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            timezone: Some(tz.into()),
        }
    }

    // 2024-05-20 is a Monday. 2024-05-20T00:30:00Z = 09:30 in Seoul.
    const MON_0930_SEOUL: i64 = 1_716_165_000_000;

    #[test]
    fn inside_and_outside() {
        let ws = validate("w", &[w(&["mon"], "09:00", "10:00", "Asia/Seoul")], 0).unwrap();
        let p = parse(&ws, 0);
        assert_eq!(check(&p, MON_0930_SEOUL), WindowState::Open);
        // 10:30 Seoul Monday: closed, next Monday 09:00 Seoul = 2024-05-27T00:00Z.
        let st = check(&p, MON_0930_SEOUL + 3_600_000);
        assert_eq!(
            st,
            WindowState::Closed {
                next_open: Some(1_716_768_000_000)
            }
        );
    }

    #[test]
    fn across_midnight() {
        let ws = validate("w", &[w(&["SUN"], "22:00", "06:00", "UTC")], 0).unwrap();
        let p = parse(&ws, 0);
        // Monday 2024-05-20 05:00Z: inside Sunday's window.
        assert_eq!(check(&p, 1_716_181_200_000), WindowState::Open);
        assert!(matches!(
            check(&p, 1_716_181_200_000 + 2 * 3_600_000),
            WindowState::Closed { .. }
        ));
    }

    #[test]
    fn bad_input() {
        assert!(validate("w", &[w(&["XYZ"], "09:00", "10:00", "UTC")], 0).is_err());
        assert!(validate("w", &[w(&[], "9:00", "10:00", "UTC")], 0).is_err());
        assert!(validate("w", &[w(&[], "09:00", "09:00", "UTC")], 0).is_err());
        assert!(validate("w", &[w(&[], "09:00", "25:00", "UTC")], 0).is_err());
        assert!(validate("w", &[w(&[], "09:00", "10:00", "Mars/X")], 0).is_err());
        assert!(validate("w", &[w(&["monday"], "00:00", "24:00", "UTC")], 0).is_ok());
    }
}
