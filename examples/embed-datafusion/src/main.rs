//! Nomaly's detectors in a DataFusion program of your own: register them on a plain
//! `SessionContext`, then query.
//!
//!     cargo run -p nomaly-embed-example
//!
//! Prints the five most anomalous rows of a small table with one planted outlier.

use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StructArray};
use datafusion::error::Result;
use datafusion::prelude::SessionContext;

/// 200 rows on a gentle curve, and row 100 far off it.
const TABLE: &str = "CREATE TABLE tx AS \
    SELECT value AS id, \
           CASE WHEN value = 100 THEN 500.0 ELSE 10.0 + (value % 17) * 0.5 END AS amount, \
           CASE WHEN value = 100 THEN 900.0 ELSE 40.0 + (value % 13) * 1.5 END AS latency_ms \
    FROM generate_series(0, 199)";

const QUERY: &str = "SELECT id, detect_anomalies('iforest', amount, latency_ms, 'seed=7') AS a \
    FROM tx ORDER BY a['score'] DESC, id LIMIT 5";

/// `(id, score, is_anomaly)` of the five highest-scoring rows.
pub async fn top_anomalies(ctx: &SessionContext) -> Result<Vec<(i64, f64, bool)>> {
    ctx.sql(TABLE).await?.collect().await?;
    let batches: Vec<RecordBatch> = ctx.sql(QUERY).await?.collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let a = batch
            .column(1)
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let scores = a
            .column_by_name("score")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .unwrap();
        let flags = a.column_by_name("is_anomaly").unwrap();
        let flags = flags
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BooleanArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            rows.push((ids.value(i), scores.value(i), flags.value(i)));
        }
    }
    Ok(rows)
}

#[tokio::main]
async fn main() -> Result<()> {
    let ctx = SessionContext::new();
    // Every Nomaly function, the table function and the rule that plans detect_anomalies.
    nomaly_udfs::register_all(&ctx)?;
    for (id, score, flagged) in top_anomalies(&ctx).await? {
        println!("id {id:>3}  score {score:.4}  anomaly {flagged}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a plain session with nothing but `register_all`, the planted outlier ranks first and is
    /// flagged; the scores are deterministic for the seed.
    #[tokio::test]
    async fn a_plain_session_runs_detect_anomalies() {
        let ctx = SessionContext::new();
        nomaly_udfs::register_all(&ctx).unwrap();
        let top = top_anomalies(&ctx).await.unwrap();
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].0, 100, "{top:?}");
        assert!(top[0].2, "the outlier is flagged: {top:?}");
        assert!(top[0].1 > top[1].1, "{top:?}");
        // Registering twice adds nothing twice, and the answer is the same bits.
        nomaly_udfs::register_all(&ctx).unwrap();
        let again = SessionContext::new();
        nomaly_udfs::register_all(&again).unwrap();
        assert_eq!(top_anomalies(&again).await.unwrap(), top);
    }
}
