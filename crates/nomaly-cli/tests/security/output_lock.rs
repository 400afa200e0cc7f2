//! One writer per output (SECURITY.md): a second run of an output being written is refused at
//! once, naming the first, and the first's output is byte-identical to a run alone; through
//! `nomaly serve` the second waits for the output instead.

use crate::serve::{Fixture, Served};
use crate::{assert_same_parts, nomaly_env, part_files, stderr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_second_run_of_an_output_is_refused_naming_the_first() {
    let f = Fixture::new();
    let alone = f.run_alone("locked", "out_locked", "iforest");
    // Each run that ends says so in notes.txt; a refused one announces nothing.
    let note = "notify = [{ type = \"command\", command = \"echo $NOMALY_STATUS >> notes.txt\" }]";
    let p = f.pipeline("locked", "out_locked", "iforest", note);
    // The first run is slowed (20 chunks of 150 ms) so the second starts while it writes.
    let mut first = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(["run", p.to_str().unwrap()])
        .env("NOMALY_FAULTS", "chunk_delay_ms=150")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = f.path().join(".out_locked.nomaly-lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid=")) {
        assert!(
            Instant::now() < deadline,
            "the first run never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = nomaly_env(&["run", p.to_str().unwrap()], &[]);
    let said = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(
        said.contains("is being written by another run")
            && said.contains(&format!("pid {}", first.id()))
            && said.contains("locked.toml"),
        "{said}"
    );
    // `resume` is refused the same way while the first runs.
    let resumed = nomaly_env(&["resume", p.to_str().unwrap()], &[]);
    assert_eq!(resumed.status.code(), Some(2), "{}", stderr(&resumed));
    let status = first.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(f.path().join("notes.txt")).unwrap(),
        "succeeded\n",
        "only the first run notifies"
    );
    assert!(!lock.exists(), "the lock is released with the run");
    assert_same_parts(
        "the first run's output against a run alone",
        &part_files(&f.path().join("out_locked")),
        &part_files(&alone),
    );
}

#[test]
fn served_runs_of_one_output_wait_for_each_other() {
    let f = Fixture::new();
    let alone = f.run_alone("served_lock", "out_served_lock", "iforest");
    let p = f.pipeline("served_lock", "out_served_lock", "iforest", "");
    let server = Served::start(
        f.path(),
        &["--max-runs", "2"],
        &[("NOMALY_FAULTS", "chunk_delay_ms=100")],
    );
    let body = serde_json::json!({"path": p.to_str().unwrap()});
    let a = server.submit(body.clone());
    let b = server.submit(body);
    // While `a` runs, `b` waits in the queue for the output (two slots are free).
    server.wait_run(a, "started", |r| r["state"] == "running");
    let (_, queue) = server.json("GET", "/api/queue", None);
    let waiting = queue["queued"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == b)
        .cloned()
        .unwrap_or_else(|| panic!("run {b} is not queued: {queue}"));
    assert_eq!(waiting["waiting_for"], "output", "{queue}");
    for id in [a, b] {
        let r = server.wait_ended(id);
        assert_eq!(r["state"], "succeeded", "{r}\n{}", server.log());
    }
    let started = |id: i64| server.run(id)["started_ms"].as_i64().unwrap();
    let finished = |id: i64| server.run(id)["finished_ms"].as_i64().unwrap();
    assert!(
        started(b) >= finished(a),
        "run {b} started before {a} ended"
    );
    assert_same_parts(
        "served output against a run alone",
        &part_files(&f.path().join("out_served_lock")),
        &part_files(&alone),
    );
}
