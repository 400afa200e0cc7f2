use super::*;
use crate::compile::parse_cron;

fn utc(y: i32, m: u32, d: u32, h: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .unwrap()
        .timestamp_millis()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn at(date: RunDate, now_ms: i64) -> RunRequest {
    RunRequest {
        date,
        params: BTreeMap::new(),
        now_ms,
    }
}

#[test]
fn without_a_schedule_a_day_is_a_utc_day_and_latest_is_now() {
    let now = utc(2026, 12, 6, 3) + 1234;
    let c = at(RunDate::Latest, now)
        .resolve(None, chrono_tz::UTC)
        .unwrap();
    assert_eq!(
        (c.start_ms, c.end_ms, c.date()),
        (now, now, "2026-12-06".into())
    );
    let c = at(RunDate::Day(day(2026, 12, 1)), now)
        .resolve(None, chrono_tz::UTC)
        .unwrap();
    assert_eq!(
        (c.start_ms, c.end_ms),
        (utc(2026, 12, 1, 0), utc(2026, 12, 2, 0))
    );
    assert_eq!(
        c.describe(),
        "run.date = 2026-12-01, run.start = 2026-12-01T00:00:00+00:00, \
         run.end = 2026-12-02T00:00:00+00:00"
    );
}

#[test]
fn a_nightly_schedule_is_for_the_day_before_its_fire() {
    let nightly = parse_cron("0 2 * * *").unwrap();
    // At 03:00 on the 6th the latest ended interval is the 5th 02:00 .. the 6th 02:00.
    let c = at(RunDate::Latest, utc(2026, 12, 6, 3))
        .resolve(Some(&nightly), chrono_tz::UTC)
        .unwrap();
    assert_eq!(
        (c.start_ms, c.end_ms),
        (utc(2026, 12, 5, 2), utc(2026, 12, 6, 2))
    );
    assert_eq!(c.date(), "2026-12-05");
    // Exactly at a fire, that fire's interval has ended.
    let c = at(RunDate::Latest, utc(2026, 12, 6, 2))
        .resolve(Some(&nightly), chrono_tz::UTC)
        .unwrap();
    assert_eq!(c.end_ms, utc(2026, 12, 6, 2));
    // --date: the interval that starts that day, in the schedule's zone (Berlin is UTC+1).
    let c = at(RunDate::Day(day(2026, 12, 1)), 0)
        .resolve(Some(&nightly), chrono_tz::Europe::Berlin)
        .unwrap();
    assert_eq!(
        (c.start_ms, c.end_ms),
        (utc(2026, 12, 1, 1), utc(2026, 12, 2, 1))
    );
    assert_eq!(
        c.lookup("run.start", None).unwrap().unwrap(),
        "2026-12-01T02:00:00+01:00"
    );
    assert_eq!(c.timezone, "Europe/Berlin");
}

#[test]
fn a_day_the_schedule_does_not_fire_on_is_refused() {
    let mondays = parse_cron("0 0 * * 1").unwrap();
    let e = at(RunDate::Day(day(2026, 12, 1)), 0)
        .resolve(Some(&mondays), chrono_tz::UTC)
        .unwrap_err();
    assert!(
        e.contains("no fire on 2026-12-01") && e.contains("2026-12-07"),
        "{e}"
    );
    let e = at(
        RunDate::Interval {
            start_ms: 5,
            end_ms: 4,
        },
        0,
    )
    .resolve(None, chrono_tz::UTC)
    .unwrap_err();
    assert!(e.contains("ends"), "{e}");
}

#[test]
fn the_fire_before_is_found_across_long_gaps_and_daylight_saving() {
    let yearly = parse_cron("0 0 1 1 *").unwrap();
    assert_eq!(
        fire_before(&yearly, chrono_tz::UTC, utc(2026, 12, 6, 0)),
        Some(utc(2026, 1, 1, 0))
    );
    // Berlin springs forward on 2027-03-28: that day has 23 hours.
    let daily = parse_cron("0 0 * * *").unwrap();
    let berlin = chrono_tz::Europe::Berlin;
    let c = at(RunDate::Day(day(2027, 3, 28)), 0)
        .resolve(Some(&daily), berlin)
        .unwrap();
    assert_eq!(c.end_ms - c.start_ms, 23 * 3_600_000);
}

#[test]
fn backfill_intervals_are_every_ended_interval_in_the_days() {
    let daily = parse_cron("30 4 * * *").unwrap();
    let now = utc(2026, 12, 6, 12);
    let got = intervals_between(
        Some(&daily),
        chrono_tz::UTC,
        day(2026, 11, 28),
        day(2026, 12, 4),
        now,
        100,
    )
    .unwrap();
    assert_eq!(got.len(), 7);
    assert_eq!(got[0].0, utc(2026, 11, 28, 4) + 30 * 60_000);
    assert!(got.windows(2).all(|w| w[0].1 == w[1].0), "contiguous");
    // An interval that has not ended is not backfilled.
    let got = intervals_between(
        Some(&daily),
        chrono_tz::UTC,
        day(2026, 12, 4),
        day(2026, 12, 9),
        now,
        100,
    )
    .unwrap();
    assert_eq!(got.len(), 2, "the 4th and the 5th; the 6th ends tomorrow");
    // Without a schedule: days; hourly: 24 a day; capped (+1).
    let days = intervals_between(
        None,
        chrono_tz::UTC,
        day(2026, 1, 1),
        day(2026, 1, 3),
        now,
        100,
    );
    assert_eq!(
        days.unwrap(),
        vec![
            (utc(2026, 1, 1, 0), utc(2026, 1, 2, 0)),
            (utc(2026, 1, 2, 0), utc(2026, 1, 3, 0)),
            (utc(2026, 1, 3, 0), utc(2026, 1, 4, 0)),
        ]
    );
    let hourly = parse_cron("0 * * * *").unwrap();
    let hours = intervals_between(
        Some(&hourly),
        chrono_tz::UTC,
        day(2026, 1, 1),
        day(2026, 1, 2),
        now,
        1000,
    );
    assert_eq!(hours.unwrap().len(), 48);
    let capped = intervals_between(
        Some(&hourly),
        chrono_tz::UTC,
        day(2026, 1, 1),
        day(2026, 1, 2),
        now,
        10,
    );
    assert_eq!(capped.unwrap().len(), 11);
    assert!(
        intervals_between(
            None,
            chrono_tz::UTC,
            day(2026, 1, 2),
            day(2026, 1, 1),
            now,
            9
        )
        .is_err()
    );
}

#[test]
fn parameters_are_bounded_and_cannot_close_a_string() {
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    assert!(check_params(&one("region", "eu-west 1/a:b,c@d=e+f.g_h%")).is_ok());
    for (k, v, needle) in [
        ("region", "eu'; DROP TABLE x; --", "holds '\\''"),
        ("region", "a\"b", "holds '\"'"),
        ("region", "a\\b", "holds '\\\\'"),
        ("region", "${HOME}", "holds '$'"),
        ("region", "a\nb", "holds '\\n'"),
        ("1x", "a", "not allowed"),
        ("a.b", "a", "not allowed"),
    ] {
        let e = check_params(&one(k, v)).unwrap_err();
        assert!(e.contains(needle), "{k}={v:?}: {e}");
    }
    assert!(check_params(&one("v", &"x".repeat(MAX_PARAM_VALUE + 1))).is_err());
    assert!(check_params(&one(&"n".repeat(MAX_PARAM_NAME + 1), "x")).is_err());
    let many: BTreeMap<String, String> = (0..=MAX_PARAMS)
        .map(|i| (format!("p{i}"), "x".to_string()))
        .collect();
    assert!(check_params(&many).unwrap_err().contains("at most"));
}
