//! A run's logical interval and parameters: what `${run.date}`, `${run.start}`, `${run.end}` and
//! `${param.NAME}` in a pipeline file expand to.
//!
//! A run is *for* an interval of time, as an Airflow data interval is:
//! - a scheduled fire at `F` is for `[the fire before F, F)`: the nightly `0 2 * * *` run that
//!   starts on the 6th at 02:00 is for the 5th (`${run.date}` = the start's date);
//! - `--date D` is for the schedule's first interval that starts on `D` (a day, without a
//!   schedule);
//! - a run without `--date` is for the schedule's latest interval that has ended (without a
//!   schedule: the instant it was asked for).
//!
//! Values are checked here, at the boundary: parameters come from whoever submits a run, and
//! are written into TOML strings and SQL literals, so a value holds only characters that can
//! close neither (no quote, backslash, `$`, brace or control character), and is bounded.

use crate::compile::CronExpr;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most parameters a run may carry.
pub const MAX_PARAMS: usize = 32;
/// Longest parameter name and value, in characters.
pub const MAX_PARAM_NAME: usize = 64;
pub const MAX_PARAM_VALUE: usize = 256;
/// Longest `${run.start:FORMAT}` format.
const MAX_FORMAT: usize = 64;
/// How far back the fire before a fire is looked for.
const LOOKBACK_DAYS: [i64; 5] = [1, 8, 32, 367, 5 * 366];

/// Which interval a run is asked to be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunDate {
    /// The latest ended interval of the schedule (without a schedule: the instant of asking).
    Latest,
    /// The schedule's first interval starting on this day (without a schedule: the day, UTC).
    Day(NaiveDate),
    /// Exactly this interval (a scheduled fire, a backfill's interval, a resumed run's).
    Interval { start_ms: i64, end_ms: i64 },
}

/// What a run is asked to be for: an interval and named parameters, and the time of asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub date: RunDate,
    pub params: BTreeMap<String, String>,
    /// "Now" for [`RunDate::Latest`] (milliseconds since the epoch; a fake clock in tests).
    pub now_ms: i64,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            date: RunDate::Latest,
            params: BTreeMap::new(),
            now_ms: Utc::now().timestamp_millis(),
        }
    }
}

/// A resolved run context: the interval (in the schedule's time zone) and the parameters.
/// Recorded with the run (`run.json`, the job store), so a resume expands the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The IANA time zone dates are written in (the schedule's, else UTC).
    pub timezone: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl RunRequest {
    /// A request for `date` with `params` at the current time.
    pub fn new(date: RunDate, params: BTreeMap<String, String>) -> Self {
        RunRequest {
            date,
            params,
            ..RunRequest::default()
        }
    }

    /// The interval this request means for a schedule (`None`: the pipeline has none), with its
    /// parameters checked. The error says what to pass instead.
    pub fn resolve(
        &self,
        schedule: Option<&CronExpr>,
        tz: chrono_tz::Tz,
    ) -> Result<RunContext, String> {
        check_params(&self.params)?;
        let (start_ms, end_ms) = match (self.date, schedule) {
            (RunDate::Interval { start_ms, end_ms }, _) => {
                if end_ms < start_ms {
                    return Err(format!(
                        "the interval ends ({}) before it starts ({})",
                        iso(end_ms, tz),
                        iso(start_ms, tz)
                    ));
                }
                (start_ms, end_ms)
            }
            (RunDate::Latest, None) => (self.now_ms, self.now_ms),
            (RunDate::Latest, Some(cron)) => {
                let end = fire_at_or_before(cron, tz, self.now_ms).ok_or_else(no_fire)?;
                let start = fire_before(cron, tz, end).ok_or_else(no_fire)?;
                (start, end)
            }
            (RunDate::Day(day), None) => {
                let start = day_start(day, chrono_tz::UTC)?;
                (start, day_start(day + Duration::days(1), chrono_tz::UTC)?)
            }
            (RunDate::Day(day), Some(cron)) => {
                let midnight = day_start(day, tz)?;
                let start = fire_after(cron, tz, midnight - 1).ok_or_else(no_fire)?;
                let start_day = to_tz(start, tz).date_naive();
                if start_day != day {
                    return Err(format!(
                        "the schedule has no fire on {day} (the next is {}); pass a date it \
                         fires on",
                        iso(start, tz)
                    ));
                }
                (start, fire_after(cron, tz, start).ok_or_else(no_fire)?)
            }
        };
        Ok(RunContext {
            start_ms,
            end_ms,
            timezone: tz.name().to_string(),
            params: self.params.clone(),
        })
    }
}

fn no_fire() -> String {
    "the schedule has no fire within five years of the date".to_string()
}

