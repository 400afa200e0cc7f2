//! Scores must be bit-identical for any partition count and on either engine.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use nomaly_engine::{EngineConfig, EngineKind};
use nomaly_tests::data::write_parquet_dataset;
use std::path::Path;

const ALGORITHMS: [(&str, &str); 7] = [
    ("zscore", ""),
    ("robust_zscore", ""),
    ("iqr", ""),
    ("hbos", ""),
    ("ecod", ""),
    ("copod", ""),
    ("iforest", ", 'n_trees=25, seed=11'"),
];

async fn context(engine: EngineKind, partitions: usize, data: &Path) -> SessionContext {
    let config = EngineConfig {
        engine,
        target_partitions: Some(partitions),
        ..Default::default()
    };
    crate::session_with_table(config, data).await
}

/// (id, score bits, is_anomaly) ordered by id, for each algorithm.
async fn scores(
    ctx: &SessionContext,
    per_segment: bool,
) -> Vec<Vec<(i64, Option<u64>, Option<bool>)>> {
    let mut out = Vec::new();
    for (alg, opts) in ALGORITHMS {
        let over = if per_segment {
            " OVER (PARTITION BY segment)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, a['score'] AS s, a['is_anomaly'] AS f FROM \
             (SELECT id, detect_anomalies('{alg}', f1, f2, f3{opts}){over} AS a FROM t) ORDER BY id"
        );
        let batches = ctx
            .sql(&sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut rows = Vec::new();
        for b in &batches {
            let id = b.column(0).as_primitive::<Int64Type>();
            let s = b.column(1).as_primitive::<Float64Type>();
            let f = b.column(2).as_boolean();
            for i in 0..b.num_rows() {
                rows.push((
                    id.value(i),
                    s.is_valid(i).then(|| s.value(i).to_bits()),
                    f.is_valid(i).then(|| f.value(i)),
                ));
            }
        }
        out.push(rows);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_are_bit_identical_across_partitions_and_engines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    // 5 files x row groups of 1000: partition counts really change how rows are split.
    write_parquet_dataset(&data, 12_000, 5, 1_000, 5);
    for per_segment in [false, true] {
        let reference = scores(&context(EngineKind::Local, 1, &data).await, per_segment).await;
        assert_eq!(reference[0].len(), 12_000);
        let nulls = reference[0].iter().filter(|r| r.1.is_none()).count();
        assert_eq!(nulls, 13, "rows with a missing feature score NULL");
        for partitions in [2, 8] {
            let other = scores(
                &context(EngineKind::Local, partitions, &data).await,
                per_segment,
            )
            .await;
            for ((alg, _), (a, b)) in ALGORITHMS.iter().zip(reference.iter().zip(&other)) {
                assert!(
                    a == b,
                    "{alg} (per_segment={per_segment}): local p=1 vs p={partitions} differ"
                );
            }
        }
        let standalone = scores(
            &context(EngineKind::Standalone, 4, &data).await,
            per_segment,
        )
        .await;
        for ((alg, _), (a, b)) in ALGORITHMS.iter().zip(reference.iter().zip(&standalone)) {
            assert!(
                a == b,
                "{alg} (per_segment={per_segment}): local vs Ballista standalone differ"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ballista_scores_in_every_partition_of_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    write_parquet_dataset(&data, 4_000, 4, 500, 9);
    let ctx = context(EngineKind::Standalone, 4, &data).await;
    // The stage that scores (the one with the model join, which replaces the rewrite's cross
    // join on a cluster) must run in as many partitions as the table has file groups: the model
    // is the collected (first) input, the table streams.
    let distributed = distributed_plan(
        &ctx,
        "SELECT id, detect_anomalies('iforest', f1, f2) AS a FROM t",
    )
    .await;
    let stage = distributed
        .split("=========")
        .find(|s| s.contains("ModelJoinExec"))
        .unwrap_or_else(|| panic!("no scoring stage in:\n{distributed}"));
    assert!(
        stage.contains("ShuffleWriterExec: partitioning: UnknownPartitioning(4)"),
        "scoring stage is not 4-way parallel:\n{stage}"
    );
    let after_join: Vec<&str> = stage
        .split("ModelJoinExec")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.trim_matches(|c: char| c == '|' || c.is_whitespace()))
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        after_join[0].starts_with("AggregateExec: mode=Final"),
        "build side is not the model: {after_join:?}"
    );
    let streamed = after_join
        .iter()
        .find(|l| l.starts_with("DataSourceExec"))
        .expect("table scan");
    assert!(
        streamed.contains("4 groups"),
        "table side is not partitioned: {streamed}"
    );
}

/// On Ballista, `OVER (PARTITION BY k)` runs one segment at a time on the executors too: the
/// scheduler's plan has `SegmentFitScoreExec` over a shuffle by the key, not the join that holds
/// every segment's model (the scores are compared with local ones above).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ballista_fits_segments_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    write_parquet_dataset(&data, 4_000, 4, 500, 9);
    let ctx = context(EngineKind::Standalone, 4, &data).await;
    let distributed = distributed_plan(
        &ctx,
        "SELECT id, detect_anomalies('iforest', f1, f2) OVER (PARTITION BY id % 50) AS a FROM t",
    )
    .await;
    assert!(distributed.contains("SegmentFitScoreExec"), "{distributed}");
    assert!(!distributed.contains("HashJoinExec"), "{distributed}");
}

/// The distributed plan Ballista prints for `EXPLAIN sql` (its stages).
async fn distributed_plan(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.split("distributed_plan")
        .nth(1)
        .unwrap_or_else(|| panic!("no distributed plan:\n{text}"))
        .to_string()
}
