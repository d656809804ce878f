//! SCHEDULED subscriptions' cron expressions: when a collected report goes out.
//!
//! A report belongs to the first tick strictly after its own (dataflow) time, in UTC. That makes the
//! tick, and with it the digest's id, a function of the report's time alone: a replay after a crash
//! puts the report in the same digest as the first run did.
//!
//! Expressions have five fields (minute granularity, as crontab) or six with seconds first;
//! `@daily`-style aliases, `L`, `W` and `#` are understood (croner). A year field is refused, so
//! that a schedule that fires once fires forever, and a subscription can never outlive its schedule.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::Time;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
}

/// Why an expression is not a schedule; the message is meant for the subscriber.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

impl Schedule {
    /// Parses `expression`, and checks that it fires at all (`0 0 30 2 *` never does).
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        if expression.trim().is_empty() {
            return Err(ScheduleError("must be a cron expression, e.g. \"0 8 * * *\"".into()));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser
            .parse(expression)
            .map_err(|e| ScheduleError(format!("is not a valid cron expression (5 fields, or 6 with seconds): {e}")))?;
        let schedule = Schedule { cron };
        if schedule.next_after(0).is_none() {
            return Err(ScheduleError("never fires".into()));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `time` (microseconds since the epoch, UTC), or `None` when
    /// there is none before the end of croner's calendar.
    pub fn next_after(&self, time: Time) -> Option<Time> {
        let start = DateTime::<Utc>::from_timestamp_micros(i64::try_from(time).ok()?)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let micros = Time::try_from(next.timestamp_micros()).ok()?;
        // croner works in whole seconds; make "strictly after" hold for a time inside a second too.
        (micros > time).then_some(micros)
    }
}

/// A bounded cache of parsed schedules, for the join: a schedule is parsed once, not per report.
#[derive(Default)]
pub(crate) struct ScheduleCache {
    parsed: std::collections::HashMap<String, Option<Schedule>>,
}

impl ScheduleCache {
    const MAX_ENTRIES: usize = 4096;

    /// The tick `time` belongs to under `expression`; `None` for an expression that does not parse
    /// or fire (refused at subscribe time, so only a version stored before that check).
    pub fn next_after(&mut self, expression: &str, time: Time) -> Option<Time> {
        if !self.parsed.contains_key(expression) {
            if self.parsed.len() >= Self::MAX_ENTRIES {
                self.parsed.clear();
            }
            self.parsed.insert(expression.to_string(), Schedule::parse(expression).ok());
        }
        self.parsed.get(expression)?.as_ref()?.next_after(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(rfc3339: &str) -> Time {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros() as Time
    }

    #[test]
    fn the_tick_is_strictly_after_the_time() {
        let daily = Schedule::parse("0 8 * * *").unwrap();
        assert_eq!(daily.next_after(micros("2025-06-21T07:59:59.999999Z")), Some(micros("2025-06-21T08:00:00Z")));
        assert_eq!(daily.next_after(micros("2025-06-21T08:00:00Z")), Some(micros("2025-06-22T08:00:00Z")), "strictly after");
        assert_eq!(daily.next_after(micros("2025-06-21T08:00:00.000001Z")), Some(micros("2025-06-22T08:00:00Z")));
        let every_second = Schedule::parse("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(micros("2025-06-21T08:00:00.5Z")), Some(micros("2025-06-21T08:00:01Z")));
        assert_eq!(every_second.next_after(micros("2025-06-21T08:00:01Z")), Some(micros("2025-06-21T08:00:02Z")));
        let every_ten = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(every_ten.next_after(micros("2025-06-21T08:00:03Z")), Some(micros("2025-06-21T08:00:10Z")));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for bad in ["", "  ", "not cron", "61 * * * *", "* * * * * * 2030", "0 0 30 2 *"] {
            let error = Schedule::parse(bad).expect_err(bad);
            assert!(!error.to_string().is_empty(), "{bad}");
        }
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("0 0 29 2 *").is_ok(), "leap days come round");
    }

    #[test]
    fn the_cache_answers_like_the_schedule() {
        let mut cache = ScheduleCache::default();
        let t = micros("2025-06-21T07:00:00Z");
        assert_eq!(cache.next_after("0 8 * * *", t), Some(micros("2025-06-21T08:00:00Z")));
        assert_eq!(cache.next_after("0 8 * * *", t), Some(micros("2025-06-21T08:00:00Z")));
        assert_eq!(cache.next_after("nonsense", t), None);
    }
}
