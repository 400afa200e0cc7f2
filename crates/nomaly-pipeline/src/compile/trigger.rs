//! When `nomaly serve` runs a pipeline: a cron schedule in a time zone, with a catch-up policy and
//! an overlap rule, and the pipelines it runs after (or on failure of). `nomaly run` ignores all
//! of it; `nomaly validate` checks it, so a bad expression is found before a server sees it.

use super::place;
use crate::error::{PipelineError, Result};
use crate::spec::{CatchUp, PipelineFile};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as written (5 fields).
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    pub cron: CronExpr,
}

/// The pipeline's triggers on a server.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub schedule: Option<CronSchedule>,
    pub catch_up: CatchUp,
    pub allow_overlap: bool,
    pub after: Vec<String>,
    pub on_failure: Vec<String>,
    /// `trigger = "files"`: queued when unread files land in the incremental source.
    pub files: Option<FilesTrigger>,
}

/// A file-arrival trigger: list every `poll`, queue a run once the newest unread file is `quiet`
/// old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesTrigger {
    pub poll: std::time::Duration,
    pub quiet: std::time::Duration,
}

/// A 5-field cron expression read as crontab(5) reads it (croner, in its Vixie-cron mode): names
/// (`MON`, `JAN`), steps (`*/15`), Sunday as 0 or 7, and, when both day-of-month and day-of-week
/// are restricted, a fire on a day that matches *either*.
#[derive(Debug, Clone)]
pub struct CronExpr(croner::Cron);

impl CronExpr {
    /// The fire times strictly after `t`, in `t`'s time zone, oldest first. A time that a
    /// daylight-saving change skips fires once, at the first valid time after the gap; a time
    /// that the change repeats fires once.
    pub fn after<'a, Tz: chrono::TimeZone + 'a>(
        &'a self,
        t: &chrono::DateTime<Tz>,
    ) -> impl Iterator<Item = chrono::DateTime<Tz>> + 'a {
        self.0.iter_after(t.clone())
    }
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week); see
/// [`CronExpr`].
pub fn parse_cron(expression: &str) -> std::result::Result<CronExpr, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "'{expression}' has {} fields; a schedule has 5: minute hour day-of-month month \
             day-of-week, e.g. \"0 */6 * * *\" (every 6 hours) or \"*/15 * * * MON-FRI\"",
            fields.len()
        ));
    }
    // The days of each list item, its step (`*/8`: not a day) left out.
    let day_numbers = fields[4]
        .split(',')
        .flat_map(|part| part.split('/').next().unwrap_or_default().split('-'))
        .filter_map(|t| t.parse::<u32>().ok());
    if let Some(n) = day_numbers.into_iter().find(|&n| n > 7) {
        return Err(format!(
            "day-of-week {n} is out of range; use 0-7 (0 and 7 are Sunday) or SUN-SAT"
        ));
    }
    let fields = [
        fields[0].to_string(),
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3].to_string(),
        unwrap_weekday_ranges(fields[4]),
    ];
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build();
    parser
        .parse(&fields.join(" "))
        .map(CronExpr)
        .map_err(|e| format!("'{expression}' is not a cron expression ({e}); e.g. \"0 */6 * * *\""))
}

/// Day-of-week ranges that wrap past Saturday (`5-0`, `FRI-SUN`: Friday to Sunday), which
/// croner refuses, as two ranges (`5-7,0-0`).
fn unwrap_weekday_ranges(field: &str) -> String {
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let day = |t: &str| {
        t.parse::<u32>().ok().or_else(|| {
            let upper = t.to_ascii_uppercase();
            DAYS.iter().position(|d| *d == upper).map(|i| i as u32)
        })
    };
    let parts: Vec<String> = field
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) if !part.contains('/') => match (day(a), day(b)) {
                (Some(x), Some(y)) if x > y && x <= 7 => format!("{x}-7,0-{y}"),
                _ => part.to_string(),
            },
            _ => part.to_string(),
        })
        .collect();
    parts.join(",")
}

