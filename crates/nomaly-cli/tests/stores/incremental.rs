//! An incremental source on an S3 server: each run reads only the objects no earlier run read
//! and published; a run that stopped holds its objects until it is resumed.

use super::{BUCKET, cli, moto, report, services_installed, upload};
use crate::{stderr, write_tx_parquet};
use std::path::{Path, PathBuf};

const ROWS: u64 = 5_000;

/// Uploads `names` (each `ROWS` rows, ids from `first`) under `inbox/` of the bucket.
fn upload_batch(work: &Path, endpoint: &str, batch: usize, names: &[&str], first: u64) {
    let dir = work.join(format!("batch{batch}"));
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(format!("inbox/{name}.parquet"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_tx_parquet(&path, first + i as u64 * ROWS, ROWS, 2_500);
    }
    upload("s3", endpoint, &dir);
}

/// The output directory a run's report names.
fn output_of(report: &serde_json::Value) -> PathBuf {
    PathBuf::from(report["run_dir"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn an_incremental_s3_source_reads_each_object_once() {
    if !services_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let s3 = moto();
    let env = s3.s3_env();
    let pipeline = work.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"inbox\"\n[[source]]\nname = \"tx\"\npath = \"s3://{BUCKET}/inbox/*.parquet\"\n\
             incremental = true\n[detect]\nalgorithm = \"hbos\"\ncolumns = [\"amount\"]\n\
             [[sink]]\npath = \"out/run=${{run.start:%Y%m%dT%H%M%S%.3f}}/\"\n[run]\nchunk_rows = 2500\n\
             [retry]\ninitial_delay = \"5ms\"\nmax_delay = \"10ms\"\nmax_retries = 1\n"
        ),
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let run = |extra: &[(&str, String)]| {
        let mut all = env.clone();
        all.extend(extra.iter().cloned());
        cli(&["run", p, "--json", "--no-progress"], &all)
    };

    upload_batch(work.path(), &s3.endpoint(), 1, &["a", "b"], 0);
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = report(&o);
    assert_eq!(
        (
            first["input_rows"].as_u64(),
            first["incremental"]["new_files"].as_u64()
        ),
        (Some(2 * ROWS), Some(2))
    );
    // Nothing new: exit 0, nothing read or written.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["status"], "nothing_new");

    // Batch 2 is taken by a run that stops after its first chunk; batch 3 lands meanwhile.
    upload_batch(work.path(), &s3.endpoint(), 2, &["c"], 2 * ROWS);
    let o = run(&[("NOMALY_FAULTS", "fail_chunk=1".to_string())]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let stopped = output_of(&report(&o));
    upload_batch(work.path(), &s3.endpoint(), 3, &["d"], 3 * ROWS);
    // A new run is refused while the stopped one holds its object ...
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("an unfinished run of this incremental pipeline took 1 file(s)"),
        "{}",
        stderr(&o)
    );
    // ... its resume reads exactly that object ...
    let o = cli(
        &[
            "resume",
            stopped.to_str().unwrap(),
            "--json",
            "--no-progress",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["input_rows"].as_u64(), Some(ROWS));
    // ... and the next run the one that landed after.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["incremental"]["new_files"].as_u64(), Some(1));
    assert_eq!(
        report(&o)["incremental"]["consumed_before"].as_u64(),
        Some(3)
    );

    // Every uploaded row is in exactly one output.
    let row = crate::query_outputs(
        &work.path().join("out"),
        "SELECT count(*), count(DISTINCT id), max(id) FROM o",
    );
    let total = 4 * ROWS;
    assert_eq!(row, format!("{total},{total},{}", total - 1));
}

/// A file-triggered pipeline on a server reads an S3 prefix: three batches uploaded, the server
/// SIGKILLed while the second is scored, and every uploaded row is in exactly one output.
#[test]
fn a_served_s3_inbox_scores_each_object_once_across_a_killed_server() {
    if !services_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let s3 = moto();
    let endpoint = s3.endpoint();
    let dir = work.path().join("served");
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("inbox.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"inbox\"\ntrigger = \"files\"\npoll = \"1s\"\nquiet = \"1s\"\n\
             [[source]]\nname = \"tx\"\npath = \"s3://{BUCKET}/inbox/*.parquet\"\nincremental = true\n\
             [detect]\nalgorithm = \"hbos\"\ncolumns = [\"amount\"]\n\
             [[sink]]\npath = \"out/run=${{run.start:%Y%m%dT%H%M%S%.3f}}/\"\n[run]\nchunk_rows = 2500\n"
        ),
    )
    .unwrap();
    let allow = format!("s3://{BUCKET}/*");
    let mut server = crate::serve::Served::start(
        &dir,
        &["--allow-location", &allow],
        &[
            ("AWS_ACCESS_KEY_ID", "nomaly"),
            ("AWS_SECRET_ACCESS_KEY", "nomaly-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("NOMALY_FAULTS", "chunk_delay_ms=150"),
        ],
    );
    let token = server.token.clone().unwrap();
    let o = crate::nomaly_env(
        &[
            "schedule",
            "add",
            pipeline.to_str().unwrap(),
            "--server",
            &server.url(),
        ],
        &[("NOMALY_TOKEN", token.as_str())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs = |server: &crate::serve::Served| -> Vec<serde_json::Value> {
        let mut r = server.json("GET", "/api/runs?pipeline=inbox", None).1["runs"]
            .as_array()
            .unwrap()
            .clone();
        r.sort_by_key(|r| r["id"].as_i64());
        r
    };
    let nth = |server: &crate::serve::Served, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(r) = runs(server).get(n - 1) {
                return r["id"].as_i64().unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {n} never queued\n{}",
                server.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };

    upload_batch(work.path(), &endpoint, 1, &["a", "b"], 0);
    let first = nth(&server, 1);
    assert_eq!(server.wait_ended(first)["state"], "succeeded");
    // 4 objects of 5000 rows: 8 chunks of 150 ms at least; killed once 2 are committed.
    upload_batch(work.path(), &endpoint, 2, &["c", "d", "e", "f"], 2 * ROWS);
    let second = nth(&server, 2);
    server.wait_run(second, "committed two chunks", |r| {
        r["progress"]["chunks_done"].as_u64().unwrap_or(0) >= 2
    });
    server.kill_and_restart();
    let run = server.wait_ended(second);
    assert_eq!(
        (run["state"].as_str(), run["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{run}"
    );
    upload_batch(work.path(), &endpoint, 3, &["g"], 6 * ROWS);
    let third = nth(&server, 3);
    assert_eq!(server.wait_ended(third)["state"], "succeeded");
    let triggers: Vec<String> = runs(&server)
        .iter()
        .map(|r| r["trigger"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(triggers, ["files:2", "files:4", "files:1"]);

    let row = crate::query_outputs(
        &dir.join("out"),
        "SELECT count(*), count(DISTINCT id), max(id) FROM o",
    );
    let total = 7 * ROWS;
    assert_eq!(row, format!("{total},{total},{}", total - 1));
}
