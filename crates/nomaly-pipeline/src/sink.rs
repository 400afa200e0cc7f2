//! Sinks: one part file per chunk, written under a staging directory and published at the end.
//!
//! A part is written to a hidden temp name, fsynced and renamed, so a part file that exists is
//! complete. The whole run writes into `.<name>.nomaly-staging/` beside the output directory; only a
//! run that finished (and passed its checks) renames it into place, so readers never see a
//! half-written output, and a previous output stays until the new one is complete.

use crate::error::{PipelineError, Result};
use crate::faults::FaultPlan;
use crate::spec::{FileFormat, WriteMode};
use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::FileWriter as IpcFileWriter;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::physical_plan::PhysicalExpr;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per row group of a Parquet part file (memory held per open writer).
const PART_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Name of the run report inside an output directory.
pub const REPORT_FILE: &str = "_nomaly_report.json";

/// A resolved sink.
#[derive(Debug, Clone)]
pub struct SinkTarget {
    /// For messages: "[[sink]] 1 (out/anomalies/)".
    pub label: String,
    /// The published directory.
    pub path: PathBuf,
    pub format: FileFormat,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    /// The `where` predicate, compiled against the scored schema.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub filter_text: Option<String>,
}

/// A hidden directory beside `output`: `.<name>.nomaly-<role>` (staging, work, old).
pub fn sibling_dir(output: &Path, role: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.nomaly-{role}"))
}

/// Where a run writes an output before publishing it.
pub fn staging_dir(output: &Path) -> PathBuf {
    sibling_dir(output, "staging")
}

impl SinkTarget {
    /// The staging directory beside the output.
    pub fn staging(&self) -> PathBuf {
        staging_dir(&self.path)
    }

    /// Checks, before any work, that the output can be written under its mode.
    pub fn check_writable(&self) -> Result<()> {
        let out = |reason: String| PipelineError::Output {
            path: self.path.clone(),
            reason,
        };
        if matches!(self.format, FileFormat::Avro | FileFormat::Hdf5) {
            return Err(out(format!(
                "{} output is not supported; use format = \"parquet\", \"csv\", \"ndjson\" or \"arrow\"",
                if self.format == FileFormat::Avro {
                    "Avro"
                } else {
                    "HDF5"
                }
            )));
        }
        if self.path.exists() {
            if !self.path.is_dir() {
                return Err(out(
                    "exists and is a file; the output is a directory of part files — choose a directory path".into(),
                ));
            }
            let entries = list_dir(&self.path)?;
            if !entries.is_empty() {
                match self.mode {
                    WriteMode::ErrorIfExists => {
                        return Err(out(format!(
                            "already exists and holds {} entries, and mode = \"error_if_exists\"; remove it, choose another path, or set mode = \"overwrite\"",
                            entries.len()
                        )));
                    }
                    WriteMode::Overwrite => {
                        if !self.path.join(REPORT_FILE).exists() {
                            return Err(out(format!(
                                "already exists and holds files Nomaly did not write (no {REPORT_FILE}); overwrite only replaces earlier Nomaly outputs — choose an empty or new directory"
                            )));
                        }
                    }
                }
            }
        }
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The nearest existing ancestor must be writable: probe it with a real file.
        let existing = parent
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("."));
        if !existing.is_dir() {
            return Err(out(format!("{} is not a directory", existing.display())));
        }
        let probe = existing.join(format!(".nomaly-write-probe-{}", std::process::id()));
        match File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) => Err(out(format!(
                "cannot write into {}: {e}; choose a writable location",
                existing.display()
            ))),
        }
    }

    /// Creates an empty staging directory (removing leftovers of an earlier failed run).
    pub fn prepare_staging(&self) -> Result<PathBuf> {
        let staging = self.staging();
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|source| PipelineError::Io {
                path: staging.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&staging).map_err(|source| PipelineError::Io {
            path: staging.clone(),
            source,
        })?;
        Ok(staging)
    }

    /// Replaces the output with the staging directory.
    pub fn publish(&self) -> Result<()> {
        let staging = self.staging();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PipelineError::Io { path, source }
        };
        let old = sibling_dir(&self.path, "old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if self.path.exists() {
            std::fs::rename(&self.path, &old).map_err(io(&self.path))?;
        }
        std::fs::rename(&staging, &self.path).map_err(io(&self.path))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        sync_dir(self.path.parent().unwrap_or(Path::new(".")));
        Ok(())
    }

    /// Removes the staging directory of a failed run.
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(self.staging());
    }
}

