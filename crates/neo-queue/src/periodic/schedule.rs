//! When a periodic job ticks: a cron expression in a time zone, or a fixed interval.

use crate::{Error, Result};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A field of a cron expression, as named by [`Error::Cron`](crate::Error::Cron).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CronField {
    /// The expression as a whole: empty, a wrong number of fields, an unknown `@nickname`,
    /// or fields that are valid one by one but never match together (`0 0 30 2 *`).
    Expression,
    /// Seconds (the first of six or seven fields), 0–59.
    Second,
    /// Minutes, 0–59.
    Minute,
    /// Hours, 0–23.
    Hour,
    /// Day of the month, 1–31, `L`, `W`.
    DayOfMonth,
    /// Month, 1–12 or `JAN`–`DEC`.
    Month,
    /// Day of the week, 0–7 or `SUN`–`SAT`, `L`, `#`.
    DayOfWeek,
    /// Year (the seventh field).
    Year,
}

impl CronField {
    /// The field's name, as an error message says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CronField::Expression => "expression",
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day of month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day of week",
            CronField::Year => "year",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a periodic job ticks.
///
/// - [`Schedule::cron`]: a cron expression of five fields (minute to day of week), six (with
///   seconds first) or seven (and a year), with `@daily`-style nicknames, `L`, `W` and `#`
///   ([croner](https://docs.rs/croner)'s syntax), in UTC or in a time zone
///   ([`in_time_zone`](Self::in_time_zone)). Across a daylight-saving change a local time
///   that does not exist that day ticks once when the gap ends (`30 2 * * *` at 03:00 in
///   Berlin on the spring change), and one that occurs twice ticks once.
/// - [`Schedule::every`]: a fixed interval, its ticks at whole multiples of it since the
///   Unix epoch, so that every instance computes the same ticks.
///
/// Parsed from text too ([`FromStr`], and so from configuration): `"*/5 * * * *"`,
/// `"CRON_TZ=Europe/Berlin 0 9 * * MON-FRI"`, `"every 30s"`.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron {
        expression: String,
        cron: Box<Cron>,
        zone: Tz,
    },
    Every {
        micros: i64,
    },
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Cron {
                expression, zone, ..
            } if *zone == Tz::UTC => f.write_str(expression),
            Kind::Cron {
                expression, zone, ..
            } => write!(f, "CRON_TZ={} {expression}", zone.name()),
            Kind::Every { micros } => {
                let every = Duration::from_micros(micros.unsigned_abs());
                write!(
                    f,
                    "every {}",
                    humantime_serde::re::humantime::format_duration(every)
                )
            }
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// The parser of every cron expression: seconds optional, a year optional.
fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

impl Schedule {
    /// A cron expression in UTC.
    ///
    /// # Errors
    /// [`Error::Cron`] naming the field that is wrong
    /// ([`CronField::Expression`] for the expression as a whole).
    pub fn cron(expression: &str) -> Result<Self> {
        let trimmed = expression.trim();
        let cron = parser()
            .parse(trimmed)
            .map_err(|e| cron_error(trimmed, field_at_fault(trimmed), &e.to_string()))?;
        let schedule = Schedule {
            kind: Kind::Cron {
                expression: trimmed.to_owned(),
                cron: Box::new(cron),
                zone: Tz::UTC,
            },
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(cron_error(
                trimmed,
                CronField::Expression,
                "it never matches a time",
            ));
        }
        Ok(schedule)
    }

    /// Ticks at whole multiples of `interval` since the Unix epoch.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an interval under one millisecond or over 100 years.
    pub fn every(interval: Duration) -> Result<Self> {
        let micros = i64::try_from(interval.as_micros())
            .ok()
            .filter(|m| (1_000..=100 * 366 * 86_400_000_000).contains(m))
            .ok_or_else(|| {
                Error::invalid(
                    "periodic interval",
                    format!("{interval:?}: use 1 ms to 100 years"),
                )
            })?;
        Ok(Schedule {
            kind: Kind::Every { micros },
        })
    }

