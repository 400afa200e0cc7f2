//! Part files written where the rows are.
//!
//! On Ballista a chunk's plan ends in [`PartWriteExec`]: the executor that scores the chunk writes
//! its part files into each sink's staging directory (storage the client and every executor see)
//! under temp names unique to the task attempt, and returns one small row per part plus one row of
//! chunk totals ([`ChunkSummary`]). The client then publishes the parts by the commit protocol the
//! local engine uses: it checks each temp file's size, renames it to its part name, and records the
//! manifest line with size and checksum. Scored rows never travel back to the client; a task that
//! Ballista re-runs, or an executor killed while writing, leaves only temp files with other attempt
//! names, which the client removes once the chunk is committed.

use super::SinkTarget;
use super::part::{ChunkWriter, StagedPart, WrittenPart};
use crate::error::PipelineError;
use crate::spec::{FileFormat, WriteMode};
use datafusion::arrow::array::{
    Array, AsArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use futures::StreamExt;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument;

/// One sink as an executor writes it.
#[derive(Debug, Clone)]
pub struct SinkOnExecutor {
    pub target: Arc<SinkTarget>,
    /// The sink's staging directory, absolute: executors have working directories of their own.
    pub staging: PathBuf,
}

/// Writes partition 0 of its input (one chunk's scored rows) to every sink's part files, under
/// temp names unique to this attempt, and yields the [`ChunkSummary`] rows describing them.
#[derive(Debug)]
pub struct PartWriteExec {
    input: Arc<dyn ExecutionPlan>,
    chunk: usize,
    /// The schema the part files are written with (the scored frame's, as on the local engine,
    /// so both engines write the same bytes).
    rows_schema: SchemaRef,
    sinks: Vec<SinkOnExecutor>,
    properties: Arc<PlanProperties>,
}

impl PartWriteExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        chunk: usize,
        rows_schema: SchemaRef,
        sinks: Vec<SinkOnExecutor>,
    ) -> DfResult<Self> {
        let n = input.output_partitioning().partition_count();
        if n != 1 {
            return Err(DataFusionError::Internal(format!(
                "PartWriteExec writes one chunk: its input has {n} partitions"
            )));
        }
        if let Some(s) = sinks.iter().find(|s| !s.staging.is_absolute()) {
            return Err(DataFusionError::Internal(format!(
                "PartWriteExec needs absolute staging paths: {}",
                s.staging.display()
            )));
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(summary_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            chunk,
            rows_schema,
            sinks,
            properties,
        })
    }

    /// Serialises the node (not its input, which the plan codec carries as a child).
    pub(crate) fn encode(
        &self,
        buf: &mut Vec<u8>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<()> {
        let schema = datafusion_proto::protobuf::Schema::try_from(self.rows_schema.as_ref())?;
        let sinks = self
            .sinks
            .iter()
            .map(|s| {
                let t = &s.target;
                let filter = match &t.filter {
                    Some(f) => Some(serialize_physical_expr(f, codec)?.encode_to_vec()),
                    None => None,
                };
                Ok(SinkPayload {
                    label: t.label.clone(),
                    staging: s.staging.clone(),
                    format: t.format,
                    partition_by: t.partition_by.clone(),
                    filter,
                    filter_text: t.filter_text.clone(),
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        let payload = Payload {
            chunk: self.chunk,
            schema: schema.encode_to_vec(),
            sinks,
        };
        let bytes = postcard::to_stdvec(&payload)
            .map_err(|e| DataFusionError::Internal(format!("encoding PartWriteExec: {e}")))?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    pub(crate) fn decode(
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<Self> {
        let bad = |e: String| DataFusionError::Internal(format!("decoding PartWriteExec: {e}"));
        let payload: Payload = postcard::from_bytes(buf).map_err(|e| bad(e.to_string()))?;
        let schema = datafusion_proto::protobuf::Schema::decode(payload.schema.as_slice())
            .map_err(|e| bad(e.to_string()))?;
        let rows_schema: SchemaRef = Arc::new(Schema::try_from(&schema)?);
        let sinks = payload
            .sinks
            .into_iter()
            .map(|s| {
                let filter = match &s.filter {
                    Some(bytes) => {
                        let node =
                            datafusion_proto::protobuf::PhysicalExprNode::decode(bytes.as_slice())
                                .map_err(|e| bad(e.to_string()))?;
                        Some(parse_physical_expr(&node, ctx, &rows_schema, codec)?)
                    }
                    None => None,
                };
                Ok(SinkOnExecutor {
                    target: Arc::new(SinkTarget {
                        label: s.label,
                        path: s.staging.clone(),
                        format: s.format,
                        partition_by: s.partition_by,
                        mode: WriteMode::default(),
                        filter,
                        filter_text: s.filter_text,
                    }),
                    staging: s.staging,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        let input = inputs
            .first()
            .cloned()
            .ok_or_else(|| bad("no input".into()))?;
        Self::try_new(input, payload.chunk, rows_schema, sinks)
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    chunk: usize,
    /// `datafusion.Schema` protobuf.
    schema: Vec<u8>,
    sinks: Vec<SinkPayload>,
}

#[derive(Serialize, Deserialize)]
struct SinkPayload {
    label: String,
    staging: PathBuf,
    format: FileFormat,
    partition_by: Vec<String>,
    /// `datafusion.PhysicalExprNode` protobuf.
    filter: Option<Vec<u8>>,
    filter_text: Option<String>,
}

impl DisplayAs for PartWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let sinks: Vec<String> = self
            .sinks
            .iter()
            .map(|s| s.staging.display().to_string())
            .collect();
        write!(
            f,
            "PartWriteExec: chunk={}, sinks=[{}]",
            self.chunk,
            sinks.join(", ")
        )
    }
}

impl ExecutionPlan for PartWriteExec {
    fn name(&self) -> &'static str {
        "PartWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for s in &self.sinks {
            if let Some(e) = &s.target.filter
                && f(e)? == TreeNodeRecursion::Stop
            {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("PartWriteExec takes one child".to_string())
        })?;
        Ok(Arc::new(Self::try_new(
            input,
            self.chunk,
            self.rows_schema.clone(),
            self.sinks.clone(),
        )?))
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
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "PartWriteExec has one partition, not {partition}"
            )));
        }
        let input = self.input.execute(0, context)?;
        let write = WriteChunk {
            chunk: self.chunk,
            schema: self.rows_schema.clone(),
            sinks: self.sinks.clone(),
            attempt: uuid::Uuid::new_v4().simple().to_string(),
        };
        let span = tracing::info_span!("write chunk", chunk = self.chunk, attempt = %write.attempt);
        let stream = futures::stream::once(write.run(input).instrument(span));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            summary_schema(),
            stream,
        )))
    }
}