fn list_dir(path: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(path)
        .map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

fn sync_dir(path: &Path) {
    // Best effort: makes the renames durable on filesystems that support directory fsync.
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

fn arrow_err(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A part file on disk that checksums what goes through it (for the manifest) and fails writes
/// when fault injection says so.
struct CheckedFile {
    file: File,
    crc: crc32fast::Hasher,
    len: u64,
    /// Bytes up to here have had their write-back started.
    flushed_to: u64,
    faults: Option<(Arc<FaultPlan>, usize)>,
}

/// Start write-back every this many bytes (like RocksDB's `bytes_per_sync`), so the fsync at
/// commit waits for the tail only, not for the whole part while its core idles.
const WRITEBACK_BYTES: u64 = 8 << 20;

impl CheckedFile {
    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        if self.len - self.flushed_to >= WRITEBACK_BYTES {
            // SAFETY: a valid open descriptor and a byte range of it; the call only schedules
            // write-back (no waiting), and a failure here is caught by the fsync at commit.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed_to as libc::off64_t,
                    (self.len - self.flushed_to) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed_to = self.len;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) {}
}

impl Write for CheckedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some((plan, chunk)) = &self.faults
            && let Some(e) = plan.write_fault(*chunk)
        {
            return Err(e);
        }
        let n = self.file.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        self.start_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

type PartSink = BufWriter<CheckedFile>;

enum FormatWriter {
    Parquet(ArrowWriter<PartSink>),
    Csv(datafusion::arrow::csv::Writer<PartSink>),
    Ndjson(LineDelimitedWriter<PartSink>),
    Arrow(IpcFileWriter<PartSink>),
}

/// One part file being written.
struct PartFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: FormatWriter,
    rows: u64,
    schema: SchemaRef,
    /// Rows not yet handed to the writer (fewer than [`WRITE_GRID`] once `write` returns).
    pending: VecDeque<RecordBatch>,
    pending_rows: usize,
}

/// Rows reach the format writer in slices of exactly this many rows (the last one shorter):
/// Parquet pages and IPC record batches then start at the same rows whatever batch sizes the plan
/// produced — Ballista's shuffle reads return other batches than a local scan — so the same rows
/// give the same bytes on every engine. A divisor of the part row group size, a multiple of the
/// Parquet writer's 1024-row write batches.
const WRITE_GRID: usize = 8192;

impl PartFile {
    fn create(
        path: PathBuf,
        format: FileFormat,
        schema: &SchemaRef,
        faults: Option<(Arc<FaultPlan>, usize)>,
    ) -> Result<Self> {
        let dir = path.parent().expect("part files live in a directory");
        std::fs::create_dir_all(dir).map_err(|source| PipelineError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().expect("named").to_string_lossy()
        ));
        let file = File::create(&tmp).map_err(|source| PipelineError::Io {
            path: tmp.clone(),
            source,
        })?;
        let file = CheckedFile {
            file,
            crc: crc32fast::Hasher::new(),
            len: 0,
            flushed_to: 0,
            faults,
        };
        let w = BufWriter::with_capacity(1 << 20, file);
        let writer = match format {
            FileFormat::Parquet => {
                let mut props = WriterProperties::builder();
                // Floats (features, scores) are nearly all distinct: a dictionary only costs
                // hashing every value and bytes, and with 128Ki-row groups it never falls back.
                for f in schema.fields() {
                    if f.data_type().is_floating() {
                        props = props.set_column_dictionary_enabled(
                            ColumnPath::from(f.name().as_str()),
                            false,
                        );
                    }
                }
                let props = props
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).map_err(|e| arrow_err(&tmp, e))?,
                    ))
                    // The writer holds a row group in memory until it is full: bound it, so a
                    // 1M-row chunk does not hold its whole encoded output per concurrent chunk.
                    .set_max_row_group_row_count(Some(PART_ROW_GROUP_ROWS))
                    .build();
                FormatWriter::Parquet(
                    ArrowWriter::try_new(w, schema.clone(), Some(props))
                        .map_err(|e| arrow_err(&tmp, e))?,
                )
            }
            FileFormat::Csv => {
                FormatWriter::Csv(CsvWriterBuilder::new().with_header(true).build(w))
            }
            FileFormat::Ndjson => FormatWriter::Ndjson(LineDelimitedWriter::new(w)),
            FileFormat::Arrow => FormatWriter::Arrow(
                IpcFileWriter::try_new(w, schema).map_err(|e| arrow_err(&tmp, e))?,
            ),
            FileFormat::Avro | FileFormat::Hdf5 => unreachable!("rejected by check_writable"),
        };
        Ok(PartFile {
            tmp,
            path,
            writer,
            rows: 0,
            schema: schema.clone(),
            pending: VecDeque::new(),
            pending_rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.pending_rows += batch.num_rows();
        self.pending.push_back(batch.clone());
        while self.pending_rows >= WRITE_GRID {
            let slice = self.take_pending(WRITE_GRID)?;
            self.write_now(&slice)?;
        }
        Ok(())
    }

    /// The first `n` pending rows as one batch (a slice when one batch holds them, else a copy).
    fn take_pending(&mut self, n: usize) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        let mut need = n;
        while need > 0 {
            let Some(b) = self.pending.pop_front() else {
                break;
            };
            if b.num_rows() <= need {
                need -= b.num_rows();
                parts.push(b);
            } else {
                parts.push(b.slice(0, need));
                self.pending.push_front(b.slice(need, b.num_rows() - need));
                need = 0;
            }
        }
        self.pending_rows -= n - need;
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one"));
        }
        let schema = parts
            .first()
            .map(|b| b.schema())
            .unwrap_or(self.schema.clone());
        concat_batches(&schema, &parts).map_err(|e| arrow_err(&self.tmp, e))
    }

    fn write_now(&mut self, batch: &RecordBatch) -> Result<()> {
        let tmp = &self.tmp;
        match &mut self.writer {
            FormatWriter::Parquet(w) => w.write(batch).map_err(|e| arrow_err(tmp, e))?,
            FormatWriter::Csv(w) => w.write(batch).map_err(|e| arrow_err(tmp, e))?,
            FormatWriter::Ndjson(w) => w.write(batch).map_err(|e| arrow_err(tmp, e))?,
            FormatWriter::Arrow(w) => w.write(batch).map_err(|e| arrow_err(tmp, e))?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self) -> Result<WrittenPart> {
        if self.pending_rows > 0 {
            let rest = self.take_pending(self.pending_rows)?;
            self.write_now(&rest)?;
        }
        let tmp = self.tmp.clone();
        let file = match self.writer {
            FormatWriter::Parquet(w) => w
                .into_inner()
                .map_err(|e| arrow_err(&tmp, e))?
                .into_inner()
                .map_err(|e| arrow_err(&tmp, e))?,
            FormatWriter::Csv(w) => w
                .into_inner()
                .into_inner()
                .map_err(|e| arrow_err(&tmp, e))?,
            FormatWriter::Ndjson(mut w) => {
                w.finish().map_err(|e| arrow_err(&tmp, e))?;
                w.into_inner()
                    .into_inner()
                    .map_err(|e| arrow_err(&tmp, e))?
            }
            FormatWriter::Arrow(mut w) => {
                w.finish().map_err(|e| arrow_err(&tmp, e))?;
                let mut inner = w.into_inner().map_err(|e| arrow_err(&tmp, e))?;
                inner.flush().map_err(|e| arrow_err(&tmp, e))?;
                inner.into_inner().map_err(|e| arrow_err(&tmp, e))?
            }
        };
        let CheckedFile { file, crc, len, .. } = file;
        file.sync_all().map_err(|source| PipelineError::Io {
            path: tmp.clone(),
            source,
        })?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|source| PipelineError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(WrittenPart {
            path: self.path,
            rows: self.rows,
            bytes: len,
            crc32: crc.finalize(),
        })
    }
}

