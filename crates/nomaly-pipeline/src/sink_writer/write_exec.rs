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
use super::chunk_summary::{ChunkCounter, summary_batch, summary_schema};
use super::part::ChunkWriter;
use crate::error::PipelineError;
use crate::spec::{FileFormat, WriteMode};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
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
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument;

/// One sink as an executor writes it.
#[derive(Debug, Clone)]
pub struct SinkOnExecutor {
    pub target: Arc<SinkTarget>,
    /// The sink's staging directory, absolute: executors have working directories of their own.
    pub staging: PathBuf,
    /// For an output in an object store: the staging prefix the executor puts each part into
    /// (under the name it has in `staging`), so that no directory is shared.
    pub upload_to: Option<String>,
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
                    upload_to: s.upload_to.clone(),
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
                        remote: None,
                        format: s.format,
                        partition_by: s.partition_by,
                        mode: WriteMode::default(),
                        filter,
                        filter_text: s.filter_text,
                    }),
                    staging: s.staging,
                    upload_to: s.upload_to,
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
    upload_to: Option<String>,
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
        if let Ok(Some(faults)) = crate::faults::FaultPlan::from_env()
            && let Some(delay) = faults.part_delay
        {
            tokio::time::sleep(delay).await;
        }
        let mut writers = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                ChunkWriter::new(
                    s.target.clone(),
                    self.local_staging(i, s),
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
            let staged = w.finish().map_err(to_datafusion)?;
            let sink = &self.sinks[s];
            let staged = match &sink.upload_to {
                Some(prefix) => {
                    let scratch = self.local_staging(s, sink);
                    let placed = super::remote::put_parts(staged, &scratch, prefix, &sink.staging)
                        .await
                        .map_err(to_datafusion);
                    let _ = std::fs::remove_dir_all(&scratch);
                    placed?
                }
                None => staged,
            };
            parts.extend(staged.into_iter().map(|p| (s, p)));
        }
        summary_batch(&counter.counts, &parts, &self.sinks)
    }

    /// Where sink `i`'s parts are written here: its staging directory, or for a sink uploaded to
    /// an object store a scratch directory of this attempt's.
    fn local_staging(&self, i: usize, s: &SinkOnExecutor) -> PathBuf {
        match s.upload_to {
            Some(_) => std::env::temp_dir().join(format!("nomaly-parts-{}-{i}", self.attempt)),
            None => s.staging.clone(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::NomalyPhysicalCodec;
    use crate::sink_writer::{ChunkCounts, ChunkSummary};
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;
    use std::path::Path;
    use std::time::Duration;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("seg", DataType::Utf8, false),
            Field::new("anomaly_score", DataType::Float64, true),
            Field::new("is_anomaly", DataType::Boolean, true),
        ]))
    }

    /// Rows `from ..< from + n`: segment a/b by parity, the score null every 10th row, flagged
    /// every 7th.
    fn scored(from: i64, n: i64) -> RecordBatch {
        let ids: Vec<i64> = (from..from + n).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| if i % 2 == 0 { "a" } else { "b" }),
                )),
                Arc::new(Float64Array::from_iter(
                    ids.iter().map(|&i| (i % 10 != 0).then_some(i as f64)),
                )),
                Arc::new(BooleanArray::from_iter(
                    ids.iter().map(|i| Some(i % 7 == 0)),
                )),
            ],
        )
        .unwrap()
    }

    fn sink(dir: &Path, name: &str, format: FileFormat, partition_by: &[&str]) -> SinkOnExecutor {
        SinkOnExecutor {
            target: Arc::new(SinkTarget {
                label: format!("[[sink]] {name}"),
                path: dir.join(name),
                remote: None,
                format,
                partition_by: partition_by.iter().map(|c| c.to_string()).collect(),
                mode: WriteMode::default(),
                filter: None,
                filter_text: None,
            }),
            staging: dir.join(format!(".{name}.nomaly-staging")),
            upload_to: None,
        }
    }

    fn rows_in(partitions: Vec<Vec<RecordBatch>>) -> Arc<dyn ExecutionPlan> {
        MemorySourceConfig::try_new_exec(&partitions, schema(), None).unwrap()
    }

    /// Runs the node and reads its summary back as the client does.
    async fn write(input: Arc<dyn ExecutionPlan>, sinks: Vec<SinkOnExecutor>) -> ChunkSummary {
        let stagings: Vec<PathBuf> = sinks.iter().map(|s| s.staging.clone()).collect();
        let node = Arc::new(PartWriteExec::try_new(input, 3, schema(), sinks).unwrap());
        let batches = collect(node, SessionContext::new().task_ctx())
            .await
            .unwrap();
        ChunkSummary::from_batches(&batches, &stagings).unwrap()
    }

    /// Files under `dir`, recursively, as paths relative to it.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn empty_input_writes_one_empty_part() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = vec![sink(dir.path(), "out", FileFormat::Parquet, &[])];
        let summary = write(rows_in(vec![vec![]]), sinks).await;
        assert_eq!(summary.counts, ChunkCounts::default());
        // One part with the schema and no rows: a reader of the output still sees its columns.
        let [(0, part)] = &summary.parts[..] else {
            panic!("{:?}", summary.parts)
        };
        assert_eq!(part.part.rows, 0);
        assert_eq!(
            std::fs::metadata(&part.temp).unwrap().len(),
            part.part.bytes
        );
    }

    /// Every row lands once in every sink (one part, or one per partition directory), under an
    /// attempt's temp name, with the size and checksum the summary reports.
    #[tokio::test]
    async fn every_row_is_written_once_per_sink_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = vec![
            sink(dir.path(), "out", FileFormat::Parquet, &[]),
            sink(dir.path(), "bySeg", FileFormat::Csv, &["seg"]),
        ];
        let input = rows_in(vec![vec![scored(0, 600), scored(600, 400)]]);
        let summary = write(input, sinks).await;
        let flagged = (0..1000).filter(|i| i % 7 == 0).count() as u64;
        let counts = ChunkCounts {
            rows: 1000,
            anomalies: flagged,
            missing: 100,
        };
        assert_eq!(summary.counts, counts);
        let mut per_sink = [0u64; 2];
        for (s, p) in &summary.parts {
            per_sink[*s] += p.part.rows;
            let bytes = std::fs::read(&p.temp).unwrap();
            assert_eq!(bytes.len() as u64, p.part.bytes);
            assert_eq!(crc32fast::hash(&bytes), p.part.crc32);
            let name = p.temp.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                name.starts_with(".part-00003.") && name.ends_with(".tmp"),
                "{name}"
            );
        }
        assert_eq!(per_sink, [1000, 1000]);
        let partitioned: Vec<String> = summary
            .parts
            .iter()
            .filter(|(s, _)| *s == 1)
            .map(|(_, p)| {
                p.part
                    .path
                    .strip_prefix(dir.path().join(".bySeg.nomaly-staging"))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            partitioned,
            ["seg=a/part-00003.csv", "seg=b/part-00003.csv"]
        );
    }

    /// A chunk is one partition: a wider input, a relative staging path and any partition but 0
    /// are refused.
    #[tokio::test]
    async fn only_one_partition_with_absolute_staging_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let out = || vec![sink(dir.path(), "out", FileFormat::Parquet, &[])];
        let two = rows_in(vec![vec![scored(0, 5)], vec![scored(5, 5)]]);
        let err = PartWriteExec::try_new(two, 0, schema(), out()).unwrap_err();
        assert!(
            err.to_string().contains("its input has 2 partitions"),
            "{err}"
        );
        let mut relative = out();
        relative[0].staging = PathBuf::from("rel/staging");
        let err = PartWriteExec::try_new(rows_in(vec![vec![]]), 0, schema(), relative);
        assert!(err.unwrap_err().to_string().contains("absolute staging"));
        let node = PartWriteExec::try_new(rows_in(vec![vec![]]), 0, schema(), out()).unwrap();
        assert_eq!(node.properties().partitioning.partition_count(), 1);
        let err = node
            .execute(1, SessionContext::new().task_ctx())
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("one partition, not 1"), "{err}");
    }

    /// The writer streams: a chunk of ~4 MB is written under a 256 KiB pool.
    #[tokio::test]
    async fn it_streams_under_a_pool_smaller_than_the_chunk() {
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<RecordBatch> = (0..50).map(|b| scored(b * 4000, 4000)).collect();
        let input = rows_in(vec![batches]);
        let sinks = vec![sink(dir.path(), "out", FileFormat::Parquet, &[])];
        let staging = sinks[0].staging.clone();
        let node = Arc::new(PartWriteExec::try_new(input, 3, schema(), sinks).unwrap());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(256 << 10, 1.0)
            .build_arc();
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime.unwrap());
        let batches = collect(node, ctx.task_ctx()).await.unwrap();
        let summary = ChunkSummary::from_batches(&batches, &[staging]).unwrap();
        assert_eq!(summary.counts.rows, 200_000);
    }

    /// Rows, then a wait that never ends.
    #[derive(Debug)]
    struct RowsThenWait;

    impl PartitionStream for RowsThenWait {
        fn schema(&self) -> &SchemaRef {
            static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
            SCHEMA.get_or_init(schema)
        }

        fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
            let rows =
                futures::stream::iter([Ok(scored(0, 100))]).chain(futures::stream::pending());
            Box::pin(RecordBatchStreamAdapter::new(schema(), rows))
        }
    }

    /// A write cancelled mid-chunk (its output dropped) leaves no file in staging.
    #[tokio::test]
    async fn a_cancelled_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = vec![sink(dir.path(), "out", FileFormat::Parquet, &[])];
        let staging = sinks[0].staging.clone();
        let input: Vec<Arc<dyn PartitionStream>> = vec![Arc::new(RowsThenWait)];
        let input = StreamingTableExec::try_new(schema(), input, None, [], false, None).unwrap();
        let node = PartWriteExec::try_new(Arc::new(input), 3, schema(), sinks).unwrap();
        let mut out = node.execute(0, SessionContext::new().task_ctx()).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), out.next()).await;
        assert!(waited.is_err(), "the write finished over an endless input");
        let written = files(&staging);
        assert_eq!(written.len(), 1, "one part was being written: {written:?}");
        drop(out);
        assert_eq!(files(&staging), Vec::<String>::new());
    }

    /// The codec carries the node, its sinks and their filters to an executor unchanged.
    #[tokio::test]
    async fn the_codec_carries_sinks_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let mut filtered = sink(dir.path(), "flagged", FileFormat::Ndjson, &["seg"]);
        let target = Arc::make_mut(&mut filtered.target);
        target.filter = Some(col("is_anomaly", &schema()).unwrap());
        target.filter_text = Some("is_anomaly".into());
        let sinks = vec![sink(dir.path(), "out", FileFormat::Parquet, &[]), filtered];
        let input = rows_in(vec![vec![scored(0, 70)]]);
        let node = PartWriteExec::try_new(Arc::clone(&input), 4, schema(), sinks).unwrap();
        let codec = NomalyPhysicalCodec::default();
        let mut buf = Vec::new();
        node.encode(&mut buf, &codec).unwrap();
        let ctx = SessionContext::new();
        let back = PartWriteExec::decode(&buf, &[input], &ctx.task_ctx(), &codec).unwrap();
        let shown = |n: &PartWriteExec| displayable(n).one_line().to_string();
        assert_eq!(shown(&back), shown(&node));
        assert_eq!(back.schema(), node.schema());
        assert_eq!(back.sinks[1].target.format, FileFormat::Ndjson);
        assert_eq!(back.sinks[1].target.partition_by, ["seg"]);
        let filter = back.sinks[1].target.filter.as_ref().map(|f| f.to_string());
        assert_eq!(filter.as_deref(), Some("is_anomaly@3"));
        let err = PartWriteExec::decode(&buf[..buf.len() / 2], &[], &ctx.task_ctx(), &codec);
        assert!(
            err.map(|_| ())
                .unwrap_err()
                .to_string()
                .contains("decoding PartWriteExec")
        );
    }
}
