//! Registering input files as tables, with the format taken from the extension.

use crate::error::{EngineError, Result};
use datafusion::datasource::file_format::options::{
    ArrowReadOptions, AvroReadOptions, CsvReadOptions, JsonReadOptions, ParquetReadOptions,
};
use datafusion::prelude::SessionContext;
use std::path::Path;

/// Input formats recognised by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Parquet,
    NdJson,
    Arrow,
    Avro,
}

impl InputFormat {
    pub fn from_extension(path: &str) -> Result<(InputFormat, String)> {
        let ext = Path::new(path.trim_end_matches('/'))
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let fmt = match ext.as_str() {
            "csv" | "tsv" => InputFormat::Csv,
            "parquet" | "pq" => InputFormat::Parquet,
            "json" | "ndjson" | "jsonl" => InputFormat::NdJson,
            "arrow" | "feather" | "ipc" => InputFormat::Arrow,
            "avro" => InputFormat::Avro,
            "pkl" | "pickle" => {
                return Err(EngineError::UnsupportedFormat {
                    path: path.to_string(),
                    reason: "Pickle files are refused: loading one runs arbitrary code. Convert it once in Python, e.g. \
                             pandas.read_pickle(p).to_parquet('data.parquet'), and read the Parquet file"
                        .to_string(),
                });
            }
            "h5" | "hdf5" => {
                return Err(EngineError::UnsupportedFormat {
                    path: path.to_string(),
                    reason: "HDF5 input is not built into this binary; convert it, e.g. \
                             pandas.read_hdf(p).to_parquet('data.parquet')"
                        .to_string(),
                });
            }
            _ => {
                return Err(EngineError::UnknownFormat {
                    path: path.to_string(),
                    extension: ext,
                });
            }
        };
        Ok((fmt, ext))
    }
}

fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Registers `path` (a file, a directory of files, or a glob) as table `name`.
pub async fn register_table(ctx: &SessionContext, name: &str, path: &str) -> Result<()> {
    let mut location = path.to_string();
    let local = !path.contains("://");
    let mut format_source = path.to_string();
    if local && !has_glob(path) {
        let p = Path::new(path);
        if !p.exists() {
            // A wrong extension is the more useful message, even for a missing file.
            if p.extension().is_some() {
                InputFormat::from_extension(path)?;
            }
            return Err(EngineError::InputNotFound {
                path: path.to_string(),
            });
        }
        if p.is_dir() {
            // A directory: the format of its first data file decides.
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .map_err(|source| EngineError::Io {
                    path: p.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|e| e.is_file())
                .filter(|e| {
                    let n = e
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    !n.starts_with('.') && !n.starts_with('_')
                })
                .collect();
            entries.sort();
            let first = entries.first().ok_or_else(|| EngineError::InputNotFound {
                path: path.to_string(),
            })?;
            format_source = first.to_string_lossy().to_string();
            if !location.ends_with('/') {
                location.push('/');
            }
        }
    } else if local && has_glob(path) {
        let dir = Path::new(path)
            .ancestors()
            .find(|a| !has_glob(&a.to_string_lossy()))
            .map(|a| a.to_path_buf())
            .unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            dir
        };
        if !dir.exists() {
            return Err(EngineError::InputNotFound {
                path: path.to_string(),
            });
        }
    }
    let (format, ext) = InputFormat::from_extension(&format_source)?;
    let ext = format!(".{ext}");
    match format {
        InputFormat::Csv => {
            let mut opts = CsvReadOptions::new().file_extension(&ext);
            if ext == ".tsv" {
                opts = opts.delimiter(b'\t');
            }
            ctx.register_csv(name, &location, opts).await?
        }
        InputFormat::Parquet => {
            ctx.register_parquet(
                name,
                &location,
                ParquetReadOptions::default().file_extension(&ext),
            )
            .await?
        }
        InputFormat::NdJson => {
            ctx.register_json(
                name,
                &location,
                JsonReadOptions::default().file_extension(&ext),
            )
            .await?
        }
        InputFormat::Arrow => {
            ctx.register_arrow(
                name,
                &location,
                ArrowReadOptions {
                    file_extension: &ext,
                    ..Default::default()
                },
            )
            .await?
        }
        InputFormat::Avro => {
            ctx.register_avro(
                name,
                &location,
                AvroReadOptions {
                    file_extension: &ext,
                    ..Default::default()
                },
            )
            .await?
        }
    }
    Ok(())
}

/// Parses `NAME=PATH`.
pub fn parse_table_spec(spec: &str) -> Result<(String, String)> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| EngineError::InvalidTableSpec {
            spec: spec.to_string(),
            reason: "missing '='".to_string(),
        })?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(EngineError::InvalidTableSpec {
            spec: spec.to_string(),
            reason: format!("'{name}' is not a valid table name (letters, digits, _)"),
        });
    }
    Ok((name.to_string(), path.trim().to_string()))
}
