//! Cron expressions in a time zone: parsing (node-cron syntax), the next fire times, a plain
//! English description, and which due times a late scheduler fires or skips.
//!
//! DST follows Debian cron (croner agrees with cronsim on every case we checked): a wall-clock
//! time that does not exist fires once at the first instant after the gap; a wall-clock time
//! that happens twice fires once, at its first occurrence; expressions that step through
//! minutes or seconds (`*`, `*/15`) fire in both passes of a repeated hour.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::collections::VecDeque;
use std::time::Duration;

/// Why an expression or zone was refused; the API turns each into its own 422 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not a node-cron expression of 5 or 6 fields.
    #[error("invalid cron expression: {0}")]
    Expression(String),
    /// Not an IANA time-zone name.
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
}

/// A parsed expression with its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// Longest expression or zone name accepted; anything longer is not a schedule.
pub const MAX_EXPRESSION_LEN: usize = 255;

impl Schedule {
    /// Parses a 5-field (minute first) or 6-field (seconds first) expression read in `zone`.
    ///
    /// Day-of-month and day-of-week both restricted means both must match (node-cron's rule,
    /// which upstream's schedules were written for); standard cron would fire when either does.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_zone(zone)?;
        let expression = expression.trim();
        if expression.is_empty() || expression.len() > MAX_EXPRESSION_LEN {
            return Err(ScheduleError::Expression(format!(
                "expected 5 or 6 fields of at most {MAX_EXPRESSION_LEN} characters"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|e| ScheduleError::Expression(e.to_string()))?;
        Ok(Self { cron, tz })
    }

    /// The zone the expression is read in.
    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`; `None` when the expression never matches again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `count` fire times strictly after `t`, in the job's zone.
    pub fn upcoming(&self, t: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(count);
        let mut at = t;
        while out.len() < count {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next.with_timezone(&self.tz));
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// A plain-English description, e.g. "At 02:30.".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// An IANA zone name.
pub fn parse_zone(zone: &str) -> Result<Tz, ScheduleError> {
    let name = zone.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(ScheduleError::TimeZone(name.chars().take(64).collect()));
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

/// How a fire came about (`triggerType` of its history row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// On time, by the schedule.
    Scheduled,
    /// Run now, by a caller.
    Manual,
    /// A due time missed while no scheduler ran, fired late by `catch_up`.
    Catchup,
}

impl Trigger {
    /// The upstream column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "SCHEDULED",
            Trigger::Manual => "MANUAL",
            Trigger::Catchup => "CATCHUP",
        }
    }
}

/// Missed-run policy after downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catchup {
    /// Jump to the next future time; the missed ones are counted in one SKIPPED row.
    Skip,
    /// Fire the most recent `n` missed times, oldest first, as CATCHUP; count the rest.
    CatchUp(usize),
}

/// Due times left unfired, reported as one SKIPPED history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: u64,
}

/// What a scheduler does with a job whose `nextRunAt` has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Due times to fire now, oldest first.
    pub fires: Vec<(DateTime<Utc>, Trigger)>,
    pub skipped: Option<Skipped>,
    /// The next due time after `now`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The latest due time handled here (fired or skipped).
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// A due time further than this behind the scheduler's clock was missed (no scheduler ran);
/// closer ones are merely late and fire as SCHEDULED.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(5);

/// Due times scanned per plan; a longer outage of a per-second job counts "at least" this.
const MAX_SCAN: u64 = 100_000;

/// Plans the fires of a job due at `next_run_at` (the first due time, fired even if the
/// expression was edited since) up to `now`.
pub fn plan(
    schedule: &Schedule,
    next_run_at: DateTime<Utc>,
    now: DateTime<Utc>,
    catchup: Catchup,
    grace: Duration,
) -> Plan {
    let missed_before = now - chrono::Duration::from_std(grace).unwrap_or_default();
    let keep = match catchup {
        Catchup::Skip => 0,
        Catchup::CatchUp(n) => n,
    };
    let mut on_time = Vec::new();
    let mut kept: VecDeque<DateTime<Utc>> = VecDeque::with_capacity(keep);
    let mut skipped: Option<Skipped> = None;
    let mut last = None;
    let mut at = Some(next_run_at);
    let mut scanned = 0;
    while let Some(t) = at.filter(|t| *t <= now) {
        scanned += 1;
        if scanned > MAX_SCAN {
            break;
        }
        last = Some(t);
        if t >= missed_before {
            on_time.push((t, Trigger::Scheduled));
        } else {
            kept.push_back(t);
            if kept.len() > keep
                && let Some(dropped) = kept.pop_front()
            {
                let s = skipped.get_or_insert(Skipped {
                    first: dropped,
                    last: dropped,
                    count: 0,
                });
                s.last = dropped;
                s.count += 1;
            }
        }
        at = schedule.next_after(t);
    }
    let mut fires: Vec<(DateTime<Utc>, Trigger)> =
        kept.into_iter().map(|t| (t, Trigger::Catchup)).collect();
    fires.extend(on_time);
    Plan {
        fires,
        skipped,
        next_run_at: schedule.next_after(now.max(last.unwrap_or(now))),
        last_scheduled_at: last,
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
