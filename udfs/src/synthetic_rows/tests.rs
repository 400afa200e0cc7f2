//! The operator: the same rows for any partitioning, a restricted plan makes only its slice,
//! and decoding refuses what it cannot trust.

use super::exec::split_rows;
use super::{SyntheticRows, SyntheticRowsExec};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

fn spec() -> SyntheticRows {
    SyntheticRows::new(10_007, 3, 11, 0.02).unwrap()
}

async fn sorted_table(partitions: usize) -> String {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(333);
    let ctx = SessionContext::new_with_config(config);
    crate::register_all(&ctx).unwrap();
    let batches = ctx
        .sql("SELECT * FROM synthetic_rows(10007, 3, 11, 0.02) ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn the_rows_do_not_depend_on_the_partitioning() {
    let one = sorted_table(1).await;
    assert_eq!(one.lines().count(), 10_007 + 4);
    for partitions in [2, 7, 16] {
        assert!(
            one == sorted_table(partitions).await,
            "{partitions} partitions differ"
        );
    }
}

async fn ids(plan: Arc<dyn ExecutionPlan>) -> Vec<i64> {
    let batches = collect(plan, SessionContext::new().task_ctx())
        .await
        .unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_plan_restricted_to_some_partitions_makes_only_their_rows() {
    // What a Ballista scheduler does to a task's copy of a stage: keep partitions 1 and 3 of 4.
    let whole = split_rows(spec().rows, 4).unwrap();
    let exec = SyntheticRowsExec::try_new(spec(), whole, Some(vec![0]), 100).unwrap();
    assert_eq!(exec.properties().partitioning.partition_count(), 4);
    let memory = |p: &Arc<dyn ExecutionPlan>| -> Vec<Vec<RecordBatch>> {
        let source = p
            .downcast_ref::<datafusion::datasource::source::DataSourceExec>()
            .unwrap();
        let config = source
            .data_source()
            .as_ref()
            .downcast_ref::<MemorySourceConfig>()
            .unwrap();
        config.partitions().to_vec()
    };
    let all = memory(exec.children()[0]);
    let kept = vec![all[1].clone(), all[3].clone()];
    let restricted = MemorySourceConfig::try_new_exec(&kept, all[0][0].schema(), None).unwrap();
    let exec = Arc::new(exec)
        .replace_children(
            vec![restricted],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .unwrap();
    assert_eq!(exec.output_partitioning().partition_count(), 2);
    let got = ids(exec).await;
    let want: Vec<i64> = (2_501..5_003).chain(7_505..10_007).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_plan_survives_encoding_and_decoding() {
    let exec = SyntheticRowsExec::try_new(
        spec(),
        split_rows(spec().rows, 3).unwrap(),
        Some(vec![2, 0]),
        500,
    )
    .unwrap();
    let mut buf = Vec::new();
    exec.encode(&mut buf).unwrap();
    let children = vec![Arc::clone(exec.children()[0])];
    let decoded = SyntheticRowsExec::decode(&buf, &children).unwrap();
    assert_eq!(decoded.spec(), exec.spec());
    assert_eq!(decoded.schema(), exec.schema());
    let batches = collect(Arc::new(decoded), SessionContext::new().task_ctx())
        .await
        .unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 10_007);
    assert_eq!(batches[0].schema().field(0).name(), "f1");
    let first = batches[0].column(0).as_primitive::<Float64Type>().value(0);
    assert_eq!(first, super::values::value(11, 0, 1, 0.02));

    // Every shortened buffer is an error, not a panic.
    for cut in 0..buf.len() {
        let err = SyntheticRowsExec::decode(&buf[..cut], &children).unwrap_err();
        assert!(err.to_string().contains("synthetic_rows"), "{err}");
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert!(SyntheticRowsExec::decode(&longer, &children).is_err());
    assert!(SyntheticRowsExec::decode(&buf, &[]).is_err());
    // A projection past the schema, an absurd batch, too many features: refused.
    let mut bad = Vec::new();
    spec().encode(&mut bad);
    bad.extend_from_slice(&500u32.to_le_bytes());
    bad.extend_from_slice(&1u32.to_le_bytes());
    bad.extend_from_slice(&9u32.to_le_bytes());
    assert!(
        SyntheticRowsExec::decode(&bad, &children)
            .unwrap_err()
            .to_string()
            .contains("column 9")
    );
    let mut huge = buf.clone();
    huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(SyntheticRowsExec::decode(&huge, &children).is_err());
    let mut wide = buf.clone();
    wide[8..12].copy_from_slice(&5_000u32.to_le_bytes());
    assert!(SyntheticRowsExec::decode(&wide, &children).is_err());
}

#[tokio::test]
async fn ranges_outside_the_table_are_an_error() {
    let bad = split_rows(20_000, 2).unwrap();
    let exec = SyntheticRowsExec::try_new(spec(), bad, Some(vec![0]), 100).unwrap();
    let err = collect(Arc::new(exec), SessionContext::new().task_ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outside 0..10007"), "{err}");
}