    /// This cron schedule in the IANA time zone `zone` (`"Europe/Berlin"`): its fields are
    /// the wall clock there. An interval has no time zone and is returned as it is.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a zone that is not in the IANA database.
    pub fn in_time_zone(self, zone: &str) -> Result<Self> {
        let tz = Tz::from_str(zone.trim())
            .map_err(|_| Error::invalid("time zone", format!("{zone:?} is not an IANA zone")))?;
        Ok(match self.kind {
            Kind::Cron {
                expression, cron, ..
            } => Schedule {
                kind: Kind::Cron {
                    expression,
                    cron,
                    zone: tz,
                },
            },
            every @ Kind::Every { .. } => Schedule { kind: every },
        })
    }

    /// The first tick strictly after `t`; `None` when there is none (a cron expression that
    /// never matches again).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&t.with_timezone(zone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
            Kind::Every { micros } => {
                let at = t.timestamp_micros();
                from_micros((at.div_euclid(*micros) + 1).checked_mul(*micros)?)
            }
        }
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { cron, zone, .. } => cron
                .find_previous_occurrence(&t.with_timezone(zone), true)
                .ok()
                .map(|previous| previous.with_timezone(&Utc)),
            Kind::Every { micros } => {
                let at = t.timestamp_micros();
                from_micros(at.div_euclid(*micros).checked_mul(*micros)?)
            }
        }
    }

    /// The latest `max` ticks after `after` and at or before `until`, oldest first.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut cursor = self.latest_at_or_before(until);
        while let Some(tick) = cursor {
            if tick <= after || ticks.len() >= max {
                break;
            }
            ticks.push(tick);
            cursor = match &self.kind {
                Kind::Every { micros } => tick.checked_sub_signed(TimeDelta::microseconds(*micros)),
                Kind::Cron { cron, zone, .. } => cron
                    .find_previous_occurrence(&tick.with_timezone(zone), false)
                    .ok()
                    .map(|previous| previous.with_timezone(&Utc)),
            };
        }
        ticks.reverse();
        ticks
    }
}

fn from_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

fn cron_error(expression: &str, field: CronField, reason: &str) -> Error {
    Error::Cron {
        expression: expression.to_owned(),
        field,
        reason: reason.to_owned(),
    }
}

/// Which field of `expression` croner refused: croner says what was wrong but not where, so
/// each field is parsed alone, the others being `*`. The expression as a whole when its
/// number of fields is wrong, it is a nickname, or no field fails alone.
fn field_at_fault(expression: &str) -> CronField {
    use CronField::{DayOfMonth, DayOfWeek, Expression, Hour, Minute, Month, Second, Year};
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let names: &[CronField] = match fields.len() {
        5 => &[Minute, Hour, DayOfMonth, Month, DayOfWeek],
        6 => &[Second, Minute, Hour, DayOfMonth, Month, DayOfWeek],
        7 => &[Second, Minute, Hour, DayOfMonth, Month, DayOfWeek, Year],
        _ => return Expression,
    };
    if expression.contains('@') {
        return Expression;
    }
    let parser = parser();
    for (i, name) in names.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        if parser.parse(&alone.join(" ")).is_err() {
            return *name;
        }
    }
    Expression
}

impl FromStr for Schedule {
    type Err = Error;