pub(super) fn compile_trigger(file: &PipelineFile) -> Result<Trigger> {
    let spec = &file.spec;
    let timezone = match &spec.timezone {
        None => chrono_tz::UTC,
        Some(t) => t.parse::<chrono_tz::Tz>().map_err(|_| {
            PipelineError::invalid(
                place(file, "", 0, Some("timezone")),
                format!(
                    "'{t}' is not a time zone; use an IANA name such as \"UTC\", \
                     \"Europe/Berlin\" or \"America/New_York\""
                ),
            )
        })?,
    };
    let schedule = match &spec.schedule {
        None => None,
        Some(expression) => {
            let cron = parse_cron(expression).map_err(|message| {
                PipelineError::invalid(place(file, "", 0, Some("schedule")), message)
            })?;
            Some(CronSchedule {
                expression: expression.clone(),
                timezone,
                cron,
            })
        }
    };
    if schedule.is_none() {
        for key in ["timezone", "catch_up", "allow_overlap"] {
            let set = match key {
                "timezone" => spec.timezone.is_some(),
                "catch_up" => spec.catch_up.is_some(),
                _ => spec.allow_overlap.is_some(),
            };
            if set {
                return Err(PipelineError::invalid(
                    place(file, "", 0, Some(key)),
                    format!(
                        "'{key}' only applies to a schedule; add schedule = \"...\" or remove it"
                    ),
                ));
            }
        }
    }
    for (key, names) in [("after", &spec.after), ("on_failure", &spec.on_failure)] {
        for n in names {
            if n.trim().is_empty() {
                return Err(PipelineError::invalid(
                    place(file, "", 0, Some(key)),
                    "an empty pipeline name; list pipelines by their `name`".to_string(),
                ));
            }
        }
    }
    Ok(Trigger {
        schedule,
        catch_up: spec.catch_up.unwrap_or_default(),
        allow_overlap: spec.allow_overlap.unwrap_or(false),
        after: spec.after.clone(),
        on_failure: spec.on_failure.clone(),
        files: compile_files_trigger(file)?,
    })
}

