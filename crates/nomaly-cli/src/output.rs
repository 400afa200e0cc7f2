//! Printing results and writing output files atomically.

use crate::query_progress::QueryProgress;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::FileWriter as IpcFileWriter;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use nomaly_engine::EngineError;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" | "ndjson" => Ok(OutputFormat::Json),
            other => Err(format!(
                "unknown format '{other}'; valid formats are: table, csv, json"
            )),
        }
    }
}

fn arrow_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::DataFusion(DataFusionError::Execution(e.to_string()))
}

pub fn print_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<(), EngineError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Table => {
            let text = pretty_format_batches(batches).map_err(arrow_err)?;
            writeln!(out, "{text}").map_err(arrow_err)?;
        }
        OutputFormat::Csv => {
            let mut w = CsvWriterBuilder::new().with_header(true).build(&mut out);
            let mut wrote_any = false;
            for b in batches {
                w.write(b).map_err(arrow_err)?;
                wrote_any = true;
            }
            drop(w);
            if !wrote_any {
                // Header only, even for an empty result (scripts read the columns from it).
                if let Some(first) = batches.first() {
                    let names: Vec<&str> = first
                        .schema_ref()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    writeln!(out, "{}", names.join(",")).map_err(arrow_err)?;
                }
            }
        }
        OutputFormat::Json => {
            let mut w = LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b).map_err(arrow_err)?;
            }
            w.finish().map_err(arrow_err)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum FileKind {
    Parquet,
    Csv,
    Json,
    Arrow,
}

fn file_kind(path: &Path) -> Result<FileKind, EngineError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "parquet" => FileKind::Parquet,
        "csv" => FileKind::Csv,
        "json" | "ndjson" | "jsonl" => FileKind::Json,
        "arrow" | "feather" | "ipc" => FileKind::Arrow,
        _ => {
            return Err(EngineError::Output {
                path: path.to_path_buf(),
                reason: format!(
                    "unknown output extension '{ext}'; use .parquet, .csv, .json or .arrow"
                ),
            });
        }
    })
}

/// Fails early (before any work) when the output cannot be written.
pub fn check_output_path(path: &Path) -> Result<(), EngineError> {
    file_kind(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(EngineError::Output {
            path: path.to_path_buf(),
            reason: format!(
                "directory {} does not exist; create it first",
                dir.display()
            ),
        });
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Streams a result into `path` (temp file, fsync, rename): readers never see a partial file.
/// Writes the statement's rows to `path` (temp name, then rename); `progress` draws the bar.
pub async fn write_output(df: DataFrame, path: &Path, progress: bool) -> Result<(), EngineError> {
    let kind = file_kind(path)?;
    let tmp = temp_path(path);
    let runtime = df.task_ctx().runtime_env();
    let result = write_stream(df, &tmp, kind, progress.then_some(runtime)).await;
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

async fn write_stream(
    df: DataFrame,
    tmp: &Path,
    kind: FileKind,
    progress: Option<Arc<RuntimeEnv>>,
) -> Result<(), EngineError> {
    let schema = df.schema().inner().clone();
    let task_ctx = Arc::new(df.task_ctx());
    let physical = df.create_physical_plan().await?;
    let bar = progress.map(|runtime| QueryProgress::start(physical.clone(), runtime));
    let result = write_batches(
        datafusion::physical_plan::execute_stream(physical, task_ctx)?,
        schema,
        tmp,
        kind,
    )
    .await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    result
}

async fn write_batches(
    mut stream: SendableRecordBatchStream,
    schema: SchemaRef,
    tmp: &Path,
    kind: FileKind,
) -> Result<(), EngineError> {
    let io = |source| EngineError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(io)?;
    match kind {
        FileKind::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(arrow_err)?))
                .build();
            let mut w = ArrowWriter::try_new(file.try_clone().map_err(io)?, schema, Some(props))
                .map_err(arrow_err)?;
            while let Some(b) = stream.next().await {
                w.write(&b?).map_err(arrow_err)?;
            }
            w.close().map_err(arrow_err)?;
        }
        FileKind::Csv => {
            let mut w = CsvWriterBuilder::new()
                .with_header(true)
                .build(BufWriter::new(file.try_clone().map_err(io)?));
            while let Some(b) = stream.next().await {
                w.write(&b?).map_err(arrow_err)?;
            }
            w.into_inner().flush().map_err(io)?;
        }
        FileKind::Json => {
            let mut w = LineDelimitedWriter::new(BufWriter::new(file.try_clone().map_err(io)?));
            while let Some(b) = stream.next().await {
                w.write(&b?).map_err(arrow_err)?;
            }
            w.finish().map_err(arrow_err)?;
            w.into_inner().flush().map_err(io)?;
        }
        FileKind::Arrow => {
            let mut w =
                IpcFileWriter::try_new(BufWriter::new(file.try_clone().map_err(io)?), &schema)
                    .map_err(arrow_err)?;
            while let Some(b) = stream.next().await {
                w.write(&b?).map_err(arrow_err)?;
            }
            w.finish().map_err(arrow_err)?;
            w.into_inner().map_err(arrow_err)?.flush().map_err(io)?;
        }
    }
    file.sync_all().map_err(io)?;
    Ok(())
}
