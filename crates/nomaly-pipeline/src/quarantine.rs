//! `on_bad_rows = "quarantine"`: a CSV/NDJSON chunk reader that sets unparseable lines aside.
//!
//! DataFusion's readers fail a whole scan on the first bad line. Under quarantine the chunked
//! source is read by [`QuarantineScanExec`] instead: partition `i` reads chunk `i`'s byte range
//! (a line belongs to the chunk its first byte lies in, as DataFusion's range reader does), parses
//! blocks of lines with Arrow's CSV/JSON decoders against the source schema, and when a block
//! fails, parses its lines one by one: good lines go on, bad ones are recorded in the
//! [`QuarantineLog`] with their byte offset, the reason and the text. The fit and the scoring read
//! through the same reader, so both see the same good rows; the run writes each chunk's bad rows
//! to `_nomaly/quarantine/part-<chunk>.ndjson` and counts them in the manifest and the report.

use crate::chunk_plan::{Chunk, ChunkPlan};
use crate::spec::FileFormat;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Lines parsed together; a failing block is bisected down to its bad lines.
const BLOCK_LINES: usize = 8192;

/// One line that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadRow {
    pub chunk: usize,
    /// Byte offset of the line in its file.
    pub byte_offset: u64,
    pub file: String,
    pub reason: String,
    pub line: String,
}

/// What a chunk's last read found: lines read (header excluded) and the bad ones.
#[derive(Debug, Clone, Default)]
pub struct ChunkBadRows {
    pub lines: u64,
    pub bad: Vec<BadRow>,
}

/// Bad rows per chunk, replaced by each read of the chunk (fit and scoring read the same lines).
#[derive(Debug, Default)]
pub struct QuarantineLog {
    chunks: Mutex<BTreeMap<usize, ChunkBadRows>>,
}

impl QuarantineLog {
    pub fn get(&self, chunk: usize) -> ChunkBadRows {
        self.chunks
            .lock()
            .expect("not poisoned")
            .get(&chunk)
            .cloned()
            .unwrap_or_default()
    }

    pub fn all(&self) -> BTreeMap<usize, ChunkBadRows> {
        self.chunks.lock().expect("not poisoned").clone()
    }

    fn set(&self, chunk: usize, rows: ChunkBadRows) {
        self.chunks
            .lock()
            .expect("not poisoned")
            .insert(chunk, rows);
    }
}

/// The scan of a chunked CSV/NDJSON source under quarantine: partition `i` is chunk `i`.
#[derive(Debug)]
pub struct QuarantineScanExec {
    plan: ChunkPlan,
    /// Local path of each chunk's file.
    files: Vec<PathBuf>,
    projection: Option<Vec<usize>>,
    projected: SchemaRef,
    log: Arc<QuarantineLog>,
    properties: Arc<PlanProperties>,
}

impl QuarantineScanExec {
    pub fn new(
        plan: ChunkPlan,
        files: Vec<PathBuf>,
        projection: Option<Vec<usize>>,
        log: Arc<QuarantineLog>,
    ) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(plan.schema.project(p)?),
            None => plan.schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(plan.chunks.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            plan,
            files,
            projection,
            projected,
            log,
            properties,
        })
    }

    pub fn chunk_count(&self) -> usize {
        self.plan.chunks.len()
    }
}

impl DisplayAs for QuarantineScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "QuarantineScanExec: source={}, chunks={}, bad rows set aside",
            self.plan.source.name,
            self.plan.chunks.len()
        )
    }
}