fn compile_files_trigger(file: &PipelineFile) -> Result<Option<FilesTrigger>> {
    let spec = &file.spec;
    if spec.trigger.is_none() {
        for (key, set) in [
            ("poll", spec.poll.is_some()),
            ("quiet", spec.quiet.is_some()),
        ] {
            if set {
                return Err(PipelineError::invalid(
                    place(file, "", 0, Some(key)),
                    format!("'{key}' only applies to trigger = \"files\"; add it or remove {key}"),
                ));
            }
        }
        return Ok(None);
    }
    let incremental = spec.sources.first().and_then(|s| s.incremental) == Some(true);
    if !incremental {
        return Err(PipelineError::invalid(
            place(file, "", 0, Some("trigger")),
            "trigger = \"files\" watches the first source for files no run has read: make it \
             a [[source]] with incremental = true",
        ));
    }
    let duration = |key: &str, value: &Option<String>, default: u64| match value {
        None => Ok(std::time::Duration::from_secs(default)),
        Some(v) => super::parse_duration(v).map_err(|e| {
            PipelineError::invalid(place(file, "", 0, Some(key)), format!("{key}: {e}"))
        }),
    };
    let poll = duration("poll", &spec.poll, 30)?;
    let quiet = duration("quiet", &spec.quiet, 10)?;
    if poll < std::time::Duration::from_secs(1) {
        return Err(PipelineError::invalid(
            place(file, "", 0, Some("poll")),
            "poll is at least \"1s\" (each poll lists the source)",
        ));
    }
    Ok(Some(FilesTrigger { poll, quiet }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn next(expr: &str, from: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        parse_cron(expr).unwrap().after(&from).next().unwrap()
    }

    #[test]
    fn crontab_fields_and_sunday_zero() {
        let mon = Utc.with_ymd_and_hms(2026, 11, 30, 10, 7, 0).unwrap(); // a Monday
        assert_eq!(
            next("*/15 * * * *", mon),
            Utc.with_ymd_and_hms(2026, 11, 30, 10, 15, 0).unwrap()
        );
        assert_eq!(
            next("0 */6 * * *", mon),
            Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
        );
        // 0 = Sunday, as in crontab.
        assert_eq!(
            next("0 9 * * 0", mon),
            Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap()
        );
        assert_eq!(
            next("0 9 * * 7", mon),
            Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap()
        );
        assert_eq!(
            next("0 9 * * 1-5", mon),
            Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
        );
        assert_eq!(
            next("0 9 * * MON", mon),
            Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap()
        );
        // Friday to Sunday wraps.
        assert_eq!(
            next("0 9 * * 5-0", mon),
            Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap()
        );
        assert!(parse_cron("* * * *").unwrap_err().contains("has 4 fields"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(
            parse_cron("0 9 * * 8")
                .unwrap_err()
                .contains("out of range")
        );
    }
}

#[cfg(test)]
mod files_trigger {
    use super::*;
    use crate::run_context::RunRequest;

    fn read(text: &str) -> Result<Option<FilesTrigger>> {
        let file = PipelineFile::parse(
            std::path::Path::new("p.toml"),
            text,
            &[],
            &|_| Ok(None),
            &RunRequest::default(),
        )?;
        compile_files_trigger(&file)
    }

    #[test]
    fn a_files_trigger_needs_an_incremental_first_source_and_sane_durations() {
        let source = "[[source]]\nname = \"tx\"\npath = \"in/*.csv\"\n";
        let ok = format!("trigger = \"files\"\npoll = \"2s\"\n{source}incremental = true\n");
        let t = read(&ok).unwrap().unwrap();
        assert_eq!((t.poll.as_secs(), t.quiet.as_secs()), (2, 10));
        for (text, needle) in [
            (
                format!("trigger = \"files\"\n{source}"),
                "incremental = true",
            ),
            (
                format!("trigger = \"files\"\npoll = \"10ms\"\n{source}incremental = true\n"),
                "at least",
            ),
            (
                format!("quiet = \"5s\"\n{source}"),
                "only applies to trigger",
            ),
            (
                format!("trigger = \"files\"\nquiet = \"soon\"\n{source}incremental = true\n"),
                "quiet:",
            ),
        ] {
            let e = read(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert_eq!(read(source).unwrap(), None);
    }
}

#[cfg(test)]
mod crontab_table {
    use super::parse_cron;
    use chrono::{TimeZone, Utc};

    #[derive(serde::Deserialize)]
    struct Case {
        expression: String,
        timezone: String,
        start_ms: i64,
        why: String,
        fires_ms: Vec<i64>,
    }

    /// croner's fires equal a brute-force reading of crontab(5) (minute by minute in the time
    /// zone, day-of-month OR day-of-week, a repeated local time once), for every expression of
    /// `benchmarks/reference/make_cron_fixtures.py`, across daylight-saving changes both ways.
    #[test]
    fn fires_agree_with_a_brute_force_crontab() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../benchmarks/reference/fixtures/cron_fires.json"
        );
        let table: Vec<Case> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(table.len() >= 10);
        for case in table {
            let tz: chrono_tz::Tz = case.timezone.parse().unwrap();
            let start = Utc
                .timestamp_millis_opt(case.start_ms)
                .unwrap()
                .with_timezone(&tz);
            let got: Vec<i64> = parse_cron(&case.expression)
                .unwrap()
                .after(&start)
                .take(case.fires_ms.len())
                .map(|t| t.timestamp_millis())
                .collect();
            assert_eq!(
                got, case.fires_ms,
                "{} in {} ({})",
                case.expression, case.timezone, case.why
            );
        }
    }

    /// A local time that spring-forward skips still fires that day, once, at the first valid time
    /// after the gap (Berlin, 2027-03-28: 02:00 → 03:00).
    #[test]
    fn a_skipped_time_fires_once_after_the_gap() {
        let tz = chrono_tz::Europe::Berlin;
        let start = tz.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap();
        let got: Vec<String> = parse_cron("30 2 * * *")
            .unwrap()
            .after(&start)
            .take(3)
            .map(|t| t.format("%m-%d %H:%M %Z").to_string())
            .collect();
        assert_eq!(
            got,
            ["03-28 03:00 CEST", "03-29 02:30 CEST", "03-30 02:30 CEST"]
        );
    }
}
