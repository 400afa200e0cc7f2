//! `detect_anomalies(...) OVER (PARTITION BY k)` on the local engine: `SegmentFitScoreExec` fits and
//! scores one segment at a time over rows sorted by the key. It must score exactly like the
//! fit-aggregate → join plan, and hold one segment's model at a time where the join held them all.

use super::physical;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use nomaly_engine::{EngineConfig, build_context};
use std::path::Path;

/// `rows` rows in `segments` segments (a NULL segment among them), written once to Parquet.
async fn write_table(dir: &Path, rows: u64, segments: u64) -> String {
    let file = dir.join(format!("seg_{rows}_{segments}.parquet"));
    let ctx = SessionContext::new();
    let copy = format!(
        "COPY (SELECT value AS id, \
           CASE WHEN value % {segments} = 0 THEN NULL ELSE value % {segments} END AS k, \
           CAST((value * 7919) % 1000 AS DOUBLE) / 10.0 AS a, \
           CAST((value * 104729) % 977 AS DOUBLE) AS b \
         FROM generate_series(1, {rows})) TO '{}' STORED AS PARQUET",
        file.display()
    );
    ctx.sql(&copy).await.unwrap().collect().await.unwrap();
    file.to_string_lossy().into_owned()
}

async fn session(file: &str, one_pass: bool, memory_limit: Option<usize>) -> SessionContext {
    let config = EngineConfig {
        one_pass,
        memory_limit,
        ..Default::default()
    };
    super::session_with_table(config, std::path::Path::new(file)).await
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    df.collect().await.map_err(|e| e.to_string())
}

fn query(algorithm: &str) -> String {
    format!(
        "SELECT id, k, a.score, a.is_anomaly FROM \
         (SELECT id, k, detect_anomalies('{algorithm}', a, b) OVER (PARTITION BY k) AS a FROM t) \
         ORDER BY id"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_score_like_the_join_plan_one_model_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_table(dir.path(), 40_000, 400).await;
    let fused = session(&file, true, None).await;
    let joined = session(&file, false, None).await;
    for algorithm in ["iforest", "ecod", "hbos", "zscore"] {
        let sql = query(algorithm);
        let plan = physical(&fused, &sql).await;
        assert!(plan.contains("SegmentFitScoreExec"), "{plan}");
        assert!(!plan.contains("HashJoinExec"), "{plan}");
        let plan = physical(&joined, &sql).await;
        assert!(plan.contains("HashJoinExec"), "{plan}");
        let got = rows(&fused, &sql).await.unwrap();
        let expected = rows(&joined, &sql).await.unwrap();
        let (got, expected) = (
            pretty_format_batches(&got).unwrap().to_string(),
            pretty_format_batches(&expected).unwrap().to_string(),
        );
        assert_eq!(got.lines().count(), 40_000 + 4, "{algorithm}");
        assert!(
            got == expected,
            "{algorithm}: segment scores differ from the join plan's"
        );
    }
}

/// 400 iforest models (100 trees each) do not fit a 24 MB budget all at once, which the join's
/// build side needs; one at a time they do. The fused operator reserves each segment's rows, its
/// fit state and the models waiting for a full batch, so an operator that kept every model would
/// exceed the budget here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_segment_models_stay_within_a_budget_the_join_exceeds() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_table(dir.path(), 40_000, 400).await;
    let budget = Some(24 << 20);
    let sql = query("iforest");
    let joined = rows(&session(&file, false, budget).await, &sql).await;
    let err = joined.expect_err("the join plan holds every model at once");
    assert!(err.contains("Resources exhausted"), "{err}");
    let fused = rows(&session(&file, true, budget).await, &sql)
        .await
        .unwrap();
    assert_eq!(
        fused.iter().map(RecordBatch::num_rows).sum::<usize>(),
        40_000
    );
}

/// A single segment larger than the budget fails naming the segment and the fix. The table is
/// declared sorted by the key and read as one partition, so no sort (whose own merge memory would
/// race the operator for a budget this small) runs below the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_larger_than_the_budget_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sorted.parquet");
    let copy = format!(
        "COPY (SELECT value AS id, CASE WHEN value % 2 = 0 THEN NULL ELSE 1 END AS k, \
           CAST(value % 1000 AS DOUBLE) AS a, CAST(value % 977 AS DOUBLE) AS b \
         FROM generate_series(1, 1000000) ORDER BY k ASC NULLS FIRST, id) \
         TO '{}' STORED AS PARQUET",
        file.display()
    );
    let writer = SessionContext::new();
    writer.sql(&copy).await.unwrap().collect().await.unwrap();
    let config = EngineConfig {
        target_partitions: Some(1),
        memory_limit: Some(12 << 20),
        ..Default::default()
    };
    let ctx = build_context(&config).await.unwrap();
    let create = format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}' WITH ORDER (k ASC NULLS FIRST)",
        file.display()
    );
    ctx.sql(&create).await.unwrap().collect().await.unwrap();
    let sql = query("zscore");
    let plan = physical(&ctx, &sql).await;
    assert!(plan.contains("SegmentFitScoreExec"), "{plan}");
    let below = &plan[plan.find("SegmentFitScoreExec").unwrap()..];
    assert!(!below.contains("SortExec"), "{plan}");
    let err = rows(&ctx, &sql).await.expect_err("too big");
    assert!(err.contains("the segment (NULL)"), "{err}");
    assert!(err.contains("raise --memory-limit"), "{err}");
}
