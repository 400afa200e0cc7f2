//! Static checks and resolution of a pipeline file: everything that can be known without reading
//! the data (names, paths, options, ranges). `validate` and `run` go on to check against the data.

mod model;
mod notify;
mod query_only;
mod settings;
mod sources;
mod trigger;

pub use model::ModelSource;
pub use query_only::{check_query, query_options};
pub use settings::{DurationError, RetryPolicy, parse_duration};
pub use trigger::{CronExpr, CronSchedule, FilesTrigger, Trigger, parse_cron};

use crate::chunk_plan::SourceReader;
use crate::error::{PipelineError, Result};
use crate::sandbox::Sandbox;
use crate::spec::{FileFormat, NotifySpec, PipelineFile, SinkSpec, ValidateSpec, WriteMode};
use nomaly_detectors::{Algorithm, DetectorParams};
use nomaly_engine::EngineKind;
use sources::{format_of, resolve_path};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A SQL step, resolved.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub sql: String,
    pub place: String,
}

/// The detect step, resolved.
#[derive(Debug, Clone)]
pub struct Detect {
    pub algorithm: Algorithm,
    pub columns: Vec<String>,
    pub options: String,
    pub input: String,
    pub partition_by: Vec<String>,
    /// The columns declared text (categorical) features.
    pub categorical: Vec<String>,
    pub explain: bool,
    pub place: String,
    /// Where the model comes from: a fit of the input (default), of a `train` query, or the
    /// registry.
    pub model: ModelSource,
    /// Drift above this population-stability index is a warning.
    pub drift_above: f64,
}

/// A sink before its `where` is compiled against the data.
#[derive(Debug, Clone)]
pub struct Sink {
    pub label: String,
    /// The output directory, or a remote output's local mirror.
    pub path: PathBuf,
    /// The object-store prefix the published output is uploaded to.
    pub remote: Option<crate::sink_writer::RemoteOutput>,
    pub format: FileFormat,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    pub filter: Option<String>,
}

impl Sink {
    /// Where readers find the output: the object-store prefix, or the local directory.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => format!("{}/", r.url),
            None => self.path.display().to_string(),
        }
    }
}

/// A pipeline ready to validate against data or to run.
#[derive(Debug, Clone)]
pub struct CompiledPipeline {
    pub file: PipelineFile,
    pub name: String,
    /// The first source is the chunked one; the others are read whole (lookups, joins).
    pub sources: Vec<SourceReader>,
    pub steps: Vec<Step>,
    pub detect: Option<Detect>,
    pub sinks: Vec<Sink>,
    pub validations: Vec<(String, ValidateSpec)>,
    pub notifications: Vec<NotifySpec>,
    pub chunk_rows: u64,
    pub memory_limit: Option<usize>,
    pub cpus: Option<usize>,
    pub timeout: Option<Duration>,
    pub timeout_text: Option<String>,
    /// `[resources] deadline`: when `on = "deadline"` notifications fire ([`crate::run`]).
    pub deadline: Option<Duration>,
    pub retry: RetryPolicy,
    /// `on_bad_rows = "quarantine"`: the chunked source is read line by line, bad lines set aside.
    pub quarantine: bool,
    /// Where chunks and the fit run: DataFusion here, or a Ballista cluster in this process.
    pub engine: EngineKind,
    /// When `nomaly serve` runs it (schedule, `after`, `on_failure`).
    pub trigger: Trigger,
    /// What it may touch: the operator's own, or a submitter's confined one (the run reads
    /// local files through a store confined to its roots).
    pub sandbox: Sandbox,
}

