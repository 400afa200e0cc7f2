//! `[detect] partition_by`: the detect input written once in buckets by segment, each bucket a
//! chunk fitting and scoring its own segments. A run that fails in one chunk resumes over the
//! same buckets to the uninterrupted run's bytes, and the scores are the SQL form's
//! (`detect_anomalies(...) OVER (PARTITION BY seg)`).

use super::super::pipeline::query;
use super::write_input;
use crate::{nomaly_env, part_files, report, stderr};
use std::path::Path;

/// 50,000 rows in 300 segments (`id % 300`), iforest per segment, 5,000-row chunks.
fn segmented_job(dir: &Path) -> String {
    write_input(dir, 50_000);
    let p = dir.join("s.toml");
    std::fs::write(
        &p,
        "input = \"tx.parquet\"\noutput = \"out/s/\"\n[[step]]\nname = \"keyed\"\n\
         sql = \"SELECT *, id % 300 AS seg FROM input\"\n[detect]\nalgorithm = \"iforest\"\n\
         columns = [\"amount\", \"latency_ms\"]\npartition_by = [\"seg\"]\n\
         options = { n_trees = 20, seed = 7 }\n[run]\nchunk_rows = 5000\n\
         [retry]\ninitial_delay = \"5ms\"\n",
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn a_segmented_run_resumes_to_the_uninterrupted_output_and_equals_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, broken) = (tmp.path().join("whole"), tmp.path().join("broken"));
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::create_dir_all(&broken).unwrap();

    let p = segmented_job(&whole);
    let o = nomaly_env(&["run", &p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["chunking"], "segments");
    assert_eq!(r["models"], 300);
    assert_eq!(
        (r["input_rows"].as_u64(), r["output_rows"].as_u64()),
        (Some(50_000), Some(50_000))
    );
    let chunks = r["chunks"].as_u64().unwrap();
    assert!(chunks >= 5, "{r}");
    let reference = part_files(&whole.join("out/s"));
    assert_eq!(reference.len() as u64, chunks);

    // The scores are the SQL form's: same model per segment, same bits.
    let sql = "WITH s AS (SELECT id, detect_anomalies('iforest', amount, latency_ms, \
         'n_trees=20, seed=7') OVER (PARTITION BY id % 300) AS d FROM t) \
         SELECT count(*), count(*) FILTER (WHERE o.anomaly_score = s.d['score'] \
         AND o.is_anomaly = s.d['is_anomaly']), count(DISTINCT o.seg) FROM o JOIN s ON o.id = s.id";
    let rows = query(
        &[
            ("o", &whole.join("out/s")),
            ("t", &whole.join("tx.parquet")),
        ],
        sql,
    );
    assert_eq!(rows, vec!["50000,50000,300"]);

    // Chunk 2 fails for good: the others commit, the buckets stay for the resume.
    let p = segmented_job(&broken);
    let o = nomaly_env(
        &["run", &p, "--no-progress"],
        &[("NOMALY_FAULTS", "fail_chunk=2")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("error: chunk 2 ("), "{}", stderr(&o));
    assert!(
        broken.join("out/.s.nomaly-work").is_dir(),
        "the buckets are kept"
    );
    let o = nomaly_env(&["resume", &p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["chunking"], "segments");
    assert_eq!(r["recovery"]["chunks_reused"], chunks - 1);
    assert_eq!(r["models"], 300);
    assert!(
        !broken.join("out/.s.nomaly-work").exists(),
        "removed once complete"
    );
    assert_eq!(part_files(&broken.join("out/s")), reference);
}
