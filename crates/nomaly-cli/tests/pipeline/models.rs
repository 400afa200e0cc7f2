//! Models that live between runs: a training run registers a version, scoring runs use it and
//! report drift, and a drifted day alerts.

use crate::{nomaly, nomaly_env, report, stderr, stdout};
use std::path::Path;

/// 32 days of transactions, 200 a day from 2026-01-01; day 32 (2026-02-01) spends 40 more.
fn write_days(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let sql = format!(
        "COPY (SELECT value AS id, to_timestamp_seconds(1767225600 + value * 432) AS ts, \
         50.0 + ((value * 7919) % 100) / 5.0 + CASE WHEN value >= 6200 THEN 40.0 ELSE 0.0 END \
         AS amount FROM range(0, 6400)) TO '{}' STORED AS PARQUET",
        dir.join("data/tx.parquet").display()
    );
    let o = nomaly(&["sql", "-e", &sql]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

const DAY: &str = "[[step]]\nname = \"day\"\nsql = \"SELECT * FROM tx WHERE ts >= TIMESTAMP \
                   '${run.start}' AND ts < TIMESTAMP '${run.end}'\"\n";

fn pipeline(dir: &Path, name: &str, detect: &str, extra: &str) -> String {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nschedule = \"0 0 * * *\"\n[[source]]\nname = \"tx\"\n\
             path = \"data/tx.parquet\"\n{DAY}[detect]\nalgorithm = \"zscore\"\n\
             columns = [\"amount\"]\n{detect}\n[[sink]]\npath = \"out/{name}/date=${{run.date}}/\"\n{extra}"
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

/// `nomaly run FILE --date DATE --json`, which must succeed: its report.
fn run_day(file: &str, date: &str) -> serde_json::Value {
    let o = nomaly_env(&["run", file, "--date", date, "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{date}: {}", stderr(&o));
    report(&o)
}

/// The days, and `train.toml`: model `fraud` trained on the 30 days before the run's day.
pub(crate) fn training_pipeline(dir: &Path) -> String {
    write_days(dir);
    pipeline(
        dir,
        "train",
        "model = \"fraud\"\ntrain = \"SELECT * FROM tx WHERE ts >= TIMESTAMP '${run.start}' - \
         INTERVAL '30 days' AND ts < TIMESTAMP '${run.start}'\"",
        "",
    )
}

#[test]
fn a_model_trained_on_thirty_days_scores_the_next_and_a_drifted_day_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = training_pipeline(dir);
    let alert = "[[notify]]\ntype = \"file\"\npath = \"alerts/drift.json\"\ndrift_above = 0.2\n";
    let score = pipeline(dir, "score", "model = \"fraud\"", alert);
    let run = run_day;

    // Day 31 with a model trained on days 1-30: version 1.
    let r = run(&train, "2026-01-31");
    assert_eq!(r["model"]["source"], "train");
    assert_eq!(r["model"]["training_rows"], 6000);
    assert_eq!(r["model"]["version"], 1);
    assert_eq!(r["input_rows"], 200);
    assert!(
        r["model"]["drift_psi"].as_f64().unwrap() < 0.2,
        "{}",
        r["model"]
    );
    // Day 31 again, scored with version 1 (no fit): the same scores as the training run's.
    let r = run(&score, "2026-01-31");
    assert_eq!(
        (
            r["model"]["source"].as_str(),
            r["model"]["version"].as_u64()
        ),
        (Some("registry"), Some(1))
    );
    assert_eq!(r["input_rows"], 200);
    assert!(
        !dir.join("alerts/drift.json").exists(),
        "no drift, no alert"
    );
    assert_eq!(
        crate::part_files(&dir.join("out/train/date=2026-01-31")),
        crate::part_files(&dir.join("out/score/date=2026-01-31")),
        "scoring with the registered version is the training run's scoring"
    );
    // Day 32 has drifted: a warning, and the drift alert.
    let r = run(&score, "2026-02-01");
    let psi = r["model"]["drift_psi"].as_f64().unwrap();
    assert!(psi > 1.0, "{}", r["model"]);
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("the scores drifted from model fraud"),
        "{warnings}"
    );
    let alert: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("alerts/drift.json")).unwrap()).unwrap();
    assert_eq!(alert["model"]["drift_psi"].as_f64(), Some(psi));

    // A second version, trained on days 2-31; both are listed.
    let r = run(&train, "2026-02-01");
    assert_eq!(r["model"]["version"], 2);
    let o = nomaly(&["models", "list", "--dir", dir.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let versions: Vec<(String, u64, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["version"].as_u64().unwrap(),
                m["training_rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [("fraud".into(), 1, 6000), ("fraud".into(), 2, 6000)]
    );
    let o = nomaly(&["models", "list", "--dir", dir.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("fraud            v2   "),
        "{}",
        stdout(&o)
    );

    mismatches_are_refused(dir);
}

/// A pinned version that does not exist, and a detector that does not match, are refused;
/// `models rm` removes a version.
fn mismatches_are_refused(dir: &Path) {
    let pinned = pipeline(dir, "pinned", "model = \"fraud\"\nversion = 9", "");
    let o = nomaly_env(&["run", &pinned, "--date", "2026-01-31"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has no version 9; it has v1, v2"),
        "{}",
        stderr(&o)
    );
    let other = pipeline(
        dir,
        "other",
        "model = \"fraud\"\noptions = { threshold = 2.5 }",
        "",
    );
    let o = nomaly_env(&["run", &other, "--date", "2026-01-31"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("was trained with options ''"),
        "{}",
        stderr(&o)
    );
    let o = nomaly(&[
        "models",
        "rm",
        "fraud",
        "--version",
        "1",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("removed 1 version(s) of fraud"));
}

/// One catalog for SQL and pipelines: a model made by `CREATE MODEL` scores a pipeline's day, one
/// a pipeline trained scores in SQL by name, and a script that does not parse registers nothing.
#[test]
fn create_model_in_sql_serves_pipelines_and_pipeline_models_serve_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = training_pipeline(dir);
    let table = format!("tx={}", dir.join("data/tx.parquet").display());
    let sql = |script: &str| {
        nomaly(&[
            "sql",
            "--models-dir",
            dir.to_str().unwrap(),
            "--table",
            &table,
            "--format",
            "csv",
            "-e",
            script,
        ])
    };
    let o = sql("CREATE MODEL fraud USING zscore AS \
                 SELECT amount FROM tx WHERE ts < TIMESTAMP '2026-01-31'");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("fraud,1,zscore,6000,"),
        "{}",
        stdout(&o)
    );

    // The pipeline scores day 31 with it: no fit, and the training deciles give a drift figure.
    let score = pipeline(dir, "score", "model = \"fraud\"", "");
    let r = run_day(&score, "2026-01-31");
    assert_eq!(r["model"]["source"], "registry");
    assert_eq!(r["model"]["version"], 1);
    assert_eq!(r["input_rows"], 200);
    assert!(
        r["model"]["drift_psi"].as_f64().unwrap() < 0.2,
        "{}",
        r["model"]
    );

    // A pipeline's training run registers v2; SQL scores with it by name and lists both.
    run_day(&train, "2026-01-31");
    let o = sql(
        "SELECT count(*) FILTER (WHERE anomaly_score('fraud@2', amount) = \
                 anomaly_score('fraud@1', amount)) AS same FROM tx; SHOW MODELS",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("same\n6400\n"),
        "same 30 days, same model: {out}"
    );
    assert!(out.contains("fraud,1,zscore,,amount,,6000,"), "{out}");
    assert!(out.contains("fraud,2,zscore,,amount,,6000,"), "{out}");

    // Nothing runs when a later statement does not parse.
    let o = sql("CREATE MODEL other USING zscore AS SELECT amount FROM tx; SELEC 1");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot parse SQL"), "{}", stderr(&o));
    let o = sql("SHOW MODELS");
    assert!(!stdout(&o).contains("other"), "{}", stdout(&o));
    let o = sql("DROP MODEL other");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no model 'other'"), "{}", stderr(&o));
}
