//! Fire times against expected values written out by hand (and checked against cronsim, which
//! matches Debian cron): DST in New York and Berlin, leap days, steps, names, both day fields.

use super::*;
use chrono::{NaiveDateTime, TimeZone};

/// The next `n` fire times after the local wall-clock time `from` in `zone`, as RFC 3339 with
/// the zone's offset.
fn next(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::parse(expr, zone).expect("valid schedule");
    let naive = NaiveDateTime::parse_from_str(from, "%Y-%m-%d %H:%M:%S").expect("test time");
    let start = schedule
        .zone()
        .from_local_datetime(&naive)
        .earliest()
        .expect("start exists")
        .with_timezone(&Utc);
    schedule
        .upcoming(start, n)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

#[test]
fn new_york_spring_gap_fires_once_at_the_first_instant_after_it() {
    assert_eq!(
        next("30 2 * * *", "America/New_York", "2026-03-07 00:00:00", 3),
        [
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00"
        ]
    );
}

#[test]
fn new_york_repeated_hour_fires_a_fixed_time_once() {
    assert_eq!(
        next("30 1 * * *", "America/New_York", "2026-10-31 00:00:00", 3),
        [
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00"
        ]
    );
}

#[test]
fn new_york_wildcard_minute_runs_in_both_passes_of_the_repeated_hour() {
    assert_eq!(
        next("* 1 * * *", "America/New_York", "2026-11-01 01:57:00", 5),
        [
            "2026-11-01T01:58:00-04:00",
            "2026-11-01T01:59:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:01:00-05:00",
            "2026-11-01T01:02:00-05:00"
        ]
    );
    assert_eq!(
        next("0 * * * *", "America/New_York", "2026-11-01 00:30:00", 4),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00"
        ]
    );
}

#[test]
fn new_york_minute_steps_skip_the_missing_hour() {
    assert_eq!(
        next("*/30 * * * *", "America/New_York", "2026-03-08 01:00:00", 4),
        [
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:00:00-04:00"
        ]
    );
}

#[test]
fn berlin_spring_gap_fires_once_at_three() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-03-28 00:00:00", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
}

#[test]
fn berlin_repeated_hour_fires_a_fixed_time_once_and_steps_twice() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-10-24 00:00:00", 3),
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00"
        ]
    );
    assert_eq!(
        next("*/30 2 * * *", "Europe/Berlin", "2026-10-25 00:00:00", 5),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:00:00+01:00"
        ]
    );
}

#[test]
fn leap_day_fires_only_in_leap_years() {
    assert_eq!(
        next("0 0 29 2 *", "UTC", "2026-01-01 00:00:00", 3),
        [
            "2028-02-29T00:00:00+00:00",
            "2032-02-29T00:00:00+00:00",
            "2036-02-29T00:00:00+00:00"
        ]
    );
}

#[test]
fn six_fields_lead_with_seconds() {
    assert_eq!(
        next("*/15 * * * * *", "UTC", "2026-01-01 00:00:00", 3),
        [
            "2026-01-01T00:00:15+00:00",
            "2026-01-01T00:00:30+00:00",
            "2026-01-01T00:00:45+00:00"
        ]
    );
}

