//! Static checks and resolution of a pipeline file: everything that can be known without reading
//! the data (names, paths, options, ranges). `validate` and `run` go on to check against the data.

use crate::chunks::SourceReader;
use crate::error::{PipelineError, Result};
use crate::spec::{
    CHUNK_ROWS_RANGE, DEFAULT_CHUNK_ROWS, FileFormat, NotifySpec, PipelineFile, SinkSpec,
    SourceSpec, ValidateSpec, WriteMode,
};
use nomaly_detectors::{Algorithm, DetectorParams};
use nomaly_engine::EngineKind;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
    pub explain: bool,
    pub place: String,
}

/// A sink before its `where` is compiled against the data.
#[derive(Debug, Clone)]
pub struct Sink {
    pub label: String,
    pub path: PathBuf,
    pub format: FileFormat,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    pub filter: Option<String>,
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
    pub retry: RetryPolicy,
    /// `on_bad_rows = "quarantine"`: the chunked source is read line by line, bad lines set aside.
    pub quarantine: bool,
    /// Where chunks and the fit run: DataFusion here, or a Ballista cluster in this process.
    pub engine: EngineKind,
}

/// How transient failures are retried (`[retry]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
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

/// Parses "90s", "30m", "2h", "1h30m" or plain seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Some(ms) = t.strip_suffix("ms")
        && let Ok(ms) = ms.trim().parse::<u64>()
    {
        return Ok(Duration::from_millis(ms));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a duration; write e.g. 90s, 30m, 2h or 1h30m"))?;
        num.clear();
        total += n
            * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => {
                    return Err(format!(
                        "'{text}': unknown unit '{c}'; write e.g. 90s, 30m, 2h or 1h30m (units s, m, h, d)"
                    ));
                }
            };
    }
    if !num.is_empty() || total == 0 {
        return Err(format!(
            "'{text}' is not a duration; write e.g. 90s, 30m, 2h or 1h30m"
        ));
    }
    Ok(Duration::from_secs(total))
}

