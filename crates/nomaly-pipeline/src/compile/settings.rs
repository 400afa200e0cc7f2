//! Run settings: `[run]` (chunk size, engine, bad rows), `[resources]` (memory, cpus, timeout) and
//! `[retry]`.

use super::place;
use crate::chunk_plan::SourceReader;
use crate::error::{PipelineError, Result};
use crate::spec::{CHUNK_ROWS_RANGE, DEFAULT_CHUNK_ROWS, FileFormat, PipelineFile};
use nomaly_engine::EngineKind;
use std::time::Duration;

/// How transient failures are retried (`[retry]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// A served run that failed or timed out is queued again (resuming) this many times, each
    /// after `run_retry_delay`; its failure notifications wait for the last attempt.
    pub run_retries: u32,
    pub run_retry_delay: Duration,
}

/// The most times a failed served run is queued again.
pub const MAX_RUN_RETRIES: u32 = 10;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            run_retries: 0,
            run_retry_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): full jitter over an exponential cap, so
    /// many chunks failing together do not retry together. `unit` in [0, 1) is the random draw.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let cap = self
            .initial_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The settings of a run, resolved.
pub(super) struct RunSettings {
    pub chunk_rows: u64,
    pub engine: EngineKind,
    pub memory_limit: Option<usize>,
    pub timeout: Option<Duration>,
    pub deadline: Option<Duration>,
    pub retry: RetryPolicy,
    pub quarantine: bool,
}

/// A `[resources]` duration (`timeout`, `deadline`).
fn resource_duration(
    file: &PipelineFile,
    key: &str,
    text: &Option<String>,
) -> Result<Option<Duration>> {
    text.as_ref()
        .map(|t| {
            parse_duration(t).map_err(|e| {
                PipelineError::invalid(place(file, "[resources]", 0, Some(key)), e.to_string())
            })
        })
        .transpose()
}

pub(super) fn compile_settings(
    file: &PipelineFile,
    sources: &[SourceReader],
) -> Result<RunSettings> {
    let spec = &file.spec;
    let chunk_rows = spec.run.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
    if !CHUNK_ROWS_RANGE.contains(&chunk_rows) {
        return Err(PipelineError::invalid(
            place(file, "[run]", 0, Some("chunk_rows")),
            format!(
                "chunk_rows = {chunk_rows} is out of range; use {} to {} (default {DEFAULT_CHUNK_ROWS})",
                CHUNK_ROWS_RANGE.start(),
                CHUNK_ROWS_RANGE.end()
            ),
        ));
    }
    let engine = match spec.run.engine.as_deref() {
    None => EngineKind::Local,
    Some(e) => e.parse::<EngineKind>().map_err(|_| {
        PipelineError::invalid(
            place(file, "[run]", 0, Some("engine")),
            format!(
                "engine = \"{e}\" is not an engine; use \"local\" (DataFusion in this process), \"standalone\" (a Ballista scheduler and executor in this process) or \"ballista://HOST:PORT\" (a cluster started with `nomaly scheduler` and `nomaly executor`)"
            ),
        )
    })?,
};
    let memory_limit = match &spec.resources.memory_limit {
        Some(m) => Some(nomaly_engine::parse_byte_size(m).map_err(|e| {
            PipelineError::invalid(
                place(file, "[resources]", 0, Some("memory_limit")),
                e.to_string(),
            )
        })?),
        None => None,
    };
    if spec.resources.cpus == Some(0) {
        return Err(PipelineError::invalid(
            place(file, "[resources]", 0, Some("cpus")),
            "cpus must be at least 1",
        ));
    }
    let timeout = resource_duration(file, "timeout", &spec.resources.timeout)?;
    let deadline = resource_duration(file, "deadline", &spec.resources.deadline)?;
    let retry = compile_retry(file)?;
    let quarantine = spec.run.on_bad_rows == Some(crate::spec::OnBadRows::Quarantine);
    if quarantine && !matches!(sources[0].format, FileFormat::Csv | FileFormat::Ndjson) {
        return Err(PipelineError::invalid(
            place(file, "[run]", 0, Some("on_bad_rows")),
            format!(
                "on_bad_rows = \"quarantine\" reads the first source line by line, so it must be CSV or NDJSON; '{}' is {} (typed columns, no bad lines to set aside) — remove the setting",
                sources[0].name,
                sources[0].format.extension()
            ),
        ));
    }
    if quarantine && engine != EngineKind::Local {
        return Err(PipelineError::invalid(
            place(file, "[run]", 0, Some("on_bad_rows")),
            "on_bad_rows = \"quarantine\" reads lines with an operator of Nomaly's own, which runs in this process only; use engine = \"local\" with it, or remove the setting so bad rows fail the run",
        ));
    }
    if quarantine && nomaly_engine::RemoteStore::of(&sources[0].location).is_some() {
        return Err(PipelineError::invalid(
            place(file, "[run]", 0, Some("on_bad_rows")),
            format!(
                "on_bad_rows = \"quarantine\" reads the first source line by line from local files; '{}' is in an object store ({}) — copy it locally, or remove the setting so bad rows fail the run",
                sources[0].name, sources[0].path
            ),
        ));
    }
    Ok(RunSettings {
        chunk_rows,
        engine,
        memory_limit,
        timeout,
        deadline,
        retry,
        quarantine,
    })
}