#[test]
fn month_and_day_names_ranges_and_lists() {
    // 2026-01-02 is a Friday.
    assert_eq!(
        next("0 9 * * MON-FRI", "UTC", "2026-01-02 00:00:00", 3),
        [
            "2026-01-02T09:00:00+00:00",
            "2026-01-05T09:00:00+00:00",
            "2026-01-06T09:00:00+00:00"
        ]
    );
    assert_eq!(
        next("0 0 1 jan,jul *", "UTC", "2026-01-01 00:00:00", 2),
        ["2026-07-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next("0 12 * * 0", "UTC", "2026-01-01 00:00:00", 1),
        next("0 12 * * 7", "UTC", "2026-01-01 00:00:00", 1),
        "0 and 7 are both Sunday"
    );
}

#[test]
fn both_day_fields_must_match_as_in_node_cron() {
    // Friday the 13th, not "every 13th and every Friday" as standard cron reads it.
    assert_eq!(
        next("0 12 13 * 5", "UTC", "2026-01-01 00:00:00", 4),
        [
            "2026-02-13T12:00:00+00:00",
            "2026-03-13T12:00:00+00:00",
            "2026-11-13T12:00:00+00:00",
            "2027-08-13T12:00:00+00:00"
        ]
    );
}

#[test]
fn bad_expressions_and_zones_are_refused_by_kind() {
    for bad in [
        "",
        "61 * * * *",
        "* * * * * * *",
        "* * *",
        "every day",
        "0 0 32 * *",
    ] {
        assert!(
            matches!(
                Schedule::parse(bad, "UTC"),
                Err(ScheduleError::Expression(_))
            ),
            "{bad:?} accepted"
        );
    }
    assert_eq!(
        Schedule::parse("* * * * *", "Mars/Olympus").err(),
        Some(ScheduleError::TimeZone("Mars/Olympus".into()))
    );
    assert!(Schedule::parse(&"1,".repeat(200), "UTC").is_err());
}

#[test]
fn a_late_but_not_missed_fire_is_scheduled() {
    let every_second = Schedule::parse("* * * * * *", "UTC").expect("valid");
    let p = plan(
        &every_second,
        utc("2026-01-01T00:00:10Z"),
        utc("2026-01-01T00:00:11.500Z"),
        Catchup::Skip,
        MISFIRE_GRACE,
    );
    assert_eq!(
        p.fires,
        [
            (utc("2026-01-01T00:00:10Z"), Trigger::Scheduled),
            (utc("2026-01-01T00:00:11Z"), Trigger::Scheduled)
        ]
    );
    assert_eq!(p.skipped, None);
    assert_eq!(p.next_run_at, Some(utc("2026-01-01T00:00:12Z")));
    assert_eq!(p.last_scheduled_at, Some(utc("2026-01-01T00:00:11Z")));
}

#[test]
fn skip_counts_missed_times_in_one_row_and_jumps_ahead() {
    let every_minute = Schedule::parse("* * * * *", "UTC").expect("valid");
    // Down from 00:10 to 00:40:02: 00:10 … 00:40 are due; only 00:40 is within the grace.
    let p = plan(
        &every_minute,
        utc("2026-01-01T00:10:00Z"),
        utc("2026-01-01T00:40:02Z"),
        Catchup::Skip,
        MISFIRE_GRACE,
    );
    assert_eq!(
        p.skipped,
        Some(Skipped {
            first: utc("2026-01-01T00:10:00Z"),
            last: utc("2026-01-01T00:39:00Z"),
            count: 30
        })
    );
    assert_eq!(p.fires, [(utc("2026-01-01T00:40:00Z"), Trigger::Scheduled)]);
    assert_eq!(p.next_run_at, Some(utc("2026-01-01T00:41:00Z")));
}

#[test]
fn catch_up_fires_the_latest_missed_times_oldest_first() {
    let every_minute = Schedule::parse("* * * * *", "UTC").expect("valid");
    let p = plan(
        &every_minute,
        utc("2026-01-01T00:10:00Z"),
        utc("2026-01-01T00:15:30Z"),
        Catchup::CatchUp(3),
        MISFIRE_GRACE,
    );
    assert_eq!(
        p.fires,
        [
            (utc("2026-01-01T00:13:00Z"), Trigger::Catchup),
            (utc("2026-01-01T00:14:00Z"), Trigger::Catchup),
            (utc("2026-01-01T00:15:00Z"), Trigger::Catchup)
        ]
    );
    assert_eq!(
        p.skipped,
        Some(Skipped {
            first: utc("2026-01-01T00:10:00Z"),
            last: utc("2026-01-01T00:12:00Z"),
            count: 3
        })
    );
    assert_eq!(p.next_run_at, Some(utc("2026-01-01T00:16:00Z")));
}
