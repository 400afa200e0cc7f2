//! The pipeline file format (TOML).
//!
//! The minimal file needs four keys:
//! ```toml
//! input = "data/tx/*.parquet"
//! output = "out/tx_scored/"
//! [detect]
//! algorithm = "iforest"
//! columns = ["amount", "latency_ms"]
//! ```
//! The full form names its sources (`[[source]]`), transforms them with SQL (`[[step]]`), detects
//! (`[detect]`), checks the result (`[[validate]]`), writes it (`[[sink]]`) and reports
//! (`[[notify]]`), within `[resources]` and `[run]` settings. Unknown keys are errors; relative paths
//! are relative to the pipeline file's directory; `${VAR}`, `${run.date}`, `${param.NAME}` and the like
//! are replaced before parsing ([`crate::substitute`]).

use crate::error::{PipelineError, Result};
use crate::run_context::{RunContext, RunRequest};
pub use crate::substitute::EnvLookup;
use crate::substitute::{Substituted, apply_overrides, substitute};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// A name for reports and notifications (default: the file name without extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Minimal form: the input path, directory or glob; it becomes the table `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Minimal form: the output directory or object-store prefix (`s3://`, `gs://`, `az://`; Parquet part files unless its extension says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Named inputs; each becomes a table of that name.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceSpec>,
    /// SQL transforms, in order; each becomes a view later steps and `[detect]` can read.
    #[serde(default, rename = "step", skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    /// The detector to fit and score with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<DetectSpec>,
    /// Checks on the result; a failed check ends the run with exit code 3.
    #[serde(default, rename = "validate", skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidateSpec>,
    /// Where the scored rows go (the minimal form's `output` is one Parquet sink).
    #[serde(default, rename = "sink", skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkSpec>,
    /// Who hears about the run.
    #[serde(default, rename = "notify", skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotifySpec>,
    /// Limits: memory, cores, wall-clock time.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// How the run is chunked, where it runs, what bad input rows do.
    #[serde(default)]
    pub run: RunSpec,
    /// How often a failed chunk is tried again, and how long between tries.
    #[serde(default)]
    pub retry: RetrySpec,
    /// `nomaly serve`: when to run, as a 5-field cron expression (minute hour day-of-month month
    /// day-of-week), e.g. `"0 */6 * * *"`. `nomaly run` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time zone `schedule` is read in, e.g. `"Europe/Berlin"` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Fire times missed while the server was down: "none" skips them, "latest" (default) runs
    /// once for the newest, "all" runs once for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// Whether a fire may start while this schedule's previous run is still queued or running
    /// (default false: that fire is skipped and recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_overlap: Option<bool>,
    /// `nomaly serve`: run this pipeline when every pipeline named here has succeeded since its
    /// own last run (pipeline names, as in their `name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// `nomaly serve`: pipelines to run when a run of this one fails or times out (alerting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// `nomaly serve`: `"files"` queues a run when files no run has read land in the first
    /// source, which must be `incremental` (a file-arrival sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerKind>,
    /// With `trigger = "files"`: how often the source is listed (default "30s", at least "1s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<String>,
    /// With `trigger = "files"`: how long the newest file must be unchanged before a run is
    /// queued, so a batch still being written is not split (default "10s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<String>,
}

/// See [`PipelineSpec::trigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Files,
}

/// See [`PipelineSpec::catch_up`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    #[default]
    Latest,
    All,
}

pub use nomaly_engine::FileFormat;

mod notify;
pub use notify::{NotifySpec, NotifyWhen, WebhookFormat};

/// A named input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The table name SQL steps use.
    pub name: String,
    /// A file, a directory of files, or a glob such as `data/*.parquet`.
    pub path: String,
    /// Default: from the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// CSV: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// CSV: one-character field delimiter (default `,`; `\t` for .tsv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Read only the files no earlier run of this pipeline read and published (the first
    /// source only); the ledger is `.nomaly-state/<name>/consumed.json` beside the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<bool>,
}

/// A SQL transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The view name later steps and `[detect]` read.
    pub name: String,
    /// The query, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Or a file holding the query, relative to the pipeline file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_file: Option<String>,
}