impl CompiledPipeline {
    /// `chunk_rows` was set (file or `--set`), not the default: row groups of Parquet files
    /// without a page index are sliced only then (see [`crate::chunk_plan::plan_chunks`]).
    pub fn chunk_rows_set(&self) -> bool {
        self.file.spec.run.chunk_rows.is_some()
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// "file:line:col [section] key" for the `index`-th `[[section]]` (or `[section]`) and `key`.
pub fn place(file: &PipelineFile, header: &str, index: usize, key: Option<&str>) -> String {
    let text = &file.text;
    let path = file.path.display();
    let section_start = if header.is_empty() {
        Some(0)
    } else {
        text.match_indices(header)
            .filter(|(at, _)| *at == 0 || text.as_bytes()[at - 1] == b'\n')
            .nth(index)
            .map(|(at, _)| at)
    };
    let label = if header.is_empty() {
        String::new()
    } else if header.starts_with("[[") {
        format!(" {header} #{}", index + 1)
    } else {
        format!(" {header}")
    };
    let key_label = key.map(|k| format!(" {k}")).unwrap_or_default();
    let Some(start) = section_start else {
        return format!("{path}{label}{key_label}");
    };
    let mut at = start;
    if let Some(k) = key {
        let section_end = text[start + header.len().max(1)..]
            .find("\n[")
            .map(|e| start + header.len().max(1) + e)
            .unwrap_or(text.len());
        let body = &text[start..section_end];
        if let Some(off) = body
            .match_indices(k)
            .find(|(o, _)| {
                let line_start = body[..*o].rfind('\n').map(|n| n + 1).unwrap_or(0);
                body[line_start..*o].trim().is_empty()
                    && body[o + k.len()..].trim_start().starts_with('=')
            })
            .map(|(o, _)| o)
        {
            at = start + off;
        }
    }
    let (line, column) = crate::spec::line_column(text, at);
    format!("{path}:{line}:{column}{label}{key_label}")
}

/// Resolves and checks a pipeline file without reading any data: the operator's own pipeline,
/// which may name any path (see [`compile_in`]).
pub fn compile(file: PipelineFile) -> Result<CompiledPipeline> {
    compile_in(file, &Sandbox::operator())
}

/// [`compile`] within a sandbox: every path, location and URL the file names is checked by it
/// before anything is read, and the canonical form that passed is what the run uses.
pub fn compile_in(file: PipelineFile, sandbox: &Sandbox) -> Result<CompiledPipeline> {
    let (sources, mut names) = sources::compile_sources(&file, sandbox)?;
    let steps = compile_steps(&file, &mut names, sandbox)?;
    let detect = compile_detect(&file, &names, &steps, &sources)?;
    let sinks = compile_sinks(&file, sandbox)?;
    let validations = compile_checks(&file, detect.is_some())?;
    let notifications = notify::compile_notifications(&file, sandbox)?;
    let settings = settings::compile_settings(&file, &sources)?;
    let trigger = trigger::compile_trigger(&file)?;
    let spec = &file.spec;
    let name = spec.name.clone().unwrap_or_else(|| {
        file.path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "pipeline".into())
    });
    Ok(CompiledPipeline {
        name,
        sources,
        steps,
        detect,
        sinks,
        validations,
        notifications,
        chunk_rows: settings.chunk_rows,
        memory_limit: settings.memory_limit,
        cpus: spec.resources.cpus,
        timeout: settings.timeout,
        timeout_text: spec.resources.timeout.clone(),
        deadline: settings.deadline,
        retry: settings.retry,
        quarantine: settings.quarantine,
        engine: settings.engine,
        trigger,
        file,
        sandbox: sandbox.clone(),
    })
}

/// The `[[step]]` views; their names join `names`.
fn compile_steps(
    file: &PipelineFile,
    names: &mut BTreeSet<String>,
    sandbox: &Sandbox,
) -> Result<Vec<Step>> {
    let spec = &file.spec;
    let base = file.base_dir();
    // Steps.
    let mut steps = Vec::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let at = place(file, "[[step]]", i, Some("name"));
        if !is_identifier(&s.name) {
            return Err(PipelineError::invalid(
                at,
                format!("'{}' is not a view name; use letters, digits and _", s.name),
            ));
        }
        if !names.insert(s.name.clone()) {
            return Err(PipelineError::invalid(
                at,
                format!(
                    "'{}' is already a source or step name; names must be unique",
                    s.name
                ),
            ));
        }
        let sql = match (&s.sql, &s.sql_file) {
            (Some(sql), None) => sql.clone(),
            (None, Some(f)) => {
                let at = place(file, "[[step]]", i, Some("sql_file"));
                let p = sandbox
                    .path(&base.join(f), &format!("step '{}' sql_file", s.name))
                    .map_err(|r| PipelineError::refused(&at, r))?;
                read_bounded(&p, MAX_SQL_FILE_BYTES).map_err(|e| {
                    PipelineError::invalid(at, format!("cannot read {}: {e}", p.display()))
                })?
            }
            _ => {
                return Err(PipelineError::invalid(
                    at,
                    "give exactly one of sql = \"...\" or sql_file = \"sql/step.sql\"",
                ));
            }
        };
        let sql_place = match &s.sql_file {
            Some(_) => place(file, "[[step]]", i, Some("sql_file")),
            None => place(file, "[[step]]", i, Some("sql")),
        };
        check_query(&sql, &sql_place, &format!("step '{}'", s.name))?;
        steps.push(Step {
            name: s.name.clone(),
            sql: sql.trim().trim_end_matches(';').to_string(),
            place: place(file, "[[step]]", i, Some("sql")),
        });
    }
    Ok(steps)
}

