//! Ballista's physical codec with the operators of `nomaly-physical` that a cluster runs
//! ([`SegmentFitScoreExec`], [`SlicedScanExec`], [`ModelJoinExec`]) and the `synthetic_rows`
//! source ([`SyntheticRowsExec`]): what a SQL session's in-process scheduler and executor
//! (`standalone`) need. Pipelines add their part writer on top of it
//! (`nomaly_pipeline::physical_codec`), and `nomaly scheduler` / `executor` use that one.
//!
//! [`LogicalCodec`] is Ballista's logical codec with the one table of ours a client's SQL can
//! name (`synthetic_rows(...)`): clients send logical plans, which the scheduler plans.

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use nomaly_physical::{ModelJoinExec, SegmentFitScoreExec, SlicedScanExec};
use nomaly_udfs::synthetic_rows::{SyntheticRows, SyntheticRowsExec, SyntheticRowsTable};
use std::sync::Arc;

/// Marks a node of ours; Ballista's own nodes are protobuf messages, which never start with it.
const SLICED_SCAN_TAG: &[u8] = b"nomaly.SlicedScanExec.v1\0";
const SEGMENT_FIT_SCORE_TAG: &[u8] = b"nomaly.SegmentFitScoreExec.v1\0";
/// No payload: the operator is its two children.
const MODEL_JOIN_TAG: &[u8] = b"nomaly.ModelJoinExec.v1\0";
const SYNTHETIC_ROWS_TAG: &[u8] = b"nomaly.SyntheticRowsExec.v1\0";
/// A logical table scan's provider: the spec of `synthetic_rows(...)`.
const SYNTHETIC_TABLE_TAG: &[u8] = b"nomaly.SyntheticRowsTable.v1\0";

/// Ballista's physical codec with `nomaly-physical`'s operators.
#[derive(Debug, Default)]
pub struct OperatorCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl OperatorCodec {
    /// Decodes with `outer` for the operator's own expressions and children (so a codec that
    /// wraps this one decodes what it adds inside them too).
    pub fn decode_with(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
        outer: &dyn PhysicalExtensionCodec,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(rest) = buf.strip_prefix(SLICED_SCAN_TAG) {
            return Ok(Arc::new(SlicedScanExec::decode(rest, inputs)?));
        }
        if buf == MODEL_JOIN_TAG {
            return Ok(Arc::new(ModelJoinExec::from_children(inputs)?));
        }
        if let Some(rest) = buf.strip_prefix(SYNTHETIC_ROWS_TAG) {
            return Ok(Arc::new(SyntheticRowsExec::decode(rest, inputs)?));
        }
        if let Some(rest) = buf.strip_prefix(SEGMENT_FIT_SCORE_TAG) {
            return Ok(Arc::new(SegmentFitScoreExec::decode(
                rest, inputs, ctx, outer,
            )?));
        }
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    /// Encodes with `outer` for the operator's own expressions.
    pub fn encode_with(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
        outer: &dyn PhysicalExtensionCodec,
    ) -> DfResult<()> {
        if let Some(scan) = node.as_ref().downcast_ref::<SlicedScanExec>() {
            buf.extend_from_slice(SLICED_SCAN_TAG);
            return scan.encode(buf);
        }
        if node.as_ref().is::<ModelJoinExec>() {
            buf.extend_from_slice(MODEL_JOIN_TAG);
            return Ok(());
        }
        if let Some(rows) = node.as_ref().downcast_ref::<SyntheticRowsExec>() {
            buf.extend_from_slice(SYNTHETIC_ROWS_TAG);
            return rows.encode(buf);
        }
        if let Some(segments) = node.as_ref().downcast_ref::<SegmentFitScoreExec>() {
            buf.extend_from_slice(SEGMENT_FIT_SCORE_TAG);
            return segments.encode(buf, outer);
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }
}

impl PhysicalExtensionCodec for OperatorCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.decode_with(buf, inputs, ctx, proto_converter, self)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        self.encode_with(node, buf, proto_converter, self)
    }
}

/// Ballista's logical codec with the `synthetic_rows` table; everything else goes to Ballista's.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        if let Some(rest) = buf.strip_prefix(SYNTHETIC_TABLE_TAG) {
            let (spec, rest) = SyntheticRows::decode(rest)?;
            if !rest.is_empty() {
                return Err(datafusion::error::DataFusionError::Internal(format!(
                    "decoding table {table_ref}: {} bytes after its spec",
                    rest.len()
                )));
            }
            return Ok(Arc::new(SyntheticRowsTable::new(spec)));
        }
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(table) = node.as_ref().downcast_ref::<SyntheticRowsTable>() {
            buf.extend_from_slice(SYNTHETIC_TABLE_TAG);
            table.spec().encode(buf);
            return Ok(());
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}
