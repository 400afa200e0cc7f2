//! Whether two physical plans produce the same rows: the question the one-pass fusion asks of a
//! rewrite's fit side and scored side before it lets one read serve both.
//!
//! The two sides are planned separately from the same logical input, so they differ in which
//! columns they carry (projections, column positions, declared orderings) but, when nothing else
//! was pushed into one side alone, not in anything that decides rows. The comparison is
//! structural: each operator is compared through its own accessors (predicates, partitioning,
//! limits, files and byte ranges, in-memory batches), with expressions compared by column *name*
//! so that `f1@3` on one side equals `f1@0` on the other. An operator not listed here is never
//! "the same": the fusion then keeps the two-pass plan, which is always correct and only reads the
//! input twice.

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use std::sync::Arc;

/// Whether `a` and `b` read the same rows into the same number of partitions, ignoring which
/// columns they carry (see the module docs).
pub fn same_rows(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    let (a, b) = (skip_projections(a), skip_projections(b));
    if a.output_partitioning().partition_count() != b.output_partitioning().partition_count()
        || a.fetch() != b.fetch()
        || !same_operator(a, b)
    {
        return false;
    }
    let (ca, cb) = (a.children(), b.children());
    ca.len() == cb.len() && ca.iter().zip(&cb).all(|(x, y)| same_rows(x, y))
}

/// Projections only choose and compute columns; they never add, drop or move rows.
fn skip_projections(plan: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    match plan.as_ref().downcast_ref::<ProjectionExec>() {
        Some(p) => skip_projections(p.input()),
        None => plan,
    }
}

/// The node-level comparison: the same operator type with the same row-deciding settings.
/// Children are compared by the caller.
fn same_operator(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    macro_rules! both {
        ($t:ty) => {
            a.downcast_ref::<$t>().zip(b.downcast_ref::<$t>())
        };
    }
    if let Some((x, y)) = both!(DataSourceExec) {
        return same_source(x, y);
    }
    if let Some((x, y)) = both!(FilterExec) {
        return same_expr(x.predicate(), y.predicate());
    }
    if let Some((x, y)) = both!(RepartitionExec) {
        return same_partitioning(x.partitioning(), y.partitioning());
    }
    if let Some((x, y)) = both!(GlobalLimitExec) {
        return x.skip() == y.skip();
    }
    if let Some((x, y)) = both!(SortExec) {
        // With a fetch (top-k) the order decides which rows survive; without one it is harmless
        // but cheap to require.
        return same_ordering(x.expr(), y.expr())
            && x.preserve_partitioning() == y.preserve_partitioning();
    }
    if let Some((x, y)) = both!(SortPreservingMergeExec) {
        return same_ordering(x.expr(), y.expr());
    }
    // Operators whose only row-deciding setting is `fetch`, compared by the caller.
    both!(LocalLimitExec).is_some()
        || both!(CoalescePartitionsExec).is_some()
        || both!(CooperativeExec).is_some()
        || both!(UnionExec).is_some()
}

fn same_source(a: &DataSourceExec, b: &DataSourceExec) -> bool {
    let (a, b) = (a.data_source().as_ref(), b.data_source().as_ref());
    if let Some((x, y)) = a
        .downcast_ref::<FileScanConfig>()
        .zip(b.downcast_ref::<FileScanConfig>())
    {
        return same_files(x, y);
    }
    if let Some((x, y)) = a
        .downcast_ref::<MemorySourceConfig>()
        .zip(b.downcast_ref::<MemorySourceConfig>())
    {
        return same_batches(x.partitions(), y.partitions());
    }
    false
}

/// The same files, byte ranges and partition values in the same groups, the same format and
/// compression, and the same pushed-down predicate.
fn same_files(a: &FileScanConfig, b: &FileScanConfig) -> bool {
    let same_groups = a.file_groups.len() == b.file_groups.len()
        && a.file_groups.iter().zip(&b.file_groups).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(f, g)| {
                    f.object_meta.location == g.object_meta.location
                        && f.range == g.range
                        && f.partition_values == g.partition_values
                })
        });
    same_groups
        && a.object_store_url == b.object_store_url
        && a.limit == b.limit
        && a.file_compression_type == b.file_compression_type
        && a.file_source.file_type() == b.file_source.file_type()
        && match (a.file_source.filter(), b.file_source.filter()) {
            (None, None) => true,
            (Some(x), Some(y)) => same_expr(&x, &y),
            _ => false,
        }
}

/// In-memory partitions with equal batches. The two sides of a scan of one table share the
/// table's arrays (a pointer comparison); `VALUES` lists are built once per side, so their
/// batches are compared by value.
fn same_batches(a: &[Vec<RecordBatch>], b: &[Vec<RecordBatch>]) -> bool {
    let same_batch = |x: &RecordBatch, y: &RecordBatch| {
        x.num_rows() == y.num_rows()
            && x.num_columns() == y.num_columns()
            && x.columns()
                .iter()
                .zip(y.columns())
                .all(|(p, q)| Arc::ptr_eq(p, q) || p.as_ref() == q.as_ref())
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_batch(p, q)))
}

fn same_partitioning(a: &Partitioning, b: &Partitioning) -> bool {
    match (a, b) {
        (Partitioning::RoundRobinBatch(x), Partitioning::RoundRobinBatch(y)) => x == y,
        (Partitioning::Hash(xs, x), Partitioning::Hash(ys, y)) => {
            x == y && xs.len() == ys.len() && xs.iter().zip(ys).all(|(p, q)| same_expr(p, q))
        }
        (Partitioning::UnknownPartitioning(x), Partitioning::UnknownPartitioning(y)) => x == y,
        _ => false,
    }
}

fn same_ordering(a: &LexOrdering, b: &LexOrdering) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.options == y.options && same_expr(&x.expr, &y.expr))
}

/// Expressions equal up to column positions: every column is compared by its name.
fn same_expr(a: &Arc<dyn PhysicalExpr>, b: &Arc<dyn PhysicalExpr>) -> bool {
    match (by_name(a), by_name(b)) {
        (Some(x), Some(y)) => x.as_ref() == y.as_ref(),
        _ => false,
    }
}

/// `expr` with every column's position set to 0, so that only names remain.
fn by_name(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform(|e| match e.as_ref().downcast_ref::<Column>() {
            Some(c) => Ok(Transformed::yes(
                Arc::new(Column::new(c.name(), 0)) as Arc<dyn PhysicalExpr>
            )),
            None => Ok(Transformed::no(e)),
        })
        .ok()
        .map(|t| t.data)
}
