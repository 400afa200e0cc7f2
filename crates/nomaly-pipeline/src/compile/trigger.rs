//! When `nomaly serve` runs a pipeline: a cron schedule in a time zone, with a catch-up policy and
//! an overlap rule, and the pipelines it runs after (or on failure of). `nomaly run` ignores all
//! of it; `nomaly validate` checks it, so a bad expression is found before a server sees it.

use super::place;
use crate::error::{PipelineError, Result};
use crate::spec::{CatchUp, PipelineFile};
use std::str::FromStr;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as written (5 fields).
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    /// The `cron` crate's form: a seconds field of `0` in front of the five.
    pub cron: cron::Schedule,
}

/// The pipeline's triggers on a server.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub schedule: Option<CronSchedule>,
    pub catch_up: CatchUp,
    pub allow_overlap: bool,
    pub after: Vec<String>,
    pub on_failure: Vec<String>,
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week) as crontab(5)
/// reads it, names (`MON`, `JAN`) and steps (`*/15`) included.
pub fn parse_cron(expression: &str) -> std::result::Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "'{expression}' has {} fields; a schedule has 5: minute hour day-of-month month \
             day-of-week, e.g. \"0 */6 * * *\" (every 6 hours) or \"*/15 * * * MON-FRI\"",
            fields.len()
        ));
    }
    // crontab counts Sunday as 0 (and 7); the cron crate counts 1-7 from Sunday. Numeric
    // day-of-week values are shifted; names pass through.
    let dow = shift_day_of_week(fields[4])?;
    let six = format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], dow
    );
    cron::Schedule::from_str(&six)
        .map_err(|e| format!("'{expression}' is not a cron expression ({e}); e.g. \"0 */6 * * *\""))
}

/// Maps crontab's 0-7 day numbers (0 and 7 = Sunday) to the cron crate's 1-7 (1 = Sunday).
fn shift_day_of_week(field: &str) -> std::result::Result<String, String> {
    let shift = |t: &str| -> std::result::Result<String, String> {
        match t.parse::<u32>() {
            Ok(n @ 0..=7) => Ok(((n % 7) + 1).to_string()),
            Ok(n) => Err(format!(
                "day-of-week {n} is out of range; use 0-7 (0 and 7 are Sunday) or SUN-SAT"
            )),
            Err(_) => Ok(t.to_string()),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let range = match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (shift(a)?, shift(b)?);
                // "5-7" (Fri-Sun) becomes 6-1 once shifted: write it as two ranges.
                match (a.parse::<u32>(), b.parse::<u32>()) {
                    (Ok(x), Ok(y)) if x > y && step.is_none() => format!("{x}-7,1-{y}"),
                    _ => format!("{a}-{b}"),
                }
            }
            None => shift(range)?,
        };
        out.push(match step {
            Some(s) => format!("{range}/{s}"),
            None => range,
        });
    }
    Ok(out.join(","))
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
    })
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