fn resolve_path(base: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        return p.to_string();
    }
    let joined = base.join(p);
    let abs = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir()
            .map(|d| d.join(&joined))
            .unwrap_or(joined)
    };
    let mut s = normalize(&abs).to_string_lossy().to_string();
    if p.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes `.` and `..` components without touching the filesystem (globs may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn format_of(path: &str) -> Option<FileFormat> {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    last.rsplit_once('.')
        .and_then(|(_, ext)| FileFormat::from_extension(ext))
}

/// Resolves and checks a pipeline file without reading any data.
pub fn compile(file: PipelineFile) -> Result<CompiledPipeline> {
    let spec = &file.spec;
    let base = file.base_dir();
    let whole = place(&file, "", 0, None);

    // Sources: `input` (minimal form) or [[source]].
    let mut sources = Vec::new();
    match (&spec.input, spec.sources.is_empty()) {
        (Some(_), false) => {
            return Err(PipelineError::invalid(
                place(&file, "", 0, Some("input")),
                "give either `input = ...` (one input, table `input`) or [[source]] sections, not both",
            ));
        }
        (None, true) => {
            return Err(PipelineError::invalid(
                whole,
                "no input: add `input = \"data/*.parquet\"` or a [[source]] section with name and path",
            ));
        }
        _ => {}
    }
    // (source, where its path is written)
    let mut raw_sources: Vec<(SourceSpec, String)> = Vec::new();
    if let Some(input) = &spec.input {
        raw_sources.push((
            SourceSpec {
                name: "input".into(),
                path: input.clone(),
                format: None,
                has_header: None,
                delimiter: None,
            },
            place(&file, "", 0, Some("input")),
        ));
    }
    for (i, s) in spec.sources.iter().enumerate() {
        raw_sources.push((s.clone(), place(&file, "[[source]]", i, Some("path"))));
    }
    let mut names = BTreeSet::new();
    for (i, (source, at)) in raw_sources.into_iter().enumerate() {
        let SourceSpec {
            name,
            path,
            format,
            has_header,
            delimiter,
        } = source;
        if !is_identifier(&name) {
            return Err(PipelineError::invalid(
                place(&file, "[[source]]", i, Some("name")),
                format!(
                    "'{name}' is not a table name; use letters, digits and _ (not starting with a digit)"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(PipelineError::invalid(
                place(&file, "[[source]]", i, Some("name")),
                format!("a source named '{name}' is defined twice; names must be unique"),
            ));
        }
        if path.trim().is_empty() {
            return Err(PipelineError::invalid(at, "the path is empty"));
        }
        let last_ext = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .and_then(|l| l.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()));
        match last_ext.as_deref() {
            Some("pkl") | Some("pickle") => {
                return Err(PipelineError::invalid(
                    at,
                    format!(
                        "{path}: Pickle input is refused — loading a pickle runs arbitrary code. Convert it once in Python, e.g. pandas.read_pickle(p).to_parquet('data.parquet'), and point the source at the Parquet file"
                    ),
                ));
            }
            Some("h5") | Some("hdf5")
                if cfg!(feature = "hdf5")
                    && (path.contains("://") || path.contains(['*', '?', '['])) =>
            {
                return Err(PipelineError::invalid(
                    at,
                    format!("{path}: HDF5 is read from one local file; name the file"),
                ));
            }
            _ => {}
        }
        let location = resolve_path(&base, &path);
        if !location.contains("://") {
            // Fail early on a missing directory (a glob's fixed prefix included).
            let fixed: PathBuf = Path::new(&location)
                .ancestors()
                .find(|a| !a.to_string_lossy().contains(['*', '?', '[']))
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if !fixed.exists() {
                return Err(PipelineError::invalid(
                    at,
                    format!(
                        "{path}: {} does not exist (relative paths are relative to the pipeline file's directory, {})",
                        fixed.display(),
                        base.display()
                    ),
                ));
            }
        } else if !location.starts_with("file://")
            && nomaly_engine::RemoteStore::of(&location).is_none()
        {
            let scheme = location.split("://").next().unwrap_or_default();
            return Err(PipelineError::invalid(
                at,
                format!(
                    "{path}: '{scheme}://' is not a store Nomaly reads; use a local path, file://, s3:// (or s3a://), gs://, az:// (or abfss://), http:// or https://"
                ),
            ));
        }
        let format = match format.or_else(|| format_of(&path)) {
            Some(f) => f,
            None => {
                let dir_format = Path::new(&location)
                    .is_dir()
                    .then(|| dir_format(Path::new(&location)))
                    .flatten();
                dir_format.ok_or_else(|| {
                    PipelineError::invalid(
                        &at,
                        format!("{path}: cannot tell the format from the name; add format = \"parquet\" (or csv, ndjson, arrow, avro)"),
                    )
                })?
            }
        };
        if format == FileFormat::Hdf5 && !cfg!(feature = "hdf5") {
            return Err(PipelineError::invalid(
                &at,
                format!("{path}: {}", nomaly_engine::HDF5_NOT_BUILT),
            ));
        }
        let delimiter = match delimiter.as_deref() {
            None => {
                if path.ends_with(".tsv") {
                    b'\t'
                } else {
                    b','
                }
            }
            Some("\\t") | Some("\t") => b'\t',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) => {
                return Err(PipelineError::invalid(
                    place(&file, "[[source]]", i, Some("delimiter")),
                    format!("delimiter '{d}' must be one character, e.g. \",\", \";\" or \"\\t\""),
                ));
            }
        };
        sources.push(SourceReader {
            name,
            path,
            location,
            format,
            has_header: has_header.unwrap_or(true),
            delimiter,
        });
    }

    // Steps.
    let mut steps = Vec::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let at = place(&file, "[[step]]", i, Some("name"));
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
                let p = base.join(f);
                std::fs::read_to_string(&p).map_err(|e| {
                    PipelineError::invalid(
                        place(&file, "[[step]]", i, Some("sql_file")),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?
            }
            _ => {
                return Err(PipelineError::invalid(
                    at,
                    "give exactly one of sql = \"...\" or sql_file = \"sql/step.sql\"",
                ));
            }
        };
        steps.push(Step {
            name: s.name.clone(),
            sql: sql.trim().trim_end_matches(';').to_string(),
            place: place(&file, "[[step]]", i, Some("sql")),
        });
    }

    // Detect.
    let detect = match &spec.detect {
        None => None,
        Some(d) => {
            let algorithm = Algorithm::parse(&d.algorithm).map_err(|e| {
                PipelineError::invalid(
                    place(&file, "[detect]", 0, Some("algorithm")),
                    e.to_string(),
                )
            })?;
            let options = d
                .options
                .as_ref()
                .map(|o| o.to_option_string())
                .unwrap_or_default();
            DetectorParams::parse(algorithm, &options).map_err(|e| {
                PipelineError::invalid(place(&file, "[detect]", 0, Some("options")), e.to_string())
            })?;
            if d.columns.is_empty() {
                return Err(PipelineError::invalid(
                    place(&file, "[detect]", 0, Some("columns")),
                    "columns is empty; list the numeric feature columns, e.g. columns = [\"amount\", \"latency_ms\"]",
                ));
            }
            let input = match &d.input {
                Some(i) => {
                    if !names.contains(i) {
                        return Err(PipelineError::invalid(
                            place(&file, "[detect]", 0, Some("input")),
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
                explain: d.explain,
                place: place(&file, "[detect]", 0, Some("columns")),
            })
        }
    };

    // Sinks: `output` (minimal form) first, then [[sink]].
    let mut sink_specs: Vec<(String, SinkSpec)> = Vec::new();
    if let Some(out) = &spec.output {
        sink_specs.push((
            place(&file, "", 0, Some("output")),
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
        sink_specs.push((place(&file, "[[sink]]", i, Some("path")), s.clone()));
    }
    if sink_specs.is_empty() {
        return Err(PipelineError::invalid(
            whole,
            "no output: add `output = \"out/scored/\"` or a [[sink]] section with a path",
        ));
    }
    let mut sinks = Vec::new();
    let mut sink_paths = BTreeSet::new();
    for (label, s) in sink_specs {
        if s.path.contains("://") {
            return Err(PipelineError::invalid(
                label,
                "only local output directories are supported in this version",
            ));
        }
        let path = PathBuf::from(resolve_path(&base, s.path.trim_end_matches('/')));
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
            format,
            partition_by: s.partition_by.clone(),
            mode: s.mode,
            filter: s.filter.clone(),
        });
    }

    // Checks.
    let mut validations = Vec::new();
    for (i, v) in spec.validations.iter().enumerate() {
        let at = place(&file, "[[validate]]", i, Some("check"));
        match v {
            ValidateSpec::AnomalyRate { min, max } => {
                if detect.is_none() {
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
            ValidateSpec::RowCount if detect.is_none() => {
                return Err(PipelineError::invalid(
                    at,
                    "row_count compares the rows into [detect] with the rows out; add a [detect] section",
                ));
            }
            _ => {}
        }
        validations.push((at, v.clone()));
    }

    for (i, n) in spec.notifications.iter().enumerate() {
        if let NotifySpec::Webhook { url, .. } = n
            && !url.starts_with("http://")
        {
            return Err(PipelineError::invalid(
                place(&file, "[[notify]]", i, Some("url")),
                format!(
                    "'{url}': webhooks take http:// URLs in this version (https is planned); for https use type = \"command\" with curl"
                ),
            ));
        }
    }

    let chunk_rows = spec.run.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
    if !CHUNK_ROWS_RANGE.contains(&chunk_rows) {
        return Err(PipelineError::invalid(
            place(&file, "[run]", 0, Some("chunk_rows")),
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
                place(&file, "[run]", 0, Some("engine")),
                format!(
                    "engine = \"{e}\" is not an engine; use \"local\" (DataFusion in this process) or \"standalone\" (a Ballista scheduler and executor in this process)"
                ),
            )
        })?,
    };
    let memory_limit = match &spec.resources.memory_limit {
        Some(m) => Some(nomaly_engine::parse_byte_size(m).map_err(|e| {
            PipelineError::invalid(
                place(&file, "[resources]", 0, Some("memory_limit")),
                e.to_string(),
            )
        })?),
        None => None,
    };
    if spec.resources.cpus == Some(0) {
        return Err(PipelineError::invalid(
            place(&file, "[resources]", 0, Some("cpus")),
            "cpus must be at least 1",
        ));
    }
    let timeout = match &spec.resources.timeout {
        Some(t) => Some(parse_duration(t).map_err(|e| {
            PipelineError::invalid(place(&file, "[resources]", 0, Some("timeout")), e)
        })?),
        None => None,
    };
    let retry = {
        let defaults = RetryPolicy::default();
        let r = &spec.retry;
        let delay = |key: &str, text: &Option<String>, default: Duration| match text {
            Some(t) => parse_duration(t)
                .map_err(|e| PipelineError::invalid(place(&file, "[retry]", 0, Some(key)), e)),
            None => Ok(default),
        };
        let policy = RetryPolicy {
            max_retries: r.max_retries.unwrap_or(defaults.max_retries),
            initial_delay: delay("initial_delay", &r.initial_delay, defaults.initial_delay)?,
            max_delay: delay("max_delay", &r.max_delay, defaults.max_delay)?,
        };
        if policy.max_retries > 100 {
            return Err(PipelineError::invalid(
                place(&file, "[retry]", 0, Some("max_retries")),
                format!(
                    "max_retries = {} is out of range; use 0 (never retry) to 100",
                    policy.max_retries
                ),
            ));
        }
        if policy.max_delay < policy.initial_delay {
            return Err(PipelineError::invalid(
                place(&file, "[retry]", 0, Some("max_delay")),
                "max_delay is shorter than initial_delay; raise max_delay or lower initial_delay",
            ));
        }
        policy
    };
    let quarantine = spec.run.on_bad_rows == Some(crate::spec::OnBadRows::Quarantine);
    if quarantine && !matches!(sources[0].format, FileFormat::Csv | FileFormat::Ndjson) {
        return Err(PipelineError::invalid(
            place(&file, "[run]", 0, Some("on_bad_rows")),
            format!(
                "on_bad_rows = \"quarantine\" reads the first source line by line, so it must be CSV or NDJSON; '{}' is {} (typed columns, no bad lines to set aside) — remove the setting",
                sources[0].name,
                sources[0].format.extension()
            ),
        ));
    }
    if quarantine && engine == EngineKind::Standalone {
        return Err(PipelineError::invalid(
            place(&file, "[run]", 0, Some("on_bad_rows")),
            "on_bad_rows = \"quarantine\" reads lines with an operator of Nomaly's own, which runs in this process only; use engine = \"local\" with it, or remove the setting so bad rows fail the run",
        ));
    }
    if quarantine && nomaly_engine::RemoteStore::of(&sources[0].location).is_some() {
        return Err(PipelineError::invalid(
            place(&file, "[run]", 0, Some("on_bad_rows")),
            format!(
                "on_bad_rows = \"quarantine\" reads the first source line by line from local files; '{}' is in an object store ({}) — copy it locally, or remove the setting so bad rows fail the run",
                sources[0].name, sources[0].path
            ),
        ));
    }
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
        notifications: spec.notifications.clone(),
        chunk_rows,
        memory_limit,
        cpus: spec.resources.cpus,
        timeout,
        timeout_text: spec.resources.timeout.clone(),
        retry,
        quarantine,
        engine,
        file,
    })
}

/// The format of the first data file in a directory.
fn dir_format(dir: &Path) -> Option<FileFormat> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .map(|n| n.to_string_lossy().starts_with(['.', '_']))
                .unwrap_or(true)
        })
        .collect();
    entries.sort();
    entries.iter().find_map(|p| {
        p.extension()
            .and_then(|e| FileFormat::from_extension(&e.to_string_lossy()))
    })
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
    }
}