impl ExecutionPlan for QuarantineScanExec {
    fn name(&self) -> &'static str {
        "QuarantineScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let chunk = self.plan.chunks.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("no chunk {partition} in this scan"))
        })?;
        let reader = ChunkLineReader {
            chunk,
            path: self.files[partition].clone(),
            schema: self.plan.schema.clone(),
            format: self.plan.source.format,
            has_header: self.plan.source.has_header,
            delimiter: self.plan.source.delimiter,
            batch_size: context.session_config().batch_size(),
        };
        let (log, projection) = (self.log.clone(), self.projection.clone());
        // A chunk is read whole, then parsed: its bytes, then its batches, count against the
        // budget until the last batch has left.
        let reservation = MemoryConsumer::new(format!("QuarantineScanExec[{partition}]"))
            .register(context.memory_pool());
        let raw = reader
            .chunk
            .range
            .map_or(reader.chunk.file_size, |(s, e)| e - s) as usize;
        let source = self.plan.source.name.clone();
        let too_large = move |bytes: usize, e: DataFusionError| {
            DataFusionError::ResourcesExhausted(format!(
                "chunk {partition} of source '{}' needs about {} MiB to be read under \
                 on_bad_rows = \"quarantine\", more than the memory budget leaves ({e}); lower \
                 chunk_rows or raise the memory limit",
                source,
                bytes.div_ceil(1 << 20)
            ))
        };
        reservation.try_grow(raw).map_err(|e| too_large(raw, e))?;
        let stream = futures::stream::once(async move {
            let (batches, found) = tokio::task::spawn_blocking(move || reader.read())
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            let parsed: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            reservation
                .try_resize(parsed)
                .map_err(|e| too_large(parsed, e))?;
            log.set(partition, found);
            let batches: Vec<DfResult<RecordBatch>> = batches
                .into_iter()
                .map(|b| match &projection {
                    Some(p) => b.project(p).map_err(DataFusionError::from),
                    None => Ok(b),
                })
                .collect();
            // The reservation goes with the batches, and is freed with the last of them.
            let held = futures::stream::iter(batches).chain(
                futures::stream::once(async move {
                    drop(reservation);
                    None
                })
                .filter_map(futures::future::ready),
            );
            Ok::<_, DataFusionError>(held)
        });
        use futures::{StreamExt, TryStreamExt};
        let flat = stream.try_flatten().boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.projected.clone(),
            flat,
        )))
    }
}

/// Reads one chunk's lines and parses them, setting bad lines aside.
struct ChunkLineReader {
    chunk: Chunk,
    path: PathBuf,
    schema: SchemaRef,
    format: FileFormat,
    has_header: bool,
    delimiter: u8,
    batch_size: usize,
}

impl ChunkLineReader {
    /// The chunk's bytes: from the first line starting at or after `start` through the end of the
    /// line holding byte `end - 1`.
    fn bytes(&self) -> std::io::Result<(u64, Vec<u8>)> {
        let mut f = std::fs::File::open(&self.path)?;
        let size = f.metadata()?.len();
        let (start, end) = self.chunk.range.unwrap_or((0, size));
        // Begin one byte early: if that byte ends a line, the chunk's first line starts at `start`.
        let from = start.saturating_sub(1);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::with_capacity((end - from + 4096) as usize);
        (&mut f).take(end - from).read_to_end(&mut buf)?;
        // Finish the last line.
        let mut tail = [0u8; 8192];
        while buf.last() != Some(&b'\n') {
            let n = f.read(&mut tail)?;
            if n == 0 {
                break;
            }
            match tail[..n].iter().position(|b| *b == b'\n') {
                Some(i) => buf.extend_from_slice(&tail[..=i]),
                None => buf.extend_from_slice(&tail[..n]),
            }
        }
        let skip = if start == 0 {
            0
        } else {
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => buf.len(),
            }
        };
        Ok((from + skip as u64, buf[skip..].to_vec()))
    }

    fn parse(&self, data: &[u8]) -> Result<Vec<RecordBatch>, String> {
        let cursor = std::io::Cursor::new(data);
        let result: Result<Vec<RecordBatch>, _> = match self.format {
            FileFormat::Ndjson => datafusion::arrow::json::ReaderBuilder::new(self.schema.clone())
                .with_batch_size(self.batch_size)
                .build(cursor)
                .and_then(|r| r.collect()),
            _ => datafusion::arrow::csv::ReaderBuilder::new(self.schema.clone())
                .with_header(false)
                .with_delimiter(self.delimiter)
                .with_batch_size(self.batch_size)
                .build(cursor)
                .and_then(|r| r.collect()),
        };
        result.map_err(|e| e.to_string())
    }

    /// Parses `lines` (spans of `data`) at once; when that fails, each half on its own, down to
    /// single lines, which are the bad ones: a few bad lines cost O(bad · log n) parses.
    fn parse_lines(
        &self,
        data: &[u8],
        lines: &[(usize, usize)],
        base: u64,
        good: &mut Vec<RecordBatch>,
        bad: &mut Vec<BadRow>,
    ) {
        let (s, e) = (lines[0].0, lines[lines.len() - 1].1);
        match self.parse(&data[s..e]) {
            Ok(b) => good.extend(b),
            Err(reason) if lines.len() == 1 => bad.push(BadRow {
                chunk: self.chunk.id,
                byte_offset: base + s as u64,
                file: self.path.display().to_string(),
                reason,
                line: String::from_utf8_lossy(&data[s..e]).trim_end().to_string(),
            }),
            Err(_) => {
                let mid = lines.len() / 2;
                self.parse_lines(data, &lines[..mid], base, good, bad);
                self.parse_lines(data, &lines[mid..], base, good, bad);
            }
        }
    }

    fn read(self) -> DfResult<(Vec<RecordBatch>, ChunkBadRows)> {
        let (base, data) = self.bytes().map_err(|e| {
            DataFusionError::IoError(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            ))
        })?;
        // Line start offsets (skipping empty lines and the header of the file's first chunk).
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let end = data[at..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| at + i + 1)
                .unwrap_or(data.len());
            let text = &data[at..end];
            if !text.iter().all(|b| b.is_ascii_whitespace()) {
                lines.push((at, end));
            }
            at = end;
        }
        if self.has_header && base == 0 && self.format == FileFormat::Csv && !lines.is_empty() {
            lines.remove(0);
        }
        let mut found = ChunkBadRows {
            lines: lines.len() as u64,
            bad: vec![],
        };
        let mut batches = Vec::new();
        for block in lines.chunks(BLOCK_LINES) {
            let mut good = Vec::new();
            self.parse_lines(&data, block, base, &mut good, &mut found.bad);
            // One batch per block, not one per piece the bisection made.
            match good.len() {
                0 => {}
                1 => batches.extend(good),
                _ => batches.push(datafusion::arrow::compute::concat_batches(
                    &self.schema,
                    &good,
                )?),
            }
        }
        Ok((batches, found))
    }
}

