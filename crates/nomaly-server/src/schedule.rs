//! When a schedule fires, as a pure function of its cron expression, its last fire and the time,
//! so the catch-up policies are tested with a fake clock.
//!
//! The server's ticker asks every second for the fires due in `(last fire, now]`. A fire within
//! [`ON_TIME`] of now is on time; older ones were missed (the server was down or busy):
//! - `catch_up = "none"`: only an on-time fire runs; missed ones are skipped.
//! - `"latest"` (default): one run for the newest due fire, whether on time or missed.
//! - `"all"`: one run per due fire, oldest first (at most [`MAX_CATCH_UP`]).
//!
//! Either way the schedule's last fire moves to the newest due fire, so a fire is considered
//! once. A schedule added now has its last fire at now: it never catches up on times before it
//! existed.

use chrono::{DateTime, TimeZone, Utc};
use nomaly_pipeline::compile::CronExpr;
use nomaly_pipeline::spec::CatchUp;
use std::time::Duration;

/// How late a fire may be noticed and still count as on time.
pub const ON_TIME: Duration = Duration::from_secs(60);
/// The most fires `"all"` runs at once (the rest are skipped, and counted).
pub const MAX_CATCH_UP: usize = 100;

/// What a tick decided for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fires {
    /// Fire times (ms) to queue a run for, oldest first.
    pub run: Vec<i64>,
    /// How many due fires were skipped by the policy.
    pub skipped: usize,
    /// The newest due fire: the schedule's new last fire (None: nothing was due).
    pub last: Option<i64>,
}

fn to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Fire times in `(after_ms, until_ms]` in the schedule's time zone, oldest first, at most `cap`
/// (+1, to know there were more).
pub fn fires_between(
    schedule: &CronExpr,
    tz: chrono_tz::Tz,
    after_ms: i64,
    until_ms: i64,
    cap: usize,
) -> Vec<i64> {
    let after = to_utc(after_ms).with_timezone(&tz);
    schedule
        .after(&after)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .take_while(|&t| t <= until_ms)
        .take(cap + 1)
        .collect()
}

/// The fires due at `now_ms` for a schedule last fired at `last_ms`, under `policy`.
pub fn due(
    schedule: &CronExpr,
    tz: chrono_tz::Tz,
    last_ms: i64,
    now_ms: i64,
    policy: CatchUp,
) -> Fires {
    // "all" needs every time; the others only the newest, but counting the skipped needs them
    // too: fires are bounded by what a long outage can hold, capped.
    const SCAN: usize = 100_000;
    let due = fires_between(schedule, tz, last_ms, now_ms, SCAN);
    let Some(&newest) = due.last() else {
        return Fires::default();
    };
    let on_time = |t: i64| now_ms - t <= ON_TIME.as_millis() as i64;
    let run: Vec<i64> = match policy {
        CatchUp::None => due.iter().copied().filter(|&t| on_time(t)).collect(),
        CatchUp::Latest => vec![newest],
        CatchUp::All => {
            let from = due.len().saturating_sub(MAX_CATCH_UP);
            due[from..].to_vec()
        }
    };
    Fires {
        skipped: due.len() - run.len(),
        run,
        last: Some(newest),
    }
}

/// The next `n` fire times after `now_ms` (for the API's "next fires").
pub fn next_fires(schedule: &CronExpr, tz: chrono_tz::Tz, now_ms: i64, n: usize) -> Vec<i64> {
    let after = to_utc(now_ms).with_timezone(&tz);
    schedule
        .after(&after)
        .take(n)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nomaly_pipeline::compile::parse_cron;

    const MINUTE: i64 = 60_000;

    /// A fake clock: minutes after 2026-11-30 00:00 UTC.
    fn at(minutes: i64) -> i64 {
        Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0)
            .unwrap()
            .timestamp_millis()
            + minutes * MINUTE
    }

    fn hourly() -> CronExpr {
        parse_cron("0 * * * *").unwrap()
    }

    #[test]
    fn on_time_fires_run_under_every_policy() {
        for policy in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
            // Last fired at 00:00; the ticker looks at 01:00:01.
            let f = due(&hourly(), chrono_tz::UTC, at(0), at(60) + 1_000, policy);
            assert_eq!(f.run, vec![at(60)], "{policy:?}");
            assert_eq!((f.skipped, f.last), (0, Some(at(60))));
            // Nothing is due twice.
            let again = due(&hourly(), chrono_tz::UTC, at(60), at(60) + 2_000, policy);
            assert_eq!(again, Fires::default());
        }
    }

    #[test]
    fn missed_fires_follow_the_policy() {
        // Down from 00:30 to 05:10: 01:00 .. 05:00 were missed.
        let (last, now) = (at(0), at(5 * 60 + 10));
        let none = due(&hourly(), chrono_tz::UTC, last, now, CatchUp::None);
        assert_eq!(
            (none.run.len(), none.skipped, none.last),
            (0, 5, Some(at(300)))
        );
        let latest = due(&hourly(), chrono_tz::UTC, last, now, CatchUp::Latest);
        assert_eq!((latest.run, latest.skipped), (vec![at(300)], 4));
        let all = due(&hourly(), chrono_tz::UTC, last, now, CatchUp::All);
        assert_eq!(all.run, vec![at(60), at(120), at(180), at(240), at(300)]);
        assert_eq!(all.skipped, 0);
        // "none" still runs a fire noticed within a minute of its time.
        let none = due(
            &hourly(),
            chrono_tz::UTC,
            last,
            at(300) + 30_000,
            CatchUp::None,
        );
        assert_eq!((none.run, none.skipped), (vec![at(300)], 4));
    }

    #[test]
    fn all_is_capped() {
        let every_minute = parse_cron("* * * * *").unwrap();
        let f = due(&every_minute, chrono_tz::UTC, at(0), at(1000), CatchUp::All);
        assert_eq!(f.run.len(), MAX_CATCH_UP);
        assert_eq!(f.skipped, 1000 - MAX_CATCH_UP);
        assert_eq!(*f.run.last().unwrap(), at(1000));
    }

    #[test]
    fn time_zones_move_the_fire() {
        // 09:00 in Berlin is 08:00 UTC in winter.
        let nine = parse_cron("0 9 * * *").unwrap();
        let next = next_fires(&nine, chrono_tz::Europe::Berlin, at(0), 2);
        assert_eq!(next, vec![at(8 * 60), at(8 * 60 + 24 * 60)]);
    }
}
