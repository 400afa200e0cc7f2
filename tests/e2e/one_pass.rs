//! The local engine's one-pass fit and score (`FitScoreExec`): where it applies and that it scores
//! exactly like the two-pass plan.

use super::physical;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use nomaly_engine::{EngineConfig, EngineKind, build_context, register_table};
use nomaly_tests::data::write_parquet_dataset;
use std::sync::Arc;

/// A local session with table `name`: the rows of `select` written to a Parquet file in `dir`.
async fn session_with_table(dir: &std::path::Path, name: &str, select: &str) -> SessionContext {
    let file = dir.join(format!("{name}.parquet"));
    let ctx = build_context(&EngineConfig::default()).await.unwrap();
    let copy = format!("COPY ({select}) TO '{}' STORED AS PARQUET", file.display());
    ctx.sql(&copy).await.unwrap().collect().await.unwrap();
    register_table(&ctx, name, &file.to_string_lossy())
        .await
        .unwrap();
    ctx
}

/// Fused only where both sides read the same rows: not when a filter on the result was pushed
/// into the scored side alone.
#[tokio::test]
async fn fuses_only_joins_over_the_same_rows() {
    // A file sorted by id: the scored side, which reads id, shows an output ordering the fit side
    // (reading a, b) does not; the rows are the same.
    let dir = tempfile::tempdir().unwrap();
    let ctx = session_with_table(
        dir.path(),
        "t",
        "SELECT value AS id, CAST(value AS DOUBLE) AS a, CAST(value % 7 AS DOUBLE) AS b \
         FROM generate_series(1, 100)",
    )
    .await;
    let sorted = physical(&ctx, "SELECT id, detect_anomalies('hbos', a, b) FROM t").await;
    assert!(sorted.contains("output_ordering=[id@0"), "{sorted}");
    assert!(sorted.contains("FitScoreExec"), "{sorted}");
    let plain = physical(&ctx, "SELECT a, detect_anomalies('zscore', a, b) FROM t").await;
    assert!(plain.contains("FitScoreExec"), "{plain}");
    assert!(!plain.contains("CrossJoinExec"), "{plain}");
    let inner_filter = physical(
        &ctx,
        "SELECT a, detect_anomalies('zscore', a, b) FROM t WHERE b > 1",
    )
    .await;
    assert!(inner_filter.contains("FitScoreExec"), "{inner_filter}");
    // The score filter becomes the join's filter: still one pass.
    let on_scores = physical(
        &ctx,
        "SELECT * FROM (SELECT a, detect_anomalies('zscore', a, b) AS d FROM t) WHERE d.is_anomaly",
    )
    .await;
    assert!(on_scores.contains("FitScoreExec"), "{on_scores}");
    // `a > 50` applies to the output only, so it reaches the scored side but not the fit.
    let outer = physical(
        &ctx,
        "SELECT * FROM (SELECT a, detect_anomalies('zscore', a, b) AS d FROM t) WHERE a > 50",
    )
    .await;
    assert!(!outer.contains("FitScoreExec"), "{outer}");
    // In-memory inputs: a table's batches are shared by both sides, a VALUES list is built once
    // per side and compared by value.
    ctx.sql("CREATE TABLE m AS SELECT a, b FROM t")
        .await
        .unwrap();
    let memory = physical(&ctx, "SELECT a, detect_anomalies('zscore', a, b) FROM m").await;
    assert!(memory.contains("FitScoreExec"), "{memory}");
    let values = physical(
        &ctx,
        "SELECT detect_anomalies('zscore', column1) FROM (VALUES (1.0), (2.0), (9.0))",
    )
    .await;
    assert!(values.contains("FitScoreExec"), "{values}");
    // A limit inside the input bounds both sides alike.
    let limited = physical(
        &ctx,
        "SELECT a, detect_anomalies('zscore', a, b) FROM (SELECT * FROM t LIMIT 10)",
    )
    .await;
    assert!(limited.contains("FitScoreExec"), "{limited}");
    // Ballista sessions and pipelines keep the standard plan.
    let two_pass = build_context(&EngineConfig {
        one_pass: false,
        ..Default::default()
    })
    .await
    .unwrap();
    two_pass
        .sql("CREATE TABLE t AS SELECT CAST(value AS DOUBLE) AS a FROM generate_series(1, 10)")
        .await
        .unwrap();
    let plan = physical(&two_pass, "SELECT detect_anomalies('zscore', a) FROM t").await;
    assert!(plan.contains("CrossJoinExec"), "{plan}");
}

fn find<'a>(plan: &'a Arc<dyn ExecutionPlan>, name: &str) -> Option<&'a Arc<dyn ExecutionPlan>> {
    if plan.name() == name {
        return Some(plan);
    }
    plan.children().into_iter().find_map(|c| find(c, name))
}