/// A committed part file.
#[derive(Debug, Clone)]
pub struct WrittenPart {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    /// CRC-32 of the file's bytes, as written.
    pub crc32: u32,
}

/// Writes one chunk's rows into one sink: one part file, or one per partition directory.
pub struct ChunkWriter {
    target: Arc<SinkTarget>,
    staging: PathBuf,
    chunk: usize,
    schema: SchemaRef,
    parts: BTreeMap<String, PartFile>,
    key_columns: Vec<usize>,
    faults: Option<Arc<FaultPlan>>,
}

impl Drop for ChunkWriter {
    /// A chunk that did not commit leaves no temp files behind.
    fn drop(&mut self) {
        for part in self.parts.values() {
            let _ = std::fs::remove_file(&part.tmp);
        }
    }
}

impl ChunkWriter {
    pub fn new(
        target: Arc<SinkTarget>,
        staging: PathBuf,
        chunk: usize,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_columns = target
            .partition_by
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    PipelineError::invalid(
                        &target.label,
                        format!("partition_by column '{c}' is not in the output"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            target,
            staging,
            chunk,
            schema,
            parts: BTreeMap::new(),
            key_columns,
            faults: FaultPlan::from_env(),
        })
    }

    fn part(&mut self, dir: String) -> Result<&mut PartFile> {
        if !self.parts.contains_key(&dir) {
            let name = format!("part-{:05}.{}", self.chunk, self.target.format.extension());
            let path = if dir.is_empty() {
                self.staging.join(name)
            } else {
                self.staging.join(&dir).join(name)
            };
            let faults = self.faults.clone().map(|f| (f, self.chunk));
            let part = PartFile::create(path, self.target.format, &self.schema, faults)?;
            self.parts.insert(dir.clone(), part);
        }
        Ok(self.parts.get_mut(&dir).expect("inserted"))
    }

