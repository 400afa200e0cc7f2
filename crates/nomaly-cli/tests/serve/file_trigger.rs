//! New data only, on a real server: a `trigger = "files"` pipeline over an incremental source is
//! queued when files land, reads only those, and scores every file exactly once although the
//! server is SIGKILLed while a batch is being scored.

use super::{Served, now_ms};
use crate::{nomaly_env, stderr, write_tx_parquet};
use std::path::Path;
use std::time::{Duration, Instant};

const POLL_MS: i64 = 1_000;
const QUIET_MS: i64 = 2_000;

/// Writes `rows` rows (ids from `first`) as `inbox/<name>.parquet`, whole: written beside the
/// inbox, then renamed in (a watched directory must never show half a file).
fn drop_file(dir: &Path, name: &str, first: u64, rows: u64) {
    let tmp = dir.join(format!("{name}.parquet.part"));
    write_tx_parquet(&tmp, first, rows, 1_000);
    std::fs::rename(&tmp, dir.join(format!("inbox/{name}.parquet"))).unwrap();
}

/// The pipeline's runs, oldest first.
fn runs(server: &Served) -> Vec<serde_json::Value> {
    let mut runs: Vec<serde_json::Value> =
        server.json("GET", "/api/runs?limit=100", None).1["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["pipeline"] == "arrivals")
            .cloned()
            .collect();
    runs.sort_by_key(|r| r["id"].as_i64());
    runs
}

/// Waits for the `n`-th run to exist, returning it.
fn wait_for_run(server: &Served, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = runs(server).get(n - 1) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "run {n} never queued\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn arriving_files_are_each_scored_once_across_a_killed_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    let file = dir.join("arrivals.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"arrivals\"\ntrigger = \"files\"\npoll = \"{POLL_MS}ms\"\nquiet = \"{QUIET_MS}ms\"\n\
             [[source]]\nname = \"tx\"\npath = \"inbox/*.parquet\"\nincremental = true\n\
             [detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n\
             [[sink]]\npath = \"out/batch=${{run.start:%Y%m%dT%H%M%S%.3f}}/\"\n\
             [run]\nchunk_rows = 1000\n"
        ),
    )
    .unwrap();
    // Every chunk takes at least 100 ms, so the kill below finds the second run mid-way.
    let mut server = Served::start(dir, &[], &[("NOMALY_FAULTS", "chunk_delay_ms=100")]);
    let token = server.token.clone().unwrap();
    let o = nomaly_env(
        &[
            "schedule",
            "add",
            file.to_str().unwrap(),
            "--server",
            &server.url(),
        ],
        &[("NOMALY_TOKEN", token.as_str())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Batch 1: two files. A run is queued within poll + quiet of their arrival (+ 3 s for the
    // server's tick and a loaded machine).
    let dropped = now_ms();
    drop_file(dir, "a", 0, 2_000);
    drop_file(dir, "b", 2_000, 2_000);
    let first = wait_for_run(&server, 1);
    let latency = first["submitted_ms"].as_i64().unwrap() - dropped;
    assert!(
        (QUIET_MS..=POLL_MS + QUIET_MS + 3_000).contains(&latency),
        "queued {latency} ms after the files landed"
    );
    eprintln!(
        "queued {latency} ms after the files landed (poll {POLL_MS} ms, quiet {QUIET_MS} ms)"
    );
    assert_eq!(first["trigger"], "files:2");
    assert_eq!(
        server.wait_ended(first["id"].as_i64().unwrap())["state"],
        "succeeded"
    );

    // Batch 2: 30 chunks; the server is killed once some are committed, and the run resumes.
    drop_file(dir, "c", 4_000, 30_000);
    let second = wait_for_run(&server, 2);
    let id = second["id"].as_i64().unwrap();
    server.wait_run(id, "committed a chunk", |r| {
        r["progress"]["chunks_done"].as_u64().unwrap_or(0) >= 2
    });
    server.kill_and_restart();
    let second = server.wait_ended(id);
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(second["attempts"], 2, "the kill interrupted it: {second}");

    // Batch 3: one more file; nothing else is ever queued.
    drop_file(dir, "d", 34_000, 1_000);
    let third = wait_for_run(&server, 3);
    assert_eq!(
        server.wait_ended(third["id"].as_i64().unwrap())["state"],
        "succeeded"
    );
    std::thread::sleep(Duration::from_millis((POLL_MS + QUIET_MS) as u64 * 2));
    let all = runs(&server);
    let triggers: Vec<&str> = all.iter().map(|r| r["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["files:2", "files:1", "files:1"], "{all:?}");

    // Every id of the 35 000 dropped rows is in exactly one output, once.
    let out = dir.join("out");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        3,
        "one output per run"
    );
    let row = crate::query_outputs(
        &out,
        "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(id) FROM o",
    );
    let sum: u64 = (0..35_000u64).sum();
    assert_eq!(row, format!("35000,35000,0,34999,{sum}"));
    let ledger = std::fs::read_to_string(dir.join(".nomaly-state/arrivals/consumed.json")).unwrap();
    let ledger: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    assert_eq!(ledger["consumed"].as_object().unwrap().len(), 4, "{ledger}");
    assert!(ledger.get("pending").is_none(), "{ledger}");
}