/// Detector options: a table (`{ contamination = 0.05, n_trees = 200 }`) or the SQL option string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DetectOptions {
    Table(BTreeMap<String, OptionValue>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OptionValue {
    Integer(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl DetectOptions {
    /// The option string the SQL functions take: `key=value, key=value`.
    pub fn to_option_string(&self) -> String {
        match self {
            DetectOptions::Text(s) => s.clone(),
            DetectOptions::Table(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        OptionValue::Integer(i) => i.to_string(),
                        OptionValue::Float(f) => f.to_string(),
                        OptionValue::Text(s) => s.clone(),
                        OptionValue::Bool(b) => b.to_string(),
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// What to detect on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectSpec {
    /// zscore, robust_zscore, iqr, hbos, ecod, copod or iforest.
    pub algorithm: String,
    /// Numeric feature columns.
    pub columns: Vec<String>,
    /// Table or step to read (default: the last step, else the only source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Detector options, e.g. `{ contamination = 0.05, seed = 7 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<DetectOptions>,
    /// One model per distinct value of these columns (per-segment detection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Which of `columns` are text (categorical) features: hbos, ecod, copod, iforest and eif only. A text column
    /// not listed is an error, so a numeric column read as text is never taken as categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    /// Also write each feature's contribution to the score (column `anomaly_explanation`).
    #[serde(default)]
    pub explain: bool,
    /// A registered model: with `train`, a run that succeeds registers its fit as the next
    /// version of this name; without, the run scores with the latest (or `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A query to fit on instead of the detect input, e.g. the last 30 days before `${run.start}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
    /// With `model` and no `train`: the version to score with (default: the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Warn when the run's scores drift from the model's training scores by more than this
    /// population-stability index (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_above: Option<f64>,
}

/// A check on the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "check", rename_all = "snake_case", deny_unknown_fields)]
pub enum ValidateSpec {
    /// Every input row of the detect step is in the output (rows in = rows out).
    RowCount,
    /// The share of rows flagged anomalous lies within [min, max].
    AnomalyRate {
        /// `anomaly_rate`: the lowest share allowed, 0–1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// `anomaly_rate`: the highest share allowed, 0–1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// A query over the table `output` that returns the failing rows: passes when it returns none
    /// (dbt's convention).
    Sql {
        /// `sql`: the check's name in the report.
        name: String,
        /// `sql`: the query over `output` that returns the failing rows.
        sql: String,
    },
}

/// What an existing output directory means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Replace a previous Nomaly output (a directory holding other files is never touched).
    #[default]
    Overwrite,
    /// Refuse to run when the output exists and is not empty.
    ErrorIfExists,
}

/// An output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Output directory or object-store prefix (`s3://bucket/path/`, `gs://`, `az://`); one part file per chunk is written into it.
    pub path: String,
    /// Default: from the path's extension, else Parquet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// Hive-style subdirectories `col=value/` per distinct value of these columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// What an existing output directory means: "overwrite" (default) or "error_if_exists".
    #[serde(default)]
    pub mode: WriteMode,
    /// Only rows matching this SQL predicate, e.g. `"is_anomaly"`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// Memory budget, e.g. "512MB" (default: 80% of RAM or the cgroup limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Cores to use (DataFusion target_partitions; default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    /// Wall-clock limit, e.g. "90s", "30m", "2h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A run not finished this long after it was asked for (queued, on a server) sends its
    /// `on = "deadline"` notifications once, and goes on, e.g. "45m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// How to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Rows per chunk, 1000–1000000 (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_rows: Option<u64>,
    /// Where the fit and the chunks run: "local" (default; DataFusion in this process) or
    /// "standalone" (a Ballista scheduler and executor in this process: the fit is one Ballista
    /// job, each chunk another). Same output either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// What a line of the chunked CSV/NDJSON source that cannot be parsed (wrong number of
    /// fields, text in a numeric column) does: "fail" (default) stops the run naming it;
    /// "quarantine" sets it aside in `<output>/_nomaly/quarantine/` and counts it in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_bad_rows: Option<OnBadRows>,
}

/// See [`RunSpec::on_bad_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRows {
    Fail,
    Quarantine,
}

/// Retries of a chunk (and of each fit partition) after a transient failure: I/O errors,
/// object-store errors, memory exhaustion. Bad data and schema errors never retry. Waits grow
/// exponentially from `initial_delay` up to `max_delay`, with full jitter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt, 0–100 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First wait, e.g. "200ms", "1s" (default 200ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Longest wait, e.g. "30s" (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    /// `nomaly serve`: a run that failed or timed out is queued again (continuing from its
    /// committed chunks) this many times, 0–10 (default 0); failure alerts wait for the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_retries: Option<u32>,
    /// `nomaly serve`: the wait before each such retry (default "1m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_retry_delay: Option<String>,
}

pub const DEFAULT_CHUNK_ROWS: u64 = 100_000;
pub const CHUNK_ROWS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;

/// A pipeline file read from disk: its text after substitution, and where it lives.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    pub path: PathBuf,
    pub spec: PipelineSpec,
    /// The text that was parsed (after `${...}` substitution and `--set` overrides).
    pub text: String,
    /// The text as written, before substitution: what a run directory records, so that no
    /// value from the environment is written anywhere (SECURITY.md).
    pub raw: String,
    /// The `--set` overrides applied (recorded with the run, to re-read `raw` on resume).
    pub overrides: Vec<String>,
    /// The run's interval and parameters, as `${run.…}` and `${param.…}` expanded them.
    pub context: RunContext,
    /// Whether the text reads a `${run.…}` value (its output then differs from run to run).
    pub reads_run: bool,
}

/// A text read for one run context.
struct Reading {
    spec: PipelineSpec,
    text: String,
    used: Substituted,
    context: RunContext,
}

/// The context `request` means under the spec's schedule; `None` without a (valid) schedule,
/// whose errors `compile` reports.
fn schedule_context(
    spec: &PipelineSpec,
    request: &RunRequest,
) -> Option<std::result::Result<RunContext, String>> {
    let cron = crate::compile::parse_cron(spec.schedule.as_deref()?).ok()?;
    let tz = match &spec.timezone {
        Some(t) => t.parse::<chrono_tz::Tz>().ok()?,
        None => chrono_tz::UTC,
    };
    Some(request.resolve(Some(&cron), tz))
}

impl PipelineFile {
    /// Reads, substitutes, applies `key=value` overrides and parses a pipeline file, for the run
    /// `request` asks for.
    pub fn load(path: &Path, overrides: &[String], request: &RunRequest) -> Result<PipelineFile> {
        let raw = std::fs::read_to_string(path).map_err(|source| PipelineError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(
            path,
            &raw,
            overrides,
            &|name| Ok(std::env::var(name).ok()),
            request,
        )
    }

    /// [`load`](Self::load) on text, with the environment given as a lookup (which may refuse
    /// a name: see [`crate::sandbox::Sandbox::env`]).
    ///
    /// The run's interval depends on the file's `schedule`, which is in the text being
    /// substituted: the text is read once with the interval a schedule-less file would have,
    /// and again when its schedule makes it another.
    pub fn parse(
        path: &Path,
        raw: &str,
        overrides: &[String],
        env: &EnvLookup<'_>,
        request: &RunRequest,
    ) -> Result<PipelineFile> {
        let bad_request = |message: String| PipelineError::Invalid {
            place: path.display().to_string(),
            message,
        };
        let probe = request.resolve(None, chrono_tz::UTC).map_err(bad_request)?;
        let mut read = Self::read_with(path, raw, overrides, env, &probe)?;
        if let Some(context) = schedule_context(&read.spec, request) {
            let context = context.map_err(bad_request)?;
            if context != probe {
                let again = Self::read_with(path, raw, overrides, env, &context)?;
                if (&again.spec.schedule, &again.spec.timezone)
                    != (&read.spec.schedule, &read.spec.timezone)
                {
                    return Err(bad_request(
                        "`schedule` and `timezone` may not read ${run.…} values".into(),
                    ));
                }
                read = again;
            }
        }
        let unused: Vec<&String> = request
            .params
            .keys()
            .filter(|k| !read.used.params_used.contains(*k))
            .collect();
        if !unused.is_empty() {
            let reads: Vec<&String> = read.used.params_used.iter().collect();
            return Err(bad_request(format!(
                "parameter {unused:?} is not read by this pipeline (it reads {reads:?}); \
                 reference it as ${{param.NAME}}, or do not pass it"
            )));
        }
        Ok(PipelineFile {
            path: path.to_path_buf(),
            spec: read.spec,
            text: read.text,
            raw: raw.to_string(),
            overrides: overrides.to_vec(),
            context: read.context,
            reads_run: read.used.reads_run,
        })
    }

    /// One reading of the text for one run context.
    fn read_with(
        path: &Path,
        raw: &str,
        overrides: &[String],
        env: &EnvLookup<'_>,
        context: &RunContext,
    ) -> Result<Reading> {
        let used = substitute(path, raw, env, context)?;
        let text = apply_overrides(path, &used.text, overrides)?;
        let spec: PipelineSpec = toml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(&text, s.start))
                .unwrap_or((0, 0));
            PipelineError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        Ok(Reading {
            spec,
            text,
            used,
            context: context.clone(),
        })
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// 1-based (line, column) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|nl| before[nl + 1..].chars().count() + 1)
        .unwrap_or_else(|| before.chars().count() + 1);
    (line, column)
}

/// The JSON Schema of the format, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PipelineSpec)).expect("a schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::tests::env;

    #[test]
    fn minimal_file_parses_and_unknown_keys_are_located() {
        let text = "input = \"a.csv\"\noutput = \"out/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"x\"]\n";
        let f = PipelineFile::parse(Path::new("p.toml"), text, &[], &env, &RunRequest::default())
            .unwrap();
        assert_eq!(f.spec.detect.unwrap().algorithm, "zscore");
        let bad = text.replace("columns", "colums");
        let e = PipelineFile::parse(Path::new("p.toml"), &bad, &[], &env, &RunRequest::default())
            .unwrap_err();
        assert!(e.to_string().contains("p.toml:5:1"), "{e}");
    }

    /// The interval follows the file's own schedule, read from the text being substituted.
    #[test]
    fn run_values_follow_the_files_schedule_and_params_must_be_read() {
        use crate::run_context::RunDate;
        let text = "input = \"a.csv\"\noutput = \"out/date=${run.date}/${param.region}\"\n\
                    schedule = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[detect]\n\
                    algorithm = \"zscore\"\ncolumns = [\"x\"]\n";
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T00:30:00Z").unwrap();
        let request = |params: &[(&str, &str)]| RunRequest {
            date: RunDate::Latest,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now_ms: now.timestamp_millis(),
        };
        let p = Path::new("p.toml");
        // 01:30 in Berlin on the 6th: the latest ended interval began on the 4th at 02:00.
        let f = PipelineFile::parse(p, text, &[], &env, &request(&[("region", "eu")])).unwrap();
        assert_eq!(f.spec.output.as_deref(), Some("out/date=2026-12-04/eu"));
        assert!(f.reads_run);
        assert!(f.raw.contains("${run.date}"), "the text as written is kept");
        let e = PipelineFile::parse(p, text, &[], &env, &request(&[])).unwrap_err();
        assert!(e.to_string().contains("param.region is not set"), "{e}");
        let e = PipelineFile::parse(
            p,
            text,
            &[],
            &env,
            &request(&[("region", "eu"), ("rgn", "x")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[\"rgn\"] is not read"), "{e}");
    }

    #[test]
    fn overrides_set_nested_keys() {
        let text = "input = \"a.csv\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"x\"]\n";
        let f = PipelineFile::parse(
            Path::new("p.toml"),
            text,
            &["detect.algorithm=ecod".into(), "run.chunk_rows=5000".into()],
            &env,
            &RunRequest::default(),
        )
        .unwrap();
        assert_eq!(f.spec.detect.unwrap().algorithm, "ecod");
        assert_eq!(f.spec.run.chunk_rows, Some(5000));
    }

    #[test]
    fn options_table_becomes_the_sql_option_string() {
        let text = "[detect]\nalgorithm = \"iforest\"\ncolumns = [\"x\"]\noptions = { n_trees = 50, contamination = 0.05 }\n";
        let f = PipelineFile::parse(Path::new("p.toml"), text, &[], &env, &RunRequest::default())
            .unwrap();
        assert_eq!(
            f.spec.detect.unwrap().options.unwrap().to_option_string(),
            "contamination=0.05, n_trees=50"
        );
    }
}