    /// Filters, splits by partition key and appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = match &self.target.filter {
            Some(expr) => {
                let mask = expr
                    .evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| {
                        PipelineError::invalid(&self.target.label, format!("where: {e}"))
                    })?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        PipelineError::invalid(
                            &self.target.label,
                            "where must be a true/false condition, e.g. where = \"is_anomaly\"",
                        )
                    })?
                    .clone();
                filter_record_batch(batch, &mask).map_err(|e| arrow_err(&self.staging, e))?
            }
            None => batch.clone(),
        };
        if self.key_columns.is_empty() {
            return self.part(String::new())?.write(&batch);
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let opts = FormatOptions::default().with_null("__HIVE_DEFAULT_PARTITION__");
        let formatters = self
            .key_columns
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| arrow_err(&self.staging, e))?;
        let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let dir = self
                .key_columns
                .iter()
                .zip(&formatters)
                .map(|(&i, f)| {
                    format!(
                        "{}={}",
                        self.schema.field(i).name(),
                        escape_path_value(&f.value(row).to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join("/");
            groups.entry(dir).or_default().push(row as u32);
        }
        for (dir, rows) in groups {
            let indices = UInt32Array::from(rows);
            let part =
                take_record_batch(&batch, &indices).map_err(|e| arrow_err(&self.staging, e))?;
            self.part(dir)?.write(&part)?;
        }
        Ok(())
    }

    /// Finishes every part of this chunk; an unpartitioned sink always gets a part (possibly
    /// empty, so readers still see the schema).
    pub fn commit(mut self) -> Result<Vec<WrittenPart>> {
        if self.key_columns.is_empty() && self.parts.is_empty() {
            self.part(String::new())?;
        }
        std::mem::take(&mut self.parts)
            .into_values()
            .map(PartFile::commit)
            .collect()
    }
}

/// Hive-style escaping of a partition value for a directory name.
fn escape_path_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c.is_ascii_alphanumeric() || "-_.+@ ".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = format!("%2E{}", &out[out.len().min(1)..]);
    }
    out
}

/// Writes a small file atomically (temp, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same rows in differently sized batches (a local scan vs Ballista's shuffle reads) give
    /// byte-identical part files, in every format.
    #[test]
    fn part_bytes_do_not_depend_on_batch_sizes() {
        use datafusion::arrow::array::{Float64Array, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
        ]));
        let rows = 50_000;
        let all = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| ((i * 7919) % 10007) as f64 / 3.0),
                )),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for format in [FileFormat::Parquet, FileFormat::Arrow, FileFormat::Csv] {
            let mut files = Vec::new();
            for (k, sizes) in [vec![8192usize], vec![1000, 7000, 333], vec![50_000]]
                .iter()
                .enumerate()
            {
                let path = dir.path().join(format!("{k}.{}", format.extension()));
                let mut part = PartFile::create(path.clone(), format, &schema, None).unwrap();
                let (mut at, mut i) = (0, 0);
                while at < rows {
                    let n = sizes[i % sizes.len()].min(rows - at);
                    part.write(&all.slice(at, n)).unwrap();
                    at += n;
                    i += 1;
                }
                let written = part.commit().unwrap();
                assert_eq!(written.rows, rows as u64);
                files.push(std::fs::read(&path).unwrap());
            }
            assert!(files[0] == files[1] && files[1] == files[2], "{format:?}");
        }
    }

    #[test]
    fn partition_values_are_escaped() {
        assert_eq!(escape_path_value("a/b"), "a%2Fb");
        assert_eq!(escape_path_value("ok-1.5"), "ok-1.5");
        assert_eq!(escape_path_value(".."), "%2E.");
    }
}