/// Under quarantine a bad value among the first lines must not turn a numeric column into text
/// (Arrow infers Utf8 from a single "oops"): a text column whose sampled values are at least 90%
/// numbers becomes Int64 or Float64 again, and the other values become bad lines.
pub fn tolerant_csv_schema(
    path: &std::path::Path,
    inferred: &SchemaRef,
    has_header: bool,
    delimiter: u8,
) -> std::io::Result<SchemaRef> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    const SAMPLE: usize = 1000;
    let text = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(8 << 20)
        .read_to_end(&mut buf)?;
    let mut lines = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    if has_header {
        lines.next();
    }
    // (ints, floats, others) per column.
    let mut counts = vec![(0usize, 0usize, 0usize); inferred.fields().len()];
    for line in lines.take(SAMPLE) {
        let Ok(mut reader) = datafusion::arrow::csv::ReaderBuilder::new(text.clone())
            .with_header(false)
            .with_delimiter(delimiter)
            .build(std::io::Cursor::new(line))
        else {
            continue;
        };
        let Some(Ok(batch)) = reader.next() else {
            continue;
        };
        for (i, c) in counts.iter_mut().enumerate() {
            let col = batch.column(i).as_string::<i32>();
            if col.is_null(0) || col.value(0).trim().is_empty() {
                continue;
            }
            let v = col.value(0).trim();
            if v.parse::<i64>().is_ok() {
                c.0 += 1;
            } else if v.parse::<f64>().is_ok() {
                c.1 += 1;
            } else {
                c.2 += 1;
            }
        }
    }
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .zip(&counts)
        .map(|(f, &(ints, floats, others))| {
            let numeric = ints + floats;
            if f.data_type() == &DataType::Utf8 && numeric > 0 && others * 10 <= numeric {
                let t = if floats == 0 {
                    DataType::Int64
                } else {
                    DataType::Float64
                };
                Field::new(f.name(), t, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_plan::{SourceReader, plan_chunks};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;
    use futures::StreamExt;
    use std::path::Path;

    /// `lines` CSV rows `id,v` (header first) where every `bad_every`th row's `v` is `oops`.
    fn csv(lines: i64, bad_every: i64) -> String {
        let mut text = String::from("id,v\n");
        for i in 0..lines {
            if i % bad_every == bad_every - 1 {
                text.push_str(&format!("{i},oops\n"));
            } else {
                text.push_str(&format!("{i},{}.5\n", i % 13));
            }
        }
        text
    }

    /// The quarantining scan of `text` in chunks of about `chunk_rows` rows, typed `id, v`.
    async fn scan(dir: &Path, text: &str, chunk_rows: u64) -> QuarantineScanExec {
        let file = dir.join("in.csv");
        std::fs::write(&file, text).unwrap();
        let source = SourceReader {
            name: "tx".into(),
            path: "in.csv".into(),
            location: file.display().to_string(),
            format: FileFormat::Csv,
            has_header: true,
            delimiter: b',',
            incremental: false,
            only: None,
        };
        let mut plan = plan_chunks(&SessionContext::new(), &source, chunk_rows, true)
            .await
            .unwrap();
        plan.schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
        ]));
        let files = plan
            .chunks
            .iter()
            .map(|c| Path::new("/").join(&c.file))
            .collect();
        QuarantineScanExec::new(plan, files, None, Arc::default()).unwrap()
    }

    /// Every partition's ids, in order of partition.
    async fn ids(scan: &QuarantineScanExec, ctx: &SessionContext) -> DfResult<Vec<Vec<i64>>> {
        let mut out = Vec::new();
        for p in 0..scan.chunk_count() {
            let mut ids = Vec::new();
            let mut stream = scan.execute(p, ctx.task_ctx())?;
            while let Some(batch) = stream.next().await {
                ids.extend(batch?.column(0).as_primitive::<Int64Type>().values().iter());
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// A file whose every row is bad scans to no rows, each line set aside with its reason.
    #[tokio::test]
    async fn no_good_row_scans_to_nothing_and_logs_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let scan = scan(dir.path(), &csv(20, 1), 1_000).await;
        let got = ids(&scan, &SessionContext::new()).await.unwrap();
        assert_eq!(got.concat(), Vec::<i64>::new());
        let bad = scan.log.get(0).bad;
        assert_eq!(bad.len(), 20);
        assert_eq!(bad[0].line, "0,oops");
        assert_eq!(bad[0].byte_offset, 5);
    }

    /// Partition `i` reads chunk `i` only: over all partitions every good row comes once, and
    /// each bad row is logged by the chunk holding it, at its byte offset.
    #[tokio::test]
    async fn many_partitions_read_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = csv(3_000, 250);
        let scan = scan(dir.path(), &text, 500).await;
        assert!(scan.chunk_count() >= 4, "{} chunks", scan.chunk_count());
        let got = ids(&scan, &SessionContext::new()).await.unwrap();
        let mut all = got.concat();
        all.sort();
        let good: Vec<i64> = (0..3_000).filter(|i| i % 250 != 249).collect();
        assert_eq!(all, good);
        let logged = scan.log.all();
        let mut bad_ids = Vec::new();
        for (chunk, rows) in &logged {
            let (start, end) = scan.plan.chunks[*chunk].range.unwrap();
            for row in &rows.bad {
                assert!(row.byte_offset >= start && row.byte_offset < end, "{row:?}");
                assert!(
                    text[row.byte_offset as usize..].starts_with(&row.line),
                    "{row:?}"
                );
                bad_ids.push(row.line.split(',').next().unwrap().parse::<i64>().unwrap());
            }
        }
        bad_ids.sort();
        assert_eq!(bad_ids, (0..12).map(|k| 249 + 250 * k).collect::<Vec<_>>());
        let lines: u64 = logged.values().map(|r| r.lines).sum();
        assert_eq!(lines, 3_000);
    }

    /// A chunk larger than the budget is refused before it is read, naming the fix.
    #[tokio::test]
    async fn a_chunk_larger_than_the_budget_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let scan = scan(dir.path(), &csv(20_000, 100), 1_000_000).await;
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(64 << 10, 1.0);
        let ctx =
            SessionContext::new_with_config_rt(Default::default(), runtime.build_arc().unwrap());
        let err = ids(&scan, &ctx).await.unwrap_err().to_string();
        assert!(err.contains("chunk 0 of source 'tx'"), "{err}");
        assert!(
            err.contains("lower chunk_rows or raise the memory limit"),
            "{err}"
        );
    }

    /// A chunk's memory is held while its batches are out and freed when its stream is dropped.
    #[tokio::test]
    async fn a_dropped_stream_frees_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let scan = scan(dir.path(), &csv(20_000, 100), 1_000_000).await;
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(64 << 20, 1.0);
        let ctx =
            SessionContext::new_with_config_rt(Default::default(), runtime.build_arc().unwrap());
        let pool = ctx.runtime_env().memory_pool.clone();
        let mut stream = scan.execute(0, ctx.task_ctx()).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.num_rows() > 0);
        assert!(pool.reserved() > 0, "the chunk's batches are not counted");
        drop(stream);
        assert_eq!(pool.reserved(), 0);
    }

    /// One partition per chunk, the projected schema, and a display naming the source.
    #[tokio::test]
    async fn properties_follow_the_chunks_and_the_projection() {
        let dir = tempfile::tempdir().unwrap();
        let whole = scan(dir.path(), &csv(3_000, 250), 500).await;
        let chunks = whole.chunk_count();
        let projected = QuarantineScanExec::new(
            whole.plan.clone(),
            whole.files.clone(),
            Some(vec![1]),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(
            projected.properties().partitioning.partition_count(),
            chunks
        );
        let names: Vec<String> = (projected.schema().fields().iter())
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["v"]);
        let ctx = SessionContext::new();
        let batches = collect(Arc::new(projected), ctx.task_ctx()).await.unwrap();
        assert!(batches.iter().all(|b| b.num_columns() == 1));
        let shown = displayable(&whole).one_line().to_string();
        assert!(
            shown.starts_with(&format!("QuarantineScanExec: source=tx, chunks={chunks}")),
            "{shown}"
        );
    }
}
