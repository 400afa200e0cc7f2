//! [`SegmentFitScoreExec`] as bytes, for a Ballista cluster's codec: the key and the fits'
//! arguments as DataFusion's protobuf expressions (over the operator's input), each fit as its
//! aggregate's name and alias (rebuilt from the receiving process's registry: functions travel
//! by name), and the replaced join's schemas and projection.

use super::{SegmentFitScoreExec, SegmentJoin};
use crate::fit::Fit;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::registry::FunctionRegistry;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
struct Payload {
    keys: Vec<Vec<u8>>,
    fits: Vec<FitPayload>,
    left: Vec<u8>,
    projection: Option<Vec<usize>>,
    schema: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct FitPayload {
    function: String,
    alias: String,
    args: Vec<Vec<u8>>,
}

fn bad(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("decoding SegmentFitScoreExec: {e}"))
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    Ok(datafusion_proto::protobuf::Schema::try_from(schema)?.encode_to_vec())
}

fn schema_of(bytes: &[u8]) -> Result<SchemaRef> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes).map_err(bad)?;
    Ok(Arc::new(Schema::try_from(&proto)?))
}

impl SegmentFitScoreExec {
    /// Appends the operator (not its input, which the codec's caller carries) to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>, codec: &dyn PhysicalExtensionCodec) -> Result<()> {
        let expr = |e: &Arc<dyn PhysicalExpr>| -> Result<Vec<u8>> {
            Ok(serialize_physical_expr(e, codec)?.encode_to_vec())
        };
        let payload = Payload {
            keys: self.keys.iter().map(expr).collect::<Result<_>>()?,
            fits: self
                .fits
                .iter()
                .map(|f| {
                    Ok(FitPayload {
                        function: f.aggregate.fun().name().to_string(),
                        alias: f.aggregate.name().to_string(),
                        args: f.args.iter().map(expr).collect::<Result<_>>()?,
                    })
                })
                .collect::<Result<_>>()?,
            left: schema_bytes(&self.join.left)?,
            projection: self.join.projection.as_ref().map(|p| p.to_vec()),
            schema: schema_bytes(&self.join.schema)?,
        };
        let bytes = postcard::to_stdvec(&payload)
            .map_err(|e| DataFusionError::Internal(format!("encoding SegmentFitScoreExec: {e}")))?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    /// The operator [`Self::encode`] wrote, over its decoded input.
    pub fn decode(
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<Self> {
        let payload: Payload = postcard::from_bytes(buf).map_err(bad)?;
        let [input] = inputs else {
            return Err(bad(format!("it takes one child, got {}", inputs.len())));
        };
        let schema = input.schema();
        let expr = |bytes: &Vec<u8>| -> Result<Arc<dyn PhysicalExpr>> {
            let node = PhysicalExprNode::decode(bytes.as_slice()).map_err(bad)?;
            parse_physical_expr(&node, ctx, &schema, codec)
        };
        let keys = payload.keys.iter().map(expr).collect::<Result<Vec<_>>>()?;
        let fits = payload
            .fits
            .iter()
            .map(|f| {
                let args = f.args.iter().map(expr).collect::<Result<Vec<_>>>()?;
                let function = ctx.udaf(&f.function)?;
                let aggregate = AggregateExprBuilder::new(function, args.clone())
                    .schema(Arc::clone(&schema))
                    .alias(&f.alias)
                    .build()?;
                Ok(Fit {
                    aggregate: Arc::new(aggregate),
                    args,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let join = SegmentJoin {
            left: schema_of(&payload.left)?,
            projection: payload.projection.map(Arc::from),
            schema: schema_of(&payload.schema)?,
        };
        Ok(SegmentFitScoreExec::new(
            Arc::clone(input),
            keys,
            fits,
            join,
        ))
    }
}