/// `[retry]`: of chunks (within a run) and of whole served runs.
fn compile_retry(file: &PipelineFile) -> Result<RetryPolicy> {
    let spec = &file.spec;
    let defaults = RetryPolicy::default();
    let r = &spec.retry;
    let delay = |key: &str, text: &Option<String>, default: Duration| match text {
        Some(t) => parse_duration(t).map_err(|e| {
            PipelineError::invalid(place(file, "[retry]", 0, Some(key)), e.to_string())
        }),
        None => Ok(default),
    };
    let policy = RetryPolicy {
        max_retries: r.max_retries.unwrap_or(defaults.max_retries),
        initial_delay: delay("initial_delay", &r.initial_delay, defaults.initial_delay)?,
        max_delay: delay("max_delay", &r.max_delay, defaults.max_delay)?,
        run_retries: r.run_retries.unwrap_or(0),
        run_retry_delay: delay(
            "run_retry_delay",
            &r.run_retry_delay,
            defaults.run_retry_delay,
        )?,
    };
    if policy.run_retries > MAX_RUN_RETRIES {
        return Err(PipelineError::invalid(
            place(file, "[retry]", 0, Some("run_retries")),
            format!(
                "run_retries = {} is out of range; use 0 (a failed run stays failed) to {MAX_RUN_RETRIES}",
                policy.run_retries
            ),
        ));
    }
    if policy.max_retries > 100 {
        return Err(PipelineError::invalid(
            place(file, "[retry]", 0, Some("max_retries")),
            format!(
                "max_retries = {} is out of range; use 0 (never retry) to 100",
                policy.max_retries
            ),
        ));
    }
    if policy.max_delay < policy.initial_delay {
        return Err(PipelineError::invalid(
            place(file, "[retry]", 0, Some("max_delay")),
            "max_delay is shorter than initial_delay; raise max_delay or lower initial_delay",
        ));
    }
    Ok(policy)
}

/// A duration that does not parse; says how to write one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// The longest duration a pipeline or flag may give (timeouts, retry delays, aging).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses "90s", "30m", "2h", "1h30m" or plain seconds, at most [`MAX_DURATION`]; a longer one
/// (or one whose arithmetic would overflow) is an error, not a wrapped number.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, DurationError> {
    let t = text.trim();
    let bounded = |d: Duration| {
        if d > MAX_DURATION {
            Err(DurationError(format!(
                "'{text}' is longer than the longest duration allowed, 366 days"
            )))
        } else {
            Ok(d)
        }
    };
    if let Ok(secs) = t.parse::<u64>() {
        return bounded(Duration::from_secs(secs));
    }
    if let Some(ms) = t.strip_suffix("ms")
        && let Ok(ms) = ms.trim().parse::<u64>()
    {
        return bounded(Duration::from_millis(ms));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| {
            DurationError(format!(
                "'{text}' is not a duration; write e.g. 90s, 30m, 2h or 1h30m"
            ))
        })?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(DurationError(format!(
                    "'{text}': unknown unit '{c}'; write e.g. 90s, 30m, 2h or 1h30m (units s, m, h, d)"
                )));
            }
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|&s| s <= MAX_DURATION.as_secs())
            .ok_or_else(|| {
                DurationError(format!(
                    "'{text}' is longer than the longest duration allowed, 366 days"
                ))
            })?;
    }
    if !num.is_empty() || total == 0 {
        return Err(DurationError(format!(
            "'{text}' is not a duration; write e.g. 90s, 30m, 2h or 1h30m"
        )));
    }
    Ok(Duration::from_secs(total))
}
