//! What the operators' tests share: sessions with and without the fusions, an in-memory table
//! split into any number of partitions, an operator found in a plan, and results as sorted rows.

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

/// A local session reading `partitions` partitions, with Nomaly's functions and, when `fused`,
/// the physical rules of this crate; `memory_limit` bytes of pool when given.
pub(crate) fn session(
    fused: bool,
    partitions: usize,
    memory_limit: Option<usize>,
) -> SessionContext {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = memory_limit {
        runtime = runtime.with_memory_pool(crate::budget_pool(bytes));
    }
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(256);
    if let Some(bytes) = memory_limit {
        // A sort's merge reserves 10 MB by default, more than these budgets hold.
        config.options_mut().execution.sort_spill_reservation_bytes = bytes / 8;
    }
    let mut builder = nomaly_udfs::with_nomaly(
        SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc().expect("runtime"))
            .with_default_features(),
    );
    if fused {
        builder = builder.with_physical_optimizer_rules(crate::optimizer_rules());
    }
    SessionContext::new_with_state(builder.build())
}

/// Registers table `t`: `rows` rows in `partitions` partitions of 100-row batches dealt in turn,
/// with `id`, the segment `k` (`id % segments`) and a value `x` spread over 0..101 with every 97th
/// row far out.
pub(crate) fn register_rows(ctx: &SessionContext, rows: usize, partitions: usize, segments: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Utf8, false),
        Field::new("x", DataType::Float64, false),
    ]));
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (n, start) in (0..rows).step_by(100).enumerate() {
        let ids: Vec<i64> = (start..rows.min(start + 100)).map(|i| i as i64).collect();
        let keys: Vec<String> = ids
            .iter()
            .map(|i| format!("s{}", i % segments as i64))
            .collect();
        let xs: Vec<f64> = ids
            .iter()
            .map(|i| {
                if i % 97 == 0 {
                    1e4
                } else {
                    ((i * 37) % 101) as f64
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(keys)),
                Arc::new(Float64Array::from(xs)),
            ],
        )
        .expect("batch");
        parts[n % partitions].push(batch);
    }
    let table = MemTable::try_new(schema, parts).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
}

/// The physical plan of `sql`.
pub(crate) async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    let df = ctx.sql(sql).await.expect("logical plan");
    df.create_physical_plan().await.expect("physical plan")
}

/// The first node named `name`, depth first.
pub(crate) fn find(plan: &Arc<dyn ExecutionPlan>, name: &str) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.name() == name {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(|c| find(c, name))
}

/// Every row of `plan`'s output as `cell|cell|...`, sorted: the same multiset of rows, whatever
/// the partitioning and order (floats print round-trip exact, so equal text is equal bits).
pub(crate) async fn sorted_rows(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
) -> Result<Vec<String>> {
    let batches = collect(plan, ctx.task_ctx()).await?;
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let cells = (0..b.num_columns())
                .map(|c| array_value_to_string(b.column(c), i))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    Ok(rows)
}

/// `sql` run fused (its operator `operator`, found in the plan) and as the two-pass plan, each in
/// a fresh session over `rows` rows in `partitions` partitions and `segments` segments: the
/// operator, the fused rows and the two-pass rows, each sorted.
pub(crate) async fn fused_and_two_pass(
    operator: &str,
    sql: &str,
    (rows, partitions, segments): (usize, usize, usize),
    memory_limit: Option<usize>,
) -> (Arc<dyn ExecutionPlan>, Vec<String>, Vec<String>) {
    let fused = session(true, partitions, memory_limit);
    register_rows(&fused, rows, partitions, segments);
    let fused_plan = plan(&fused, sql).await;
    let op = find(&fused_plan, operator).expect("the fused operator");
    let got = sorted_rows(fused_plan, &fused)
        .await
        .expect("the fused plan runs");
    let two = session(false, partitions, None);
    register_rows(&two, rows, partitions, segments);
    let expected = sorted_rows(plan(&two, sql).await, &two)
        .await
        .expect("the two-pass plan runs");
    (op, got, expected)
}

/// The sum of metric `name` over `plan`'s partitions, if it was recorded.
pub(crate) fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> Option<usize> {
    plan.metrics()?.sum_by_name(name).map(|v| v.as_usize())
}

/// Puts `op` over an input whose `partitions` streams never yield, polls its partition
/// `partition` briefly (nothing may come out), drops the output, and passes when every stream
/// of the input has been dropped: the operator's work on it was cancelled, spawned tasks too.
pub(crate) async fn assert_dropping_the_output_releases_the_input(
    op: Arc<dyn ExecutionPlan>,
    partitions: usize,
    partition: usize,
    ctx: &SessionContext,
) {
    use datafusion::physical_plan::execution_plan::{
        ChildrenPropertiesMode, ReplaceChildrenOptions,
    };
    use datafusion::physical_plan::test::exec::{
        BlockingExec, assert_strong_count_converges_to_zero,
    };
    use futures::StreamExt;
    let blocking = Arc::new(BlockingExec::new(op.children()[0].schema(), partitions));
    let refs = blocking.refs();
    let op = op
        .replace_children(
            vec![blocking],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .expect("the operator over the blocking input");
    let mut stream = op.execute(partition, ctx.task_ctx()).expect("a stream");
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), stream.next()).await;
    assert!(
        waited.is_err(),
        "{} yielded over a blocked input",
        op.name()
    );
    drop(stream);
    drop(op);
    assert_strong_count_converges_to_zero(refs).await;
}
