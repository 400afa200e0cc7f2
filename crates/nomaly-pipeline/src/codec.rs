//! The physical plan codec every process of a Nomaly cluster uses: Ballista's, plus the operators
//! of Nomaly's own that pipelines send to executors ([`PartWriteExec`], [`SlicedScanExec`],
//! [`SegmentFitScoreExec`]).
//!
//! The client encodes the plans it submits with it, the scheduler decodes them to split them into
//! stages and encodes the stages, and the executors decode the stages: all three must have it
//! (`nomaly scheduler`, `nomaly executor`, and the session of `engine = "standalone"` or
//! `"ballista://..."`).

use crate::sink_writer::PartWriteExec;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use nomaly_physical::{SegmentFitScoreExec, SlicedScanExec};
use std::sync::Arc;

/// Marks a node of ours; Ballista's own nodes are protobuf messages, which never start with it.
const PART_WRITE_TAG: &[u8] = b"nomaly.PartWriteExec.v1\0";
const SLICED_SCAN_TAG: &[u8] = b"nomaly.SlicedScanExec.v1\0";
const SEGMENT_FIT_SCORE_TAG: &[u8] = b"nomaly.SegmentFitScoreExec.v1\0";

/// Ballista's physical codec with Nomaly's operators.
#[derive(Debug, Default)]
pub struct NomalyPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

/// The codec, shared.
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(NomalyPhysicalCodec::default())
}

impl PhysicalExtensionCodec for NomalyPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(rest) = buf.strip_prefix(PART_WRITE_TAG) {
            return Ok(Arc::new(PartWriteExec::decode(rest, inputs, ctx, self)?));
        }
        if let Some(rest) = buf.strip_prefix(SLICED_SCAN_TAG) {
            return Ok(Arc::new(SlicedScanExec::decode(rest, inputs)?));
        }
        if let Some(rest) = buf.strip_prefix(SEGMENT_FIT_SCORE_TAG) {
            return Ok(Arc::new(SegmentFitScoreExec::decode(
                rest, inputs, ctx, self,
            )?));
        }
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(write) = node.as_ref().downcast_ref::<PartWriteExec>() {
            buf.extend_from_slice(PART_WRITE_TAG);
            return write.encode(buf, self);
        }
        if let Some(scan) = node.as_ref().downcast_ref::<SlicedScanExec>() {
            buf.extend_from_slice(SLICED_SCAN_TAG);
            return scan.encode(buf);
        }
        if let Some(segments) = node.as_ref().downcast_ref::<SegmentFitScoreExec>() {
            buf.extend_from_slice(SEGMENT_FIT_SCORE_TAG);
            return segments.encode(buf, self);
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }
}