/// One attempt at writing a chunk.
struct WriteChunk {
    chunk: usize,
    schema: SchemaRef,
    sinks: Vec<SinkOnExecutor>,
    attempt: String,
}

impl WriteChunk {
    async fn run(self, mut input: SendableRecordBatchStream) -> DfResult<RecordBatch> {
        let mut writers = self
            .sinks
            .iter()
            .map(|s| {
                ChunkWriter::new(
                    s.target.clone(),
                    s.staging.clone(),
                    self.chunk,
                    self.schema.clone(),
                    None,
                )
                .map(|w| w.with_attempt(self.attempt.clone()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_datafusion)?;
        let mut counter = ChunkCounter::new(&self.schema);
        while let Some(batch) = input.next().await {
            let batch = batch?;
            counter.add(&batch);
            for w in writers.iter_mut() {
                w.write(&batch).map_err(to_datafusion)?;
            }
        }
        let mut parts = Vec::new();
        for (s, w) in writers.into_iter().enumerate() {
            for part in w.finish().map_err(to_datafusion)? {
                parts.push((s, part));
            }
        }
        summary_batch(&counter.counts, &parts, &self.sinks)
    }
}

/// A sink error as a DataFusion error Ballista classifies: I/O failures are I/O errors (which it
/// retries), the rest execution errors.
fn to_datafusion(e: PipelineError) -> DataFusionError {
    match e {
        PipelineError::Io { path, source } => DataFusionError::IoError(std::io::Error::new(
            source.kind(),
            format!("{}: {source}", path.display()),
        )),
        other => DataFusionError::Execution(other.user_message()),
    }
}

/// A chunk's scored rows counted: all, flagged (`is_anomaly`), scored null (`anomaly_score`: a
/// missing feature).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCounts {
    pub rows: u64,
    pub anomalies: u64,
    pub missing: u64,
}

/// Counts batches of scored rows (the same on every engine: in the chunk job locally, in
/// [`PartWriteExec`] on Ballista).
pub struct ChunkCounter {
    pub counts: ChunkCounts,
    score: Option<usize>,
    flag: Option<usize>,
}

impl ChunkCounter {
    pub fn new(schema: &Schema) -> ChunkCounter {
        ChunkCounter {
            counts: ChunkCounts::default(),
            score: schema.index_of("anomaly_score").ok(),
            flag: schema.index_of("is_anomaly").ok(),
        }
    }

    pub fn add(&mut self, batch: &RecordBatch) {
        self.counts.rows += batch.num_rows() as u64;
        if let Some(i) = self.flag {
            self.counts.anomalies += batch.column(i).as_boolean().true_count() as u64;
        }
        if let Some(i) = self.score {
            self.counts.missing += batch.column(i).null_count() as u64;
        }
    }
}

/// The rows a [`PartWriteExec`] yields: one per part file (`sink` set), then the chunk's totals
/// (`sink` null). Paths are relative to the sink's staging directory.
fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sink", DataType::UInt32, true),
        Field::new("temp", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("crc32", DataType::UInt32, false),
        Field::new("anomalies", DataType::UInt64, false),
        Field::new("missing", DataType::UInt64, false),
    ]))
}

fn relative(path: &Path, staging: &Path) -> DfResult<String> {
    path.strip_prefix(staging)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| {
            DataFusionError::Internal(format!(
                "part {} is outside its staging directory {}",
                path.display(),
                staging.display()
            ))
        })
}