/// A day's first instant in `tz` (a day that starts in a daylight-saving gap starts after it).
fn day_start(day: NaiveDate, tz: chrono_tz::Tz) -> Result<i64, String> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..=180)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + Duration::minutes(minutes)))
                .earliest()
        })
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{day} has no midnight in {}", tz.name()))
}

fn to_tz(ms: i64, tz: chrono_tz::Tz) -> DateTime<chrono_tz::Tz> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz)
}

fn iso(ms: i64, tz: chrono_tz::Tz) -> String {
    to_tz(ms, tz).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// The first fire strictly after `ms`.
fn fire_after(cron: &CronExpr, tz: chrono_tz::Tz, ms: i64) -> Option<i64> {
    cron.after(&to_tz(ms, tz))
        .next()
        .map(|t| t.timestamp_millis())
}

/// The last fire at or before `ms`.
fn fire_at_or_before(cron: &CronExpr, tz: chrono_tz::Tz, ms: i64) -> Option<i64> {
    fire_before(cron, tz, ms + 1)
}

/// The last fire strictly before `ms`, looked for in growing windows.
pub fn fire_before(cron: &CronExpr, tz: chrono_tz::Tz, ms: i64) -> Option<i64> {
    LOOKBACK_DAYS.iter().find_map(|days| {
        let from = ms - days * 86_400_000;
        cron.after(&to_tz(from, tz))
            .map(|t| t.timestamp_millis())
            .take_while(|&t| t < ms)
            .last()
    })
}

/// The intervals of a backfill: every interval of the schedule (days, without one) that starts
/// on a day in `from..=to` and has ended by `now_ms`, oldest first, at most `cap` (+1, so a
/// caller knows there were more).
pub fn intervals_between(
    schedule: Option<&CronExpr>,
    tz: chrono_tz::Tz,
    from: NaiveDate,
    to: NaiveDate,
    now_ms: i64,
    cap: usize,
) -> Result<Vec<(i64, i64)>, String> {
    if to < from {
        return Err(format!("the last day {to} is before the first day {from}"));
    }
    let tz = if schedule.is_some() {
        tz
    } else {
        chrono_tz::UTC
    };
    let begin = day_start(from, tz)?;
    let stop = day_start(to + Duration::days(1), tz)?;
    let mut out = Vec::new();
    let mut start = match schedule {
        Some(cron) => fire_after(cron, tz, begin - 1),
        None => Some(begin),
    };
    while let Some(s) = start.filter(|&s| s < stop) {
        let end = match schedule {
            Some(cron) => fire_after(cron, tz, s),
            None => day_start(to_tz(s, tz).date_naive() + Duration::days(1), tz).ok(),
        };
        let Some(end) = end.filter(|&e| e <= now_ms) else {
            break;
        };
        out.push((s, end));
        if out.len() > cap {
            break;
        }
        start = Some(end);
    }
    Ok(out)
}

/// A `YYYY-MM-DD` day (`--date`, `--from`, `--to`).
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|e| format!("'{text}' is not a day ({e}); write YYYY-MM-DD, e.g. 2026-12-05"))
}

/// `NAME=VALUE` pairs (`--param`), checked; a name given twice is an error.
pub fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}' is not NAME=VALUE, e.g. --param region=eu"))?;
        if params
            .insert(name.trim().to_string(), value.to_string())
            .is_some()
        {
            return Err(format!("parameter {} is given twice", name.trim()));
        }
    }
    check_params(&params)?;
    Ok(params)
}

/// The most intervals one backfill runs.
pub const MAX_BACKFILL_RUNS: usize = 1000;

/// The intervals a backfill of `p` runs for the days `from..=to` ([`intervals_between`] under
/// its schedule), refused with the fix when there are none or too many, or when the pipeline
/// reads no `${run.…}` value (every interval would write the same output).
pub fn backfill_intervals(
    p: &crate::CompiledPipeline,
    from: NaiveDate,
    to: NaiveDate,
    now_ms: i64,
) -> Result<Vec<(i64, i64)>, String> {
    if !p.file.reads_run {
        return Err(format!(
            "{} reads no ${{run.…}} value, so every interval would write the same output; write \
             its output as e.g. out/date=${{run.date}}/",
            p.file.path.display()
        ));
    }
    let schedule = p.trigger.schedule.as_ref();
    let tz = schedule.map(|s| s.timezone).unwrap_or(chrono_tz::UTC);
    let cron = schedule.map(|s| &s.cron);
    let intervals = intervals_between(cron, tz, from, to, now_ms, MAX_BACKFILL_RUNS)?;
    if intervals.len() > MAX_BACKFILL_RUNS {
        return Err(format!(
            "{from} to {to} holds more than {MAX_BACKFILL_RUNS} intervals; a backfill runs at \
             most {MAX_BACKFILL_RUNS}: split it into shorter ranges"
        ));
    }
    if intervals.is_empty() {
        return Err(format!(
            "no interval starting between {from} and {to} has ended yet; a backfill runs past \
             intervals only"
        ));
    }
    Ok(intervals)
}