    /// `"every <duration>"` (humantime: `30s`, `5m`, `1h 30m`), or a cron expression with an
    /// optional `CRON_TZ=<IANA zone>` before it.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(every) = text.strip_prefix("every ") {
            let interval = humantime_serde::re::humantime::parse_duration(every.trim())
                .map_err(|e| Error::invalid("periodic interval", format!("{every:?}: {e}")))?;
            return Schedule::every(interval);
        }
        if let Some(rest) = text.strip_prefix("CRON_TZ=") {
            let (zone, expression) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            return Schedule::cron(expression)?.in_time_zone(zone);
        }
        Schedule::cron(text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use chrono::TimeZone;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn field_of(expression: &str) -> CronField {
        match Schedule::cron(expression) {
            Err(Error::Cron { field, .. }) => field,
            other => panic!("{expression:?} gave {other:?}"),
        }
    }

    #[test]
    fn an_invalid_cron_names_its_field() {
        assert_eq!(field_of("61 * * * *"), CronField::Minute);
        assert_eq!(field_of("* 24 * * *"), CronField::Hour);
        assert_eq!(field_of("* * 32 * *"), CronField::DayOfMonth);
        assert_eq!(field_of("* * * 13 *"), CronField::Month);
        assert_eq!(field_of("* * * * FOO"), CronField::DayOfWeek);
        assert_eq!(field_of("75 * * * * *"), CronField::Second);
        assert_eq!(field_of("* * * *"), CronField::Expression);
        assert_eq!(field_of(""), CronField::Expression);
        assert_eq!(field_of("@sometimes"), CronField::Expression);
        assert_eq!(field_of("0 0 30 2 *"), CronField::Expression);
        let message = Schedule::cron("* 99 * * *").unwrap_err().to_string();
        assert!(message.contains("hour"), "{message}");
    }

    #[test]
    fn cron_ticks_in_its_time_zone_and_across_daylight_saving() {
        let daily = Schedule::cron("30 9 * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        // 09:30 in Berlin is 07:30 UTC in summer, 08:30 in winter.
        assert_eq!(
            daily.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:30:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T08:30:00Z"))
        );
        // 02:30 does not exist in Berlin on 2026-03-29: it runs once as the gap ends (03:00
        // CEST); on 2026-10-25 it occurs twice and runs once.
        let at_230 = Schedule::cron("30 2 * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        assert_eq!(
            at_230.ticks_between(at("2026-03-28T00:00:00Z"), at("2026-03-31T00:00:00Z"), 10),
            vec![
                at("2026-03-28T01:30:00Z"),
                at("2026-03-29T01:00:00Z"),
                at("2026-03-30T00:30:00Z")
            ]
        );
        assert_eq!(
            at_230
                .ticks_between(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z"), 10)
                .len(),
            1
        );
        // Ticks are instants: strictly increasing across the autumn change.
        let half_hourly = Schedule::cron("*/30 * * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        let ticks =
            half_hourly.ticks_between(at("2026-10-24T23:00:00Z"), at("2026-10-25T03:00:00Z"), 100);
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        assert!(
            Schedule::cron("* * * * *")
                .unwrap()
                .in_time_zone("Mars/Olympus")
                .is_err()
        );
    }

    #[test]
    fn seconds_are_optional_and_intervals_align_to_the_epoch() {
        let every_second = Schedule::cron("* * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(every_second.next_after(t), Some(t + TimeDelta::seconds(1)));
        // 2026-01-01T00:00:00Z is a whole multiple of 90 s since the epoch.
        let every = Schedule::every(Duration::from_secs(90)).unwrap();
        let s = TimeDelta::seconds;
        assert_eq!(every.next_after(t), Some(t + s(90)));
        assert_eq!(every.latest_at_or_before(t + s(60)), Some(t));
        assert_eq!(every.latest_at_or_before(t + s(90)), Some(t + s(90)));
        assert_eq!(
            every.ticks_between(t, t + s(400), 3),
            vec![t + s(180), t + s(270), t + s(360)]
        );
        assert!(Schedule::every(Duration::from_micros(10)).is_err());
    }

    #[test]
    fn schedules_parse_from_text() {
        let s: Schedule = "CRON_TZ=America/New_York 0 9 * * MON-FRI".parse().unwrap();
        assert_eq!(s.to_string(), "CRON_TZ=America/New_York 0 9 * * MON-FRI");
        let e: Schedule = "every 30s".parse().unwrap();
        assert_eq!(e, Schedule::every(Duration::from_secs(30)).unwrap());
        assert!("every soon".parse::<Schedule>().is_err());
        let from_json: Schedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
        assert_eq!(from_json.to_string(), "*/5 * * * *");
    }
}
