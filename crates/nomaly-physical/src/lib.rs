//! # nomaly-physical
//!
//! Nomaly's own DataFusion physical operators, one file each, with the rules that place them:
//!
//! | operator | placed by | what |
//! |---|---|---|
//! | [`FitScoreExec`] | [`FuseFitAndScore`] | fits and scores a detector in one read of its input (local sessions) |
//! | [`SegmentFitScoreExec`] | [`FuseSegmentFitAndScore`] | fits and scores `OVER (PARTITION BY ...)` one segment at a time, within the memory budget (local sessions) |
//! | [`ModelJoinExec`] | [`BroadcastModels`] | joins a fit's one model row to the rows it scores without copying the model per batch (cluster plans) |
//! | [`SlicedScanExec`] | [`keep_row_selections`] | keeps a chunk's Parquet row selections through the plan codec (Ballista) |
//!
//! The rules recognise the plans that `nomaly-udfs`' rewrite builds (fit aggregates named with
//! [`nomaly_udfs::fit_score_plan::MODEL_PREFIX`]), so this crate sits above the SQL crate and
//! below the engine, which installs the rules on the sessions it builds ([`optimizer_rules`]),
//! under the memory pool all of them share ([`budget_pool`]).
//! The pipeline's own operators (the part writer and the quarantining reader) stay with the
//! commit protocol and the chunk plan they serve, in `nomaly-pipeline`.

mod fit;
pub mod fit_score;
pub mod memory_pool;
pub mod model_join;
pub mod same_rows;
pub mod segment_fit_score;
pub mod sliced_scan;
#[cfg(test)]
mod test_util;

pub use fit_score::{FitScoreExec, FuseFitAndScore};
pub use memory_pool::budget_pool;
pub use model_join::{BroadcastModels, ModelJoinExec};
pub use segment_fit_score::{FuseSegmentFitAndScore, SegmentFitScoreExec};
pub use sliced_scan::{SlicedScanExec, keep_row_selections};

use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use std::sync::Arc;

/// DataFusion's physical optimizer rules with the per-segment fusion only, for plans a Ballista
/// cluster runs (a scheduler's session, a pipeline's segment plan): [`SegmentFitScoreExec`]
/// crosses the cluster's codec and keeps its partitions apart (the exchange by key below it is
/// a shuffle), while [`FitScoreExec`] would gather the whole input into one task.
pub fn cluster_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "EnsureRequirements")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(FuseSegmentFitAndScore));
    rules.push(Arc::new(BroadcastModels));
    rules
}

/// DataFusion's physical optimizer rules with Nomaly's two fusions for a local session:
/// [`FuseSegmentFitAndScore`] before `EnsureRequirements` (it replaces a hash join that rule
/// would otherwise wrap in exchanges) and [`FuseFitAndScore`] last.
pub fn optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = cluster_optimizer_rules();
    // One read for fit and score where the session spans every partition: the cross join stays
    // for FuseFitAndScore to find.
    rules.retain(|r| r.name() != BroadcastModels.name());
    rules.push(Arc::new(FuseFitAndScore));
    rules
}