/// Checks submitted parameters: names like identifiers, values without characters that could
/// end a TOML string or a SQL literal, both bounded.
pub fn check_params(params: &BTreeMap<String, String>) -> Result<(), String> {
    if params.len() > MAX_PARAMS {
        return Err(format!(
            "{} parameters; at most {MAX_PARAMS} are allowed",
            params.len()
        ));
    }
    for (name, value) in params {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_PARAM_NAME
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(format!(
                "parameter name '{}' is not allowed; names are letters, digits and _ (not \
                 starting with a digit), at most {MAX_PARAM_NAME} characters",
                name.chars().take(MAX_PARAM_NAME).collect::<String>()
            ));
        }
        check_value(value).map_err(|why| format!("parameter {name}: {why}"))?;
    }
    Ok(())
}

/// A value that may be written into a TOML string or a SQL literal as it is.
fn check_value(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_PARAM_VALUE {
        return Err(format!(
            "the value is longer than {MAX_PARAM_VALUE} characters"
        ));
    }
    const ALLOWED: &str = " -_.:/+,@=%";
    match value
        .chars()
        .find(|&c| !(c.is_alphanumeric() || ALLOWED.contains(c)))
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "the value holds {c:?}; values hold letters, digits, spaces and {ALLOWED:?} only, so \
             that they can be written into paths, TOML strings and SQL literals as they are"
        )),
    }
}

impl RunContext {
    /// The request that resolves to this context again (a resume, a retry).
    pub fn request(&self) -> RunRequest {
        RunRequest::new(
            RunDate::Interval {
                start_ms: self.start_ms,
                end_ms: self.end_ms,
            },
            self.params.clone(),
        )
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// `${run.date}`: the interval's start day in its time zone.
    pub fn date(&self) -> String {
        to_tz(self.start_ms, self.tz())
            .format("%Y-%m-%d")
            .to_string()
    }

    /// One line for `validate`, `explain` and reports.
    pub fn describe(&self) -> String {
        let tz = self.tz();
        let mut s = format!(
            "run.date = {}, run.start = {}, run.end = {}",
            self.date(),
            iso(self.start_ms, tz),
            iso(self.end_ms, tz)
        );
        for (k, v) in &self.params {
            s.push_str(&format!(", param.{k} = {v}"));
        }
        s
    }

    /// The value of `${name}` or `${name:format}` for a `run.` or `param.` name: `Ok(None)` for
    /// an unset parameter, an error (with the fix) for an unknown name or a bad format.
    pub fn lookup(&self, name: &str, format: Option<&str>) -> Result<Option<String>, String> {
        let tz = self.tz();
        let instant = match name {
            "run.date" | "run.start" => Some(self.start_ms),
            "run.end" => Some(self.end_ms),
            _ => None,
        };
        if let Some(ms) = instant {
            let default = if name == "run.date" {
                "%Y-%m-%d"
            } else {
                "%Y-%m-%dT%H:%M:%S%:z"
            };
            return format_instant(to_tz(ms, tz), format.unwrap_or(default)).map(Some);
        }
        if let Some(param) = name.strip_prefix("param.") {
            if format.is_some() {
                return Err(format!(
                    "${{{name}:...}}: only run.date, run.start and run.end take a format"
                ));
            }
            return Ok(self.params.get(param).cloned());
        }
        Err(format!(
            "'{name}' is not a run value; use run.date, run.start, run.end (each may take a \
             format: ${{run.start:%Y/%m/%d}}) or param.NAME"
        ))
    }
}

/// An instant in a strftime-style format, refused when the format is unknown or too long, or
/// writes a character a value may not hold.
fn format_instant(t: DateTime<chrono_tz::Tz>, format: &str) -> Result<String, String> {
    if format.chars().count() > MAX_FORMAT || format.is_empty() {
        return Err(format!(
            "a date format has 1 to {MAX_FORMAT} characters, e.g. %Y/%m/%d"
        ));
    }
    let items = chrono::format::StrftimeItems::new(format)
        .parse()
        .map_err(|_| format!("'{format}' is not a strftime format; e.g. %Y-%m-%d or %Y%m%dT%H"))?;
    let text = t.format_with_items(items.iter()).to_string();
    check_value(&text).map_err(|why| format!("format '{format}': {why}"))?;
    Ok(text)
}

#[cfg(test)]
#[path = "run_context_tests.rs"]
mod tests;