fn summary_batch(
    totals: &ChunkCounts,
    parts: &[(usize, StagedPart)],
    sinks: &[SinkOnExecutor],
) -> DfResult<RecordBatch> {
    let mut sink = Vec::new();
    let mut temp = Vec::new();
    let mut path = Vec::new();
    let (mut rows, mut bytes, mut crc) = (Vec::new(), Vec::new(), Vec::new());
    for (s, p) in parts {
        let staging = &sinks[*s].staging;
        sink.push(Some(*s as u32));
        temp.push(Some(relative(&p.temp, staging)?));
        path.push(Some(relative(&p.part.path, staging)?));
        rows.push(p.part.rows);
        bytes.push(p.part.bytes);
        crc.push(p.part.crc32);
    }
    sink.push(None);
    temp.push(None);
    path.push(None);
    rows.push(totals.rows);
    bytes.push(0);
    crc.push(0);
    let n = rows.len();
    let mut anomalies = vec![0; n];
    let mut missing = vec![0; n];
    anomalies[n - 1] = totals.anomalies;
    missing[n - 1] = totals.missing;
    Ok(RecordBatch::try_new(
        summary_schema(),
        vec![
            Arc::new(UInt32Array::from(sink)),
            Arc::new(StringArray::from(temp)),
            Arc::new(StringArray::from(path)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(UInt32Array::from(crc)),
            Arc::new(UInt64Array::from(anomalies)),
            Arc::new(UInt64Array::from(missing)),
        ],
    )?)
}

/// What an executor wrote for one chunk, as the client reads it from [`PartWriteExec`]'s rows.
#[derive(Debug, Default)]
pub struct ChunkSummary {
    pub counts: ChunkCounts,
    /// (sink, part) with paths under the client's staging directories.
    pub parts: Vec<(usize, StagedPart)>,
}

impl ChunkSummary {
    /// Reads the summary rows; `stagings[s]` is sink `s`'s staging directory. Fails unless the
    /// totals row is there exactly once (a job that returned nothing did not write the chunk).
    pub fn from_batches(
        batches: &[RecordBatch],
        stagings: &[PathBuf],
    ) -> Result<ChunkSummary, String> {
        let mut out = ChunkSummary::default();
        let mut totals_rows = 0;
        for b in batches {
            let col = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| format!("the chunk summary has no column '{name}'"))
            };
            let not =
                |name: &str, kind: &str| format!("the chunk summary's '{name}' is not {kind}");
            let sink = col("sink")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| not("sink", "UInt32"))?;
            let temp = col("temp")?
                .as_string_opt::<i32>()
                .ok_or_else(|| not("temp", "Utf8"))?;
            let path = col("path")?
                .as_string_opt::<i32>()
                .ok_or_else(|| not("path", "Utf8"))?;
            let u64s = |name: &str| -> Result<&UInt64Array, String> {
                col(name)?
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| not(name, "UInt64"))
            };
            let (rows, bytes) = (u64s("rows")?, u64s("bytes")?);
            let (anomalies, missing) = (u64s("anomalies")?, u64s("missing")?);
            let crc = col("crc32")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| not("crc32", "UInt32"))?;
            for i in 0..b.num_rows() {
                if sink.is_null(i) {
                    totals_rows += 1;
                    out.counts.rows += rows.value(i);
                    out.counts.anomalies += anomalies.value(i);
                    out.counts.missing += missing.value(i);
                    continue;
                }
                let s = sink.value(i) as usize;
                let staging = stagings
                    .get(s)
                    .ok_or_else(|| format!("the chunk summary names sink {s}"))?;
                out.parts.push((
                    s,
                    StagedPart {
                        temp: within(staging, temp.value(i))?,
                        part: WrittenPart {
                            path: within(staging, path.value(i))?,
                            rows: rows.value(i),
                            bytes: bytes.value(i),
                            crc32: crc.value(i),
                        },
                    },
                ));
            }
        }
        if totals_rows != 1 {
            return Err(format!(
                "the chunk's job returned {totals_rows} summaries instead of 1"
            ));
        }
        Ok(out)
    }
}

/// `staging/relative`, for a path a cluster returned: only plain names, so nothing a scheduler
/// or executor says can make this process rename or remove a file elsewhere (SECURITY.md).
fn within(staging: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    let plain = !relative.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(staging.join(rel))
    } else {
        Err(format!(
            "the cluster returned the part path '{relative}', which is absolute or leaves the \
             staging directory {}; refused",
            staging.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::within;
    use std::path::Path;

    #[test]
    fn part_paths_from_a_cluster_stay_in_the_staging_directory() {
        let staging = Path::new("/data/.out.nomaly-staging");
        assert_eq!(
            within(staging, "seg=a/part-00003.parquet").unwrap(),
            staging.join("seg=a/part-00003.parquet")
        );
        for rogue in [
            "/etc/passwd",
            "../x.parquet",
            "a/../../b",
            "",
            "./a",
            "a/./../b",
        ] {
            let e = within(staging, rogue).unwrap_err();
            assert!(e.contains("refused"), "{rogue}: {e}");
        }
    }
}
