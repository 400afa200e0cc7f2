//! Part files: one chunk's rows for one sink, written to a hidden temp name with a running CRC-32,
//! fsynced and renamed at commit.

use super::SinkTarget;
use crate::error::{PipelineError, Result};
use crate::faults::FaultPlan;
use crate::spec::FileFormat;
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
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per row group of a Parquet part file (memory held per open writer).
const PART_ROW_GROUP_ROWS: usize = 128 * 1024;

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
pub(super) struct PartFile {
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
    /// A part to be published at `path`, written to a hidden temp name beside it: `.<name>.tmp`,
    /// or `.<name>.<attempt>.tmp` when several attempts may write the same part at once (Ballista
    /// retrying a task whose executor it lost while that executor still writes).
    pub(super) fn create(
        path: PathBuf,
        format: FileFormat,
        schema: &SchemaRef,
        faults: Option<(Arc<FaultPlan>, usize)>,
        attempt: Option<&str>,
    ) -> Result<Self> {
        let dir = path.parent().expect("part files live in a directory");
        std::fs::create_dir_all(dir).map_err(|source| PipelineError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = path.file_name().expect("named").to_string_lossy();
        let tmp = match attempt {
            Some(a) => dir.join(format!(".{name}.{a}.tmp")),
            None => dir.join(format!(".{name}.tmp")),
        };
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

    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
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

    /// Writes the rest, finishes the format and fsyncs the temp file; the part is complete but
    /// not yet visible under its name.
    pub(super) fn finish(mut self) -> Result<StagedPart> {
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
        Ok(StagedPart {
            temp: tmp,
            in_place: false,
            part: WrittenPart {
                path: self.path,
                rows: self.rows,
                bytes: len,
                crc32: crc.finalize(),
            },
        })
    }
}

/// A complete part file under its temp name, waiting to be published (renamed to its name).
#[derive(Debug, Clone)]
pub struct StagedPart {
    pub temp: PathBuf,
    /// Already at its place in an object store's staging prefix (an executor put it there):
    /// nothing to rename.
    pub in_place: bool,
    /// What it will be once published.
    pub part: WrittenPart,
}

impl StagedPart {
    /// Renames the temp file to the part's name, after checking that it is the file that was
    /// written (its size): a part written by an executor must be on storage this process sees.
    pub fn publish(self) -> Result<WrittenPart> {
        if self.in_place {
            return Ok(self.part);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PipelineError::Io { path, source }
        };
        let len = match std::fs::metadata(&self.temp) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PipelineError::Output {
                    path: self.temp.clone(),
                    reason: format!(
                        "was written by an executor ({} bytes) but is not there for this process; the output directory must be storage this process and every executor share (the same path on a shared filesystem)",
                        self.part.bytes
                    ),
                });
            }
            Err(e) => return Err(io(&self.temp)(e)),
        };
        if len != self.part.bytes {
            return Err(PipelineError::Output {
                path: self.temp.clone(),
                reason: format!(
                    "holds {len} bytes, but {} were written; the output directory must be the same storage for this process and every executor",
                    self.part.bytes
                ),
            });
        }
        std::fs::rename(&self.temp, &self.part.path).map_err(io(&self.part.path))?;
        // The rename is durable before the chunk's commit line is written after it.
        super::sync_dir(self.part.path.parent().unwrap_or(Path::new(".")));
        Ok(self.part)
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
    /// Set when parts are written by a task another attempt may race (see [`PartFile::create`]).
    attempt: Option<String>,
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
        faults: Option<Arc<FaultPlan>>,
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
            faults,
            attempt: None,
        })
    }

    /// Temp names unique to this attempt (`.<part>.<attempt>.tmp`): for parts written on an
    /// executor, which [`ChunkWriter::finish`] leaves unpublished.
    pub fn with_attempt(mut self, attempt: String) -> Self {
        self.attempt = Some(attempt);
        self
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
            let part = PartFile::create(
                path,
                self.target.format,
                &self.schema,
                faults,
                self.attempt.as_deref(),
            )?;
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
    pub fn commit(self) -> Result<Vec<WrittenPart>> {
        self.finish()?
            .into_iter()
            .map(StagedPart::publish)
            .collect()
    }

    /// Finishes every part of this chunk under its temp name, unpublished.
    pub fn finish(mut self) -> Result<Vec<StagedPart>> {
        if self.key_columns.is_empty() && self.parts.is_empty() {
            self.part(String::new())?;
        }
        let mut staged: Vec<StagedPart> = Vec::new();
        while let Some((_, part)) = self.parts.pop_first() {
            let temp = part.tmp.clone();
            match part.finish() {
                Ok(p) => staged.push(p),
                Err(e) => {
                    // Nothing of a chunk that failed stays behind (the rest go with the writer).
                    let _ = std::fs::remove_file(&temp);
                    for s in &staged {
                        let _ = std::fs::remove_file(&s.temp);
                    }
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }
}

/// Removes the temp files of unpublished attempts under `staging` (recursively, for partition
/// directories): every `.part-*.tmp`, or only chunk `chunk`'s. Returns how many it removed.
pub fn remove_attempt_files(staging: &Path, chunk: Option<usize>) -> usize {
    let mut removed = 0;
    let mut dirs = vec![staging.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        removed += remove_attempt_files_in(&dir, chunk, Some(&mut dirs));
    }
    removed
}

/// [`remove_attempt_files`] in `dir` only; its subdirectories (not the run directory, `_*`) are
/// pushed to `subdirs` when given.
pub fn remove_attempt_files_in(
    dir: &Path,
    chunk: Option<usize>,
    mut subdirs: Option<&mut Vec<PathBuf>>,
) -> usize {
    let prefix = match chunk {
        Some(c) => format!(".part-{c:05}."),
        None => ".part-".to_string(),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() && !name.starts_with('_') {
            if let Some(dirs) = subdirs.as_deref_mut() {
                dirs.push(e.path());
            }
        } else if kind.is_file()
            && name.starts_with(&prefix)
            && name.ends_with(".tmp")
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Hive-style escaping of a partition value for a directory name.
pub(super) fn escape_path_value(v: &str) -> String {
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
