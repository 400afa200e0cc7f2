//! The physical plan codec every process of a Nomaly cluster uses: Ballista's, plus the operators
//! of Nomaly's own that pipelines send to executors ([`PartWriteExec`], [`SlicedScanExec`],
//! [`SegmentFitScoreExec`]).
//!
//! The client encodes the plans it submits with it, the scheduler decodes them to split them into
//! stages and encodes the stages, and the executors decode the stages: all three must have it
//! (`nomaly scheduler`, `nomaly executor`, and the session of `engine = "standalone"` or
//! `"ballista://..."`).

use crate::sink_writer::PartWriteExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use nomaly_engine::ballista::codec::OperatorCodec;
use std::sync::Arc;

/// Marks a node of ours; Ballista's own nodes are protobuf messages, which never start with it.
const PART_WRITE_TAG: &[u8] = b"nomaly.PartWriteExec.v1\0";

/// Ballista's physical codec with Nomaly's operators: the engine's ([`OperatorCodec`]) and the
/// pipelines' part writer.
#[derive(Debug, Default)]
pub struct NomalyPhysicalCodec {
    operators: OperatorCodec,
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
        self.operators
            .decode_with(buf, inputs, ctx, proto_converter, self)
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
        self.operators.encode_with(node, buf, proto_converter, self)
    }
}
