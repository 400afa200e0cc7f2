//! Sources: `input = ...` (one input, table `input`) or `[[source]]` sections, each resolved to
//! a location (relative paths are relative to the pipeline file), a format and CSV settings.

use super::{is_identifier, place};
use crate::chunk_plan::SourceReader;
use crate::error::{PipelineError, Result};
use crate::sandbox::Sandbox;
use crate::spec::{FileFormat, PipelineFile, SourceSpec};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The sources of a pipeline file, and the table names they take.
pub(super) fn compile_sources(
    file: &PipelineFile,
    sandbox: &Sandbox,
) -> Result<(Vec<SourceReader>, BTreeSet<String>)> {
    let spec = &file.spec;
    match (&spec.input, spec.sources.is_empty()) {
        (Some(_), false) => {
            return Err(PipelineError::invalid(
                place(file, "", 0, Some("input")),
                "give either `input = ...` (one input, table `input`) or [[source]] sections, not both",
            ));
        }
        (None, true) => {
            return Err(PipelineError::invalid(
                place(file, "", 0, None),
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
                incremental: None,
            },
            place(file, "", 0, Some("input")),
        ));
    }
    for (i, s) in spec.sources.iter().enumerate() {
        raw_sources.push((s.clone(), place(file, "[[source]]", i, Some("path"))));
    }
    let mut names = BTreeSet::new();
    let mut sources = Vec::new();
    for (i, (source, at)) in raw_sources.into_iter().enumerate() {
        sources.push(compile_source(file, i, source, at, &mut names, sandbox)?);
    }
    Ok((sources, names))
}

/// The `i`-th source, its path written at `at`; its name joins `names`.
fn compile_source(
    file: &PipelineFile,
    i: usize,
    source: SourceSpec,
    at: String,
    names: &mut BTreeSet<String>,
    sandbox: &Sandbox,
) -> Result<SourceReader> {
    let SourceSpec {
        name,
        path,
        format,
        has_header,
        delimiter,
        incremental,
    } = source;
    if !is_identifier(&name) {
        return Err(PipelineError::invalid(
            place(file, "[[source]]", i, Some("name")),
            format!(
                "'{name}' is not a table name; use letters, digits and _ (not starting with a digit)"
            ),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(PipelineError::invalid(
            place(file, "[[source]]", i, Some("name")),
            format!("a source named '{name}' is defined twice; names must be unique"),
        ));
    }
    if path.trim().is_empty() {
        return Err(PipelineError::invalid(at, "the path is empty"));
    }
    refuse_by_extension(&path, &at)?;
    let base = file.base_dir();
    let location = sandbox
        .location(&resolve_path(&base, &path), &format!("source '{name}'"))
        .map_err(|r| PipelineError::refused(&at, r))?;
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
    let incremental = check_incremental(file, i, format, incremental.unwrap_or(false))?;
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
                place(file, "[[source]]", i, Some("delimiter")),
                format!("delimiter '{d}' must be one character, e.g. \",\", \";\" or \"\\t\""),
            ));
        }
    };
    Ok(SourceReader {
        name,
        path,
        location,
        format,
        has_header: has_header.unwrap_or(true),
        delimiter,
        incremental,
        only: None,
    })
}

/// `incremental = true` on the `i`-th source: the first, not HDF5.
fn check_incremental(
    file: &PipelineFile,
    i: usize,
    format: FileFormat,
    incremental: bool,
) -> Result<bool> {
    if incremental && (i > 0 || format == FileFormat::Hdf5) {
        return Err(PipelineError::invalid(
            place(file, "[[source]]", i, Some("incremental")),
            if i > 0 {
                "only the first source may be incremental: it is the one a run splits into \
                 chunks; the others are read whole"
            } else {
                "an HDF5 source is one file; incremental sources are directories or globs of \
                 Parquet, CSV, NDJSON, Arrow or Avro files"
            },
        ));
    }
    Ok(incremental)
}

/// Pickle is refused (loading one runs code); HDF5 is read from one local file.
fn refuse_by_extension(path: &str, at: &str) -> Result<()> {
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
    Ok(())
}

pub(super) fn resolve_path(base: &Path, p: &str) -> String {
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

pub(super) fn format_of(path: &str) -> Option<FileFormat> {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    last.rsplit_once('.')
        .and_then(|(_, ext)| FileFormat::from_extension(ext))
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
