//! Ballista's physical codec with the operators of `nomaly-physical` that a cluster runs
//! ([`SegmentFitScoreExec`], [`SlicedScanExec`], [`ModelJoinExec`]): what a SQL session's in-process scheduler
//! and executor (`standalone`) need. Pipelines add their part writer on top of it
//! (`nomaly_pipeline::physical_codec`), and `nomaly scheduler` / `executor` use that one.

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use nomaly_physical::{ModelJoinExec, SegmentFitScoreExec, SlicedScanExec};
use std::sync::Arc;

/// Marks a node of ours; Ballista's own nodes are protobuf messages, which never start with it.
const SLICED_SCAN_TAG: &[u8] = b"nomaly.SlicedScanExec.v1\0";
const SEGMENT_FIT_SCORE_TAG: &[u8] = b"nomaly.SegmentFitScoreExec.v1\0";
/// No payload: the operator is its two children.
const MODEL_JOIN_TAG: &[u8] = b"nomaly.ModelJoinExec.v1\0";

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
