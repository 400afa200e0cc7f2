//! `nomaly run | validate | explain | schema` through the real binary: the example pipelines run and
//! their outputs are checked; malformed files and inputs fail with exit code 2, a message naming the
//! place and the fix, and no output at all.

use super::{
    files_in, nomaly, nomaly_env, part_files, report, root, stderr, stdout, write_tx_parquet,
};
use std::path::Path;
use std::process::Output;

/// Runs a query on the written output through `nomaly sql`, returning CSV lines without header.
pub(crate) fn query(tables: &[(&str, &Path)], sql: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["sql".into(), "--format".into(), "csv".into()];
    for (name, path) in tables {
        args.push("--table".into());
        args.push(format!("{name}={}", path.display()));
    }
    args.push("-e".into());
    args.push(sql.into());
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = nomaly(&refs);
    assert_eq!(o.status.code(), Some(0), "{sql}: {}", stderr(&o));
    stdout(&o).lines().skip(1).map(str::to_string).collect()
}

fn run_example(name: &str, out: &Path) -> Output {
    let o = nomaly_env(
        &["run", &format!("examples/pipelines/{name}.toml"), "--json"],
        &[("NOMALY_OUT", out.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
    o
}

#[test]
fn minimal_pipeline_scores_every_row_like_the_sql_function() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_example("minimal", tmp.path());
    let r = report(&o);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["input_rows"], 2000);
    assert_eq!(r["output_rows"], 2000);
    // iforest at the default contamination 0.1 flags exactly 10% of these distinct rows.
    assert_eq!(r["anomalies"], 200);
    let out = tmp.path().join("minimal");
    assert_eq!(
        files_in(&out),
        vec![
            "_nomaly/manifest.jsonl",
            "_nomaly/models.ipc",
            "_nomaly/pipeline.toml",
            "_nomaly/run.json",
            "_nomaly_report.json",
            "part-00000.parquet"
        ]
    );
    // Same plan as the SQL function: bit-identical scores and flags for every id.
    let tx = root().join("examples/data/tx.csv");
    let rows = query(
        &[("o", &out), ("tx", &tx)],
        "SELECT count(*), count(DISTINCT o.id), sum(CASE WHEN o.anomaly_score = d.a['score'] AND o.is_anomaly = d.a['is_anomaly'] THEN 1 ELSE 0 END) \
         FROM o JOIN (SELECT id, detect_anomalies('iforest', amount, latency_ms) AS a FROM tx) d ON o.id = d.id",
    );
    assert_eq!(rows, vec!["2000,2000,2000"]);
}

#[test]
fn chunks_are_slices_of_the_input_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let o = nomaly_env(
        &[
            "run",
            "examples/pipelines/minimal.toml",
            "--set",
            "run.chunk_rows=1000",
            "--json",
        ],
        &[("NOMALY_OUT", tmp.path().to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("minimal");
    // 50 115 bytes of CSV at ~25 bytes a row: chunks of 25 000 bytes.
    assert_eq!(report(&o)["chunks"], 3);
    let mut last_max = 0;
    let mut total = 0;
    for i in 0..3 {
        let part = out.join(format!("part-0000{i}.parquet"));
        let row = query(&[("p", &part)], "SELECT count(*), min(id), max(id) FROM p");
        let v: Vec<i64> = row[0].split(',').map(|x| x.parse().unwrap()).collect();
        // contiguous ids, in file order, no overlap between chunks
        assert_eq!(v[2] - v[1] + 1, v[0], "part {i}: {row:?}");
        assert_eq!(v[1], last_max + 1, "part {i}: {row:?}");
        last_max = v[2];
        total += v[0];
    }
    assert_eq!(total, 2000);
}

#[test]
fn standalone_engine_writes_what_local_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_tx_parquet(&dir.join("tx.parquet"), 0, 40_000, 5_000);
    // Chunks straight from the source (iforest), and chunks of a materialized DISTINCT (hbos).
    let source = "input = \"tx.parquet\"\noutput = \"out_{engine}/\"\n[detect]\nalgorithm = \"iforest\"\n\
                  columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 5000\nengine = \"{engine}\"\n";
    let materialized = "output = \"m_{engine}/\"\n[[source]]\nname = \"tx\"\npath = \"tx.parquet\"\n\
                        [[step]]\nname = \"d\"\nsql = \"SELECT DISTINCT id, amount, latency_ms FROM tx\"\n\
                        [detect]\ninput = \"d\"\nalgorithm = \"hbos\"\ncolumns = [\"amount\", \"latency_ms\"]\n\
                        [run]\nchunk_rows = 5000\nengine = \"{engine}\"\n";
    for (kind, template, out, chunking) in [
        ("source", source, "out", "source"),
        ("materialized", materialized, "m", "materialized"),
    ] {
        let mut reports = Vec::new();
        for engine in ["local", "standalone"] {
            let file = dir.join(format!("{kind}_{engine}.toml"));
            std::fs::write(&file, template.replace("{engine}", engine)).unwrap();
            let o = nomaly(&["run", file.to_str().unwrap(), "--json"]);
            assert_eq!(o.status.code(), Some(0), "{kind} {engine}: {}", stderr(&o));
            reports.push(report(&o));
        }
        let explained = nomaly(&[
            "explain",
            dir.join(format!("{kind}_standalone.toml"))
                .to_str()
                .unwrap(),
        ]);
        assert!(
            stdout(&explained).contains("engine: standalone (Ballista"),
            "{}",
            stdout(&explained)
        );
        let (local, standalone) = (&reports[0], &reports[1]);
        assert_eq!(local["engine"], "local");
        assert_eq!(local["ballista_jobs"], 0);
        assert_eq!(standalone["engine"], "standalone");
        assert_eq!(standalone["chunking"], chunking, "{standalone}");
        let chunks = standalone["chunks"].as_u64().unwrap();
        assert!(chunks >= 8, "{standalone}");
        // The fit is one Ballista job, each chunk another.
        assert_eq!(standalone["ballista_jobs"], chunks + 1, "{standalone}");
        for key in ["input_rows", "output_rows", "anomalies", "chunks"] {
            assert_eq!(local[key], standalone[key], "{kind}: {key}");
        }
        let (a_dir, b_dir) = (
            dir.join(format!("{out}_local")),
            dir.join(format!("{out}_standalone")),
        );
        let (a, b) = (part_files(&a_dir), part_files(&b_dir));
        assert_eq!(a.len() as u64, chunks);
        assert_eq!(
            a.iter().map(|p| &p.0).collect::<Vec<_>>(),
            b.iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        if kind == "source" {
            for ((name, x), (_, y)) in a.iter().zip(&b) {
                assert!(
                    x == y,
                    "{kind}: {name} differs between local and standalone"
                );
            }
        } else {
            // DISTINCT's output order is not fixed, so compare row by row: every id once, the
            // same score bits and flag on both engines.
            let same = query(
                &[("a", &a_dir), ("b", &b_dir)],
                "SELECT count(*), count(DISTINCT a.id), \
                 sum(CASE WHEN a.anomaly_score = b.anomaly_score AND a.is_anomaly = b.is_anomaly THEN 1 ELSE 0 END) \
                 FROM a JOIN b ON a.id = b.id",
            );
            assert_eq!(same, vec!["40000,40000,40000".to_string()], "{kind}");
        }
    }
}

#[test]
fn multi_source_join_pipeline_enriches_then_detects() {
    let tmp = tempfile::tempdir().unwrap();
    let r = report(&run_example("multi_source_join", tmp.path()));
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output_rows"], 2000);
    assert_eq!(
        r["anomalies"], 100,
        "contamination 0.05 of 2000 distinct rows"
    );
    let out = tmp.path().join("enriched");
    let rows = query(
        &[("o", &out)],
        "SELECT count(DISTINCT category), min(risk_tier), max(risk_tier), count(*) FILTER (WHERE weighted_amount IS NULL) FROM o",
    );
    assert_eq!(rows, vec!["2,1,3,0"]);
}

#[test]
fn text_columns_are_categorical_features_like_the_sql_function() {
    let tmp = tempfile::tempdir().unwrap();
    let tx = root().join("examples/data/tx.csv");
    let pipeline = tmp.path().join("p.toml");
    let out = tmp.path().join("out");
    let text = format!(
        "input = \"{}\"\noutput = \"{}/\"\n\n[detect]\nalgorithm = \"hbos\"\ncolumns = [\"merchant\", \"amount\"]\ncategorical = [\"merchant\"]\n",
        tx.display(),
        out.display()
    );
    std::fs::write(&pipeline, &text).unwrap();
    let o = nomaly(&["run", pipeline.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["output_rows"], 2000);
    let rows = query(
        &[("o", &out), ("tx", &tx)],
        "SELECT count(*), sum(CASE WHEN o.anomaly_score = d.a['score'] AND o.is_anomaly = d.a['is_anomaly'] THEN 1 ELSE 0 END) \
         FROM o JOIN (SELECT id, detect_anomalies('hbos', merchant, amount) AS a FROM tx) d ON o.id = d.id",
    );
    assert_eq!(rows, vec!["2000,2000"]);
    // Text is categorical only when declared (a numeric column read as text is not taken as
    // categories): undeclared, the run stops before a chunk and says how; declared for a detector
    // without text features, the file does not compile.
    std::fs::write(
        &pipeline,
        text.replace("categorical = [\"merchant\"]\n", ""),
    )
    .unwrap();
    let o = nomaly(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("column 'merchant'") && stderr(&o).contains("list it in categorical"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&pipeline, text.replace("hbos", "knn")).unwrap();
    let o = nomaly(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("knn takes numeric columns only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn per_segment_pipeline_fits_one_model_per_merchant() {
    let tmp = tempfile::tempdir().unwrap();
    let r = report(&run_example("per_segment", tmp.path()));
    assert_eq!(r["models"], 4);
    assert_eq!(r["output_rows"], 2000);
    let out = tmp.path().join("per_merchant");
    let files = files_in(&out);
    // Segments are chunks' units: each merchant's rows are in one chunk, so one part file.
    assert_eq!(r["chunking"], "segments");
    for m in ["fuel", "grocer", "online", "travel"] {
        let parts: Vec<&String> = files
            .iter()
            .filter(|f| f.starts_with(&format!("merchant={m}/part-")))
            .collect();
        assert_eq!(parts.len(), 1, "{files:?}");
    }
    // Each directory holds only its merchant; explanations have one entry per feature.
    for m in ["fuel", "travel"] {
        let dir = out.join(format!("merchant={m}"));
        let rows = query(
            &[("o", &dir)],
            "SELECT count(DISTINCT merchant), min(merchant), count(*), min(array_length(anomaly_explanation)) FROM o",
        );
        assert_eq!(rows, vec![format!("1,{m},500,2")]);
    }
    // 2% per segment: 10 of each merchant's 500 rows.
    for m in ["fuel", "grocer", "online", "travel"] {
        let rows = query(
            &[("o", &out.join(format!("merchant={m}")))],
            "SELECT count(*) FILTER (WHERE is_anomaly) FROM o",
        );
        assert_eq!(rows, vec!["10"], "{m}");
    }
}

#[test]
fn validate_and_notify_pipeline_checks_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let r = report(&run_example("validate_notify", tmp.path()));
    assert_eq!(r["status"], "succeeded");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    let base = tmp.path().join("checked");
    let anomalies = r["anomalies"].as_u64().unwrap();
    assert!(anomalies > 0);
    // The CSV sink holds exactly the flagged rows.
    let rows = query(
        &[("a", &base.join("anomalies"))],
        "SELECT count(*), bool_and(is_anomaly) FROM a",
    );
    assert_eq!(rows, vec![format!("{anomalies},true")]);
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("notification.json")).unwrap()).unwrap();
    assert_eq!(note["output_rows"], 2000);
    assert_eq!(
        std::fs::read_to_string(base.join("status.txt")).unwrap(),
        "pipeline checked finished: succeeded\n"
    );
    // The report is also written next to each output.
    assert!(base.join("all/_nomaly_report.json").exists());
}

#[test]
fn failed_check_exits_3_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let o = nomaly_env(
        &[
            "run",
            "examples/pipelines/validate_notify.toml",
            "--set",
            "validate.1.max=0.001",
        ],
        &[("NOMALY_OUT", tmp.path().to_str().unwrap())],
    );
    // `validate` is an array of tables: --set cannot index it, so this is an input error.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let dir = tmp.path();
    std::fs::write(
        dir.join("p.toml"),
        format!(
            "input = \"{}\"\noutput = \"out/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n[[validate]]\ncheck = \"anomaly_rate\"\nmax = 0.01\n",
            root().join("examples/data/tx.csv").display()
        ),
    )
    .unwrap();
    let o = nomaly(&["run", dir.join("p.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("check anomaly_rate: FAILED"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("out").exists());
}

#[test]
fn dry_run_validate_explain_and_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("NOMALY_OUT", tmp.path().to_str().unwrap())];
    let o = nomaly_env(
        &[
            "run",
            "--dry-run",
            "examples/pipelines/multi_source_join.toml",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !tmp.path().join("enriched").exists(),
        "a dry run writes nothing"
    );
    let o = nomaly_env(&["validate", "examples/pipelines/per_segment.toml"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("valid"), "{}", stdout(&o));
    let o = nomaly_env(&["explain", "examples/pipelines/minimal.toml"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("chunk     0:") && text.contains("partition i = chunk i"),
        "{text}"
    );
    let o = nomaly(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(schema["properties"]["detect"].is_object(), "{schema}");
}

pub(crate) mod backfill;
mod email;
#[path = "malformed.rs"]
mod malformed;
pub(crate) mod models;
pub mod webhooks;

#[test]
fn missing_values_are_data_counted_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.toml");
    std::fs::write(
        &file,
        format!(
            "input = \"{}\"\noutput = \"out/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"x\", \"y\"]\n",
            root().join("examples/data/missing.csv").display()
        ),
    )
    .unwrap();
    let o = nomaly(&["run", file.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    // rows 3 (null), 4 (NaN), 5 (inf), 8 (-inf), 10 (null): skipped by the fit, scored null
    assert_eq!(r["input_rows"], 10);
    assert_eq!(r["output_rows"], 10);
    assert_eq!(r["rows_with_missing_features"], 5);
    let rows = query(
        &[("o", &tmp.path().join("out"))],
        "SELECT string_agg(CAST(id AS VARCHAR), ',' ORDER BY id) FROM o WHERE anomaly_score IS NULL",
    );
    assert_eq!(rows, vec!["\"3,4,5,8,10\""]);
}

/// Logs follow `NOMALY_LOG`, else `RUST_LOG` (as the README says); without either a run logs
/// warnings only.
#[test]
fn rust_log_and_nomaly_log_set_what_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("NOMALY_OUT", out));
        let o = nomaly_env(
            &["run", "examples/pipelines/minimal.toml", "--restart"],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stderr(&o).contains("memory budget")
    };
    // Empty counts as unset (and overrides whatever the test's own environment holds).
    assert!(
        !run(&[("NOMALY_LOG", ""), ("RUST_LOG", "")]),
        "info logged by default"
    );
    assert!(
        run(&[("NOMALY_LOG", ""), ("RUST_LOG", "info")]),
        "RUST_LOG=info is ignored"
    );
    assert!(run(&[("NOMALY_LOG", "info"), ("RUST_LOG", "")]));
    assert!(
        !run(&[("NOMALY_LOG", "warn"), ("RUST_LOG", "info")]),
        "NOMALY_LOG comes first"
    );
}