/// `[detect]`, its input defaulting to the last step (else the first source).
fn compile_detect(
    file: &PipelineFile,
    names: &BTreeSet<String>,
    steps: &[Step],
    sources: &[SourceReader],
) -> Result<Option<Detect>> {
    let spec = &file.spec;
    // Detect.
    let detect = match &spec.detect {
        None => None,
        Some(d) => {
            let algorithm = Algorithm::parse(&d.algorithm).map_err(|e| {
                PipelineError::invalid(place(file, "[detect]", 0, Some("algorithm")), e.to_string())
            })?;
            let options = d
                .options
                .as_ref()
                .map(|o| o.to_option_string())
                .unwrap_or_default();
            DetectorParams::parse(algorithm, &options).map_err(|e| {
                PipelineError::invalid(place(file, "[detect]", 0, Some("options")), e.to_string())
            })?;
            if d.columns.is_empty() {
                return Err(PipelineError::invalid(
                    place(file, "[detect]", 0, Some("columns")),
                    "columns is empty; list the numeric feature columns, e.g. columns = [\"amount\", \"latency_ms\"]",
                ));
            }
            if let Some(c) = d.categorical.iter().find(|c| !d.columns.contains(c)) {
                return Err(PipelineError::invalid(
                    place(file, "[detect]", 0, Some("categorical")),
                    format!(
                        "'{c}' is not one of columns; categorical lists which of the columns are text"
                    ),
                ));
            }
            if !d.categorical.is_empty() && !algorithm.takes_categorical() {
                return Err(PipelineError::invalid(
                    place(file, "[detect]", 0, Some("categorical")),
                    format!(
                        "{} takes numeric columns only; hbos, ecod, copod, iforest and eif take text (categorical) ones",
                        algorithm.name()
                    ),
                ));
            }
            let input = match &d.input {
                Some(i) => {
                    if !names.contains(i) {
                        return Err(PipelineError::invalid(
                            place(file, "[detect]", 0, Some("input")),
                            format!(
                                "'{i}' is not a source or step; defined are: {}",
                                names.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    i.clone()
                }
                None => steps
                    .last()
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| sources[0].name.clone()),
            };
            Some(Detect {
                algorithm,
                columns: d.columns.clone(),
                options,
                input,
                partition_by: d.partition_by.clone(),
                categorical: d.categorical.clone(),
                explain: d.explain,
                place: place(file, "[detect]", 0, Some("columns")),
                model: model::compile_model(file, d)?,
                drift_above: model::drift_threshold(file, d)?,
            })
        }
    };
    Ok(detect)
}

/// Where remote outputs are staged, beside the pipeline file: `<dir>/<scheme>/<bucket>/<path>`.
pub const MIRRORS_DIR: &str = ".nomaly-outputs";

/// The sinks: `output` (minimal form) first, then `[[sink]]`.
fn compile_sinks(file: &PipelineFile, sandbox: &Sandbox) -> Result<Vec<Sink>> {
    let spec = &file.spec;
    let base = file.base_dir();
    // Sinks: `output` (minimal form) first, then [[sink]].
    let mut sink_specs: Vec<(String, SinkSpec)> = Vec::new();
    if let Some(out) = &spec.output {
        sink_specs.push((
            place(file, "", 0, Some("output")),
            SinkSpec {
                path: out.clone(),
                format: None,
                partition_by: vec![],
                mode: WriteMode::Overwrite,
                filter: None,
            },
        ));
    }
    for (i, s) in spec.sinks.iter().enumerate() {
        sink_specs.push((place(file, "[[sink]]", i, Some("path")), s.clone()));
    }
    if sink_specs.is_empty() {
        return Err(PipelineError::invalid(
            place(file, "", 0, None),
            "no output: add `output = \"out/scored/\"` or a [[sink]] section with a path",
        ));
    }
    let mut sinks = Vec::new();
    let mut sink_paths = BTreeSet::new();
    for (label, s) in sink_specs {
        let (path, remote) = if s.path.contains("://") {
            let url = sandbox
                .url(&s.path, "sink")
                .map_err(|r| PipelineError::refused(&label, r))?;
            let remote = crate::sink_writer::RemoteOutput::parse(&url)
                .map_err(|reason| PipelineError::invalid(&label, reason))?;
            // Staged on local disk beside the pipeline file, then uploaded.
            let mirror = remote.mirror_under(&PathBuf::from(resolve_path(&base, MIRRORS_DIR)));
            (mirror, Some(remote))
        } else {
            let written = PathBuf::from(resolve_path(&base, s.path.trim_end_matches('/')));
            (written, None)
        };
        let path = sandbox
            .output(&path, "sink")
            .map_err(|r| PipelineError::refused(&label, r))?;
        if !sink_paths.insert(path.clone()) {
            return Err(PipelineError::invalid(
                label,
                format!(
                    "{} is the path of another sink; each sink needs its own directory",
                    path.display()
                ),
            ));
        }
        let format = s
            .format
            .or_else(|| format_of(&s.path))
            .unwrap_or(FileFormat::Parquet);
        sinks.push(Sink {
            label,
            path,
            remote,
            format,
            partition_by: s.partition_by.clone(),
            mode: s.mode,
            filter: s.filter.clone(),
        });
    }
    Ok(sinks)
}

/// The `[[validate]]` checks.
fn compile_checks(file: &PipelineFile, has_detect: bool) -> Result<Vec<(String, ValidateSpec)>> {
    let spec = &file.spec;
    // Checks.
    let mut validations = Vec::new();
    for (i, v) in spec.validations.iter().enumerate() {
        let at = place(file, "[[validate]]", i, Some("check"));
        match v {
            ValidateSpec::AnomalyRate { min, max } => {
                if !has_detect {
                    return Err(PipelineError::invalid(
                        at,
                        "anomaly_rate needs a [detect] section",
                    ));
                }
                let lo = min.unwrap_or(0.0);
                let hi = max.unwrap_or(1.0);
                if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                    return Err(PipelineError::invalid(
                        at,
                        format!(
                            "min = {lo} and max = {hi} must satisfy 0 <= min <= max <= 1 (rates, not percentages)"
                        ),
                    ));
                }
            }
            ValidateSpec::RowCount if !has_detect => {
                return Err(PipelineError::invalid(
                    at,
                    "row_count compares the rows into [detect] with the rows out; add a [detect] section",
                ));
            }
            ValidateSpec::Sql { name, sql } => {
                let sql_place = place(file, "[[validate]]", i, Some("sql"));
                check_query(sql, &sql_place, &format!("check '{name}'"))?;
            }
            _ => {}
        }
        validations.push((at, v.clone()));
    }
    Ok(validations)
}

/// The longest SQL file a step may name (a query, not a data file).
const MAX_SQL_FILE_BYTES: u64 = 1 << 20;

/// Reads a text file of at most `limit` bytes; a longer one (or a device that never ends) is
/// an error, not a hang or an allocation as large as the file.
fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "longer than {limit} bytes; a step's SQL file holds one query"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        for huge in [
            "18446744073709551615h",
            "99999999999999999d",
            "9999999999999",
            "367d",
        ] {
            let e = parse_duration(huge).unwrap_err().to_string();
            assert!(e.contains("366 days"), "{huge}: {e}");
        }
        assert_eq!(
            parse_duration("366d").unwrap(),
            Duration::from_secs(366 * 86_400)
        );
    }
}