/// The local engine fits and scores in one pass (FitScoreExec), keeping the input in memory up to
/// half the budget; a partition that outgrows it is read again. Both ways give the two-pass plan's
/// scores bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pass_scores_like_two_passes_whether_kept_or_read_again() {
    use datafusion::physical_plan::collect;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    write_parquet_dataset(&data, 36_000, 5, 1_000, 5);
    let session = |one_pass: bool, memory_limit: Option<usize>| {
        let config = EngineConfig {
            target_partitions: Some(3),
            memory_limit,
            one_pass,
            ..Default::default()
        };
        crate::session_with_table(config, &data)
    };
    // Small samples: the fit states count against the budget too (each keeps up to
    // `sample_rows` rows per partition), and this test's budget is sized for the kept batches.
    let sql = "SELECT id, detect_anomalies('hbos', f1, f2, f3, 'sample_rows=64') AS a, \
               detect_anomalies('iforest', f1, f2, 'n_trees=2, sample_size=32, sample_rows=64') AS b FROM t";
    let run = |ctx: SessionContext| async move {
        let df = ctx.sql(sql).await.expect("plan");
        let plan = df.create_physical_plan().await.expect("physical plan");
        let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
        let mut rows: Vec<String> = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let cells: Vec<String> = (0..b.num_columns())
                    .map(|c| {
                        datafusion::arrow::util::display::array_value_to_string(b.column(c), i)
                            .unwrap()
                    })
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows.sort();
        (plan, rows)
    };
    let (two_plan, two) = run(session(false, None).await).await;
    assert!(find(&two_plan, "FitScoreExec").is_none());
    assert!(find(&two_plan, "CrossJoinExec").is_some());
    assert_eq!(two.len(), 36_000);

    let (kept_plan, kept) = run(session(true, None).await).await;
    let fused = find(&kept_plan, "FitScoreExec").expect("local plans fuse fit and score");
    let metrics = fused.metrics().unwrap();
    assert_eq!(
        metrics.sum_by_name("kept_rows").map(|m| m.as_usize()),
        Some(36_000)
    );
    assert_eq!(
        metrics
            .sum_by_name("partitions_read_again")
            .map(|m| m.as_usize()),
        None
    );
    assert!(
        kept == two,
        "one pass (kept in memory) differs from two passes"
    );

    // 36,000 rows of 7 columns are ~2.1 MB: a 2 MB budget keeps at most 1 MB of them, and
    // leaves the rest for the fit states.
    let (again_plan, again) = run(session(true, Some(2048 * 1024)).await).await;
    let fused = find(&again_plan, "FitScoreExec").unwrap();
    let read_again = fused
        .metrics()
        .unwrap()
        .sum_by_name("partitions_read_again")
        .map(|m| m.as_usize())
        .unwrap_or(0);
    assert!(
        read_again >= 1,
        "no partition was read again under a 400 KB budget"
    );
    assert_eq!(again.len(), two.len());
    assert!(
        again == two,
        "one pass (read again) differs from two passes"
    );
}

/// On Ballista a filter on the output that no row passes reaches the scores as batches whose model
/// column is a dictionary without values (shuffle files): such rows score NULL, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_filter_nothing_passes_is_an_empty_result_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    write_parquet_dataset(&data, 4_000, 2, 500, 3);
    for engine in [EngineKind::Local, EngineKind::Standalone] {
        let config = EngineConfig {
            engine: engine.clone(),
            target_partitions: Some(2),
            ..Default::default()
        };
        let ctx = crate::session_with_table(config, &data).await;
        let batches = ctx
            .sql(
                "SELECT * FROM (SELECT id, f1, detect_anomalies('hbos', f1, f2) AS d FROM t) \
                 WHERE d.is_anomaly AND f1 > 1e12",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 0, "{engine:?}");
    }
}

/// The table form is the rewrite's plan (one builder): on the local engine it reads its input
/// once (one scan, fused) and scores each row once (one `anomaly_detect` call, its struct split
/// into columns afterwards), and it scores like the scalar form.
#[tokio::test]
async fn the_table_form_reads_once_and_scores_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = session_with_table(
        dir.path(),
        "tx",
        "SELECT value AS id, CAST(value % 101 AS DOUBLE) AS amount, \
         CAST((value * 7) % 13 AS DOUBLE) AS latency_ms FROM generate_series(1, 500)",
    )
    .await;
    for explain in ["", ", 'explain=true'"] {
        let sql =
            format!("SELECT * FROM detect_anomalies('tx', 'hbos', 'amount, latency_ms'{explain})");
        let plan = physical(&ctx, &sql).await;
        assert_eq!(
            plan.matches("DataSourceExec").count(),
            1,
            "one scan:\n{plan}"
        );
        assert!(plan.contains("FitScoreExec"), "{plan}");
        assert_eq!(
            plan.matches("anomaly_detect(").count(),
            1,
            "one score per row:\n{plan}"
        );
    }
    let table = ctx
        .sql("SELECT sum(anomaly_score), sum(CAST(is_anomaly AS INT)) FROM detect_anomalies('tx', 'hbos', 'amount, latency_ms')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let scalar = ctx
        .sql("SELECT sum(d['score']), sum(CAST(d['is_anomaly'] AS INT)) FROM (SELECT detect_anomalies('hbos', amount, latency_ms) AS d FROM tx)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // The one row of values, without the header (the column names differ).
    let values = |batches: &[datafusion::arrow::array::RecordBatch]| {
        let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string();
        let row = text.lines().nth(3).unwrap();
        row.split('|').map(str::trim).collect::<Vec<_>>().join("|")
    };
    assert_eq!(values(&table), values(&scalar));
}
