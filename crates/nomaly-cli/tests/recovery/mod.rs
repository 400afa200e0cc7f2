//! Crashes, faults and resume through the real binary: `nomaly run` killed with SIGKILL at random
//! instants and resumed gives byte-identical output; injected transient read/write failures are
//! retried away; a permanent failure names its chunk and keeps every other chunk for `resume`.
//!
//! The longer soak (≥ 20 kills, release build) is `benchmarks/crash_soak.py`.

mod environment;
mod publish;
mod segments;

use super::pipeline::query;
use super::{nomaly_env, part_files, report, stderr, tree, write_tx_parquet};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROWS: u64 = 400_000;
const CHUNK_ROWS: u64 = 5_000;
const CHUNKS: usize = (ROWS / CHUNK_ROWS) as usize;

/// Writes the input: `rows` rows in 5000-row row groups.
fn write_input(dir: &Path, rows: u64) {
    write_tx_parquet(&dir.join("tx.parquet"), 0, rows, CHUNK_ROWS);
}

/// A 400k-row Parquet input with 5000-row row groups (80 chunks) and its pipeline.
fn job(dir: &Path) -> PathBuf {
    write_input(dir, ROWS);
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "input = \"tx.parquet\"\noutput = \"out/scored/\"\n[detect]\nalgorithm = \"iforest\"\n\
             columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = {CHUNK_ROWS}\n\
             [resources]\ncpus = 2\n[retry]\ninitial_delay = \"5ms\"\nmax_delay = \"50ms\"\nmax_retries = 8\n"
        ),
    )
    .unwrap();
    pipeline
}

/// The reference: one uninterrupted run of the same job in another directory.
fn reference(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let p = job(dir);
    let o = nomaly_env(&["run", p.to_str().unwrap(), "--no-progress"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let parts = part_files(&dir.join("out/scored"));
    assert_eq!(parts.len(), CHUNKS);
    parts
}

fn manifest_lines(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every manifest line is JSON"))
        .collect()
}

/// Checks a published output: every chunk committed once, each part file's size and CRC-32 as the
/// manifest says, ids 0..ROWS each exactly once, no temp files, no staging directory left.
fn check_output(dir: &Path) {
    let out = dir.join("out/scored");
    let lines = manifest_lines(&out.join("_nomaly"));
    let commits: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["event"] == "commit").collect();
    let chunks: BTreeSet<u64> = commits
        .iter()
        .map(|c| c["chunk"].as_u64().unwrap())
        .collect();
    assert_eq!(chunks.len(), CHUNKS, "each chunk committed");
    assert_eq!(lines.last().unwrap()["event"], "complete");
    for c in &commits {
        for part in c["parts"].as_array().unwrap() {
            let bytes = std::fs::read(out.join(part["path"].as_str().unwrap())).unwrap();
            assert_eq!(bytes.len() as u64, part["bytes"].as_u64().unwrap());
            let mut h = crc32fast::Hasher::new();
            h.update(&bytes);
            assert_eq!(h.finalize() as u64, part["crc32"].as_u64().unwrap());
        }
    }
    let temp: Vec<String> = tree(dir)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            n.ends_with(".tmp") || n.contains("nomaly-staging") || n.contains("nomaly-work")
        })
        .collect();
    assert!(temp.is_empty(), "left behind: {temp:?}");
    let rows = query(
        &[("o", &out)],
        "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM o",
    );
    assert_eq!(rows, vec![format!("{ROWS},{ROWS},0,{}", ROWS - 1)]);
}

/// A small deterministic generator for kill instants (seed from NOMALY_CRASH_SEED to replay).
struct Lcg(u64);

impl Lcg {
    fn next_unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn killed_runs_resume_to_byte_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = reference(&tmp.path().join("ref"));
    let dir = tmp.path().join("crash");
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = job(&dir);
    let p = pipeline.to_str().unwrap();
    let seed = std::env::var("NOMALY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261123);
    let mut rng = Lcg(seed);
    let kills = 6;
    let mut killed_while_running = 0;
    for k in 0..kills {
        // `resume` starts a run when there is none, so every attempt is the same command.
        let mut child = Command::new(env!("CARGO_BIN_EXE_nomaly"))
            .args(["resume", p, "--no-progress"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first kill lands anywhere early (often during the fit, before the run is recorded);
        // later ones within a second after the run directory exists, so each attempt makes some
        // progress and the job is still running at every kill.
        let recorded = dir.join("out/.scored.nomaly-staging/_nomaly/run.json");
        if k > 0 {
            let waiting = Instant::now();
            while !recorded.exists()
                && child.try_wait().unwrap().is_none()
                && waiting.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let delay = Duration::from_secs_f64(0.1 + 0.9 * rng.next_unit());
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {k} after {delay:?}");
    }
    assert!(
        killed_while_running >= 5,
        "only {killed_while_running} kills landed mid-run"
    );
    // Finish, timing from the command to its first new commit.
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let o = nomaly_env(&["resume", p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output_rows"], ROWS);
    assert_eq!(r["input_rows"], ROWS);
    let rec = &r["recovery"];
    eprintln!("final resume: {rec}");
    assert!(
        !stderr(&o).contains("already complete"),
        "the kills came too late"
    );
    assert_eq!(rec["resumed"], true, "{rec}");
    {
        assert_eq!(rec["model_reused"], true);
        // Two cpus: at most two chunks were in flight at the kill.
        assert!(rec["chunks_redone"].as_u64().unwrap() <= 2, "{rec}");
        let lines = manifest_lines(&dir.join("out/scored/_nomaly"));
        let last_resume = lines
            .iter()
            .rposition(|l| l["event"] == "resume")
            .expect("a resume event");
        if let Some(first) = lines[last_resume..].iter().find(|l| l["event"] == "commit") {
            let waited = first["committed_at_unix_ms"]
                .as_u64()
                .unwrap()
                .saturating_sub(started_ms);
            eprintln!("resume to first new commit: {waited} ms");
            assert!(
                waited < 5000,
                "{waited} ms to the first commit after resume"
            );
        }
    }
    assert_eq!(
        part_files(&dir.join("out/scored")),
        expected,
        "part files identical to an uninterrupted run"
    );
    check_output(&dir);
    // Resume is idempotent: on a completed run it prints the report and exits 0.
    let again = nomaly_env(&["resume", p, "--json"], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already complete"),
        "{}",
        stderr(&again)
    );
    assert_eq!(report(&again)["output_rows"], ROWS);

    // A kill after `complete` but before the publishing rename: resume finishes the publish.
    let out = dir.join("out/scored");
    std::fs::rename(&out, dir.join("out/.scored.nomaly-staging")).unwrap();
    let o = nomaly_env(&["resume", p, "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("already complete"), "{}", stderr(&o));
    assert_eq!(part_files(&out), expected);
    check_output(&dir);
}

#[test]
fn transient_faults_are_retried_and_a_permanent_one_names_its_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = reference(&tmp.path().join("ref"));

    // 10% of reads and 10% of writes fail: the job completes with identical output.
    let flaky = tmp.path().join("flaky");
    std::fs::create_dir_all(&flaky).unwrap();
    let p = job(&flaky);
    let o = nomaly_env(
        &["run", p.to_str().unwrap(), "--no-progress", "--json"],
        &[("NOMALY_FAULTS", "read=0.1,write=0.1,seed=11")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert!(
        r["retries"].as_u64().unwrap() >= 3,
        "faults were injected: {r}"
    );
    assert_eq!(part_files(&flaky.join("out/scored")), expected);
    check_output(&flaky);

    // Chunk 3 can never be written: the run fails naming it, every other chunk is kept.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let p = job(&broken);
    let p = p.to_str().unwrap();
    let o = nomaly_env(
        &["run", p, "--no-progress"],
        &[("NOMALY_FAULTS", "fail_chunk=3")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: chunk 3 (") && err.contains("gave up after 8 retries"),
        "{err}"
    );
    assert!(err.contains("nomaly resume"), "{err}");
    let staging = broken.join("out/.scored.nomaly-staging");
    let commits = manifest_lines(&staging.join("_nomaly"))
        .into_iter()
        .filter(|l| l["event"] == "commit")
        .count();
    assert_eq!(commits, CHUNKS - 1);
    assert_eq!(part_files(&staging).len(), CHUNKS - 1);
    assert!(!broken.join("out/scored").exists(), "nothing published");

    // `run` will not silently start over; `resume` finishes with only chunk 3 to do.
    let o = nomaly_env(&["run", p, "--no-progress"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!(
            "unfinished run ({} of {CHUNKS} chunks committed",
            CHUNKS - 1
        )),
        "{}",
        stderr(&o)
    );
    let started = Instant::now();
    let o = nomaly_env(&["resume", p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    eprintln!("resume with one chunk left: {:?}", started.elapsed());
    let r = report(&o);
    assert_eq!(r["recovery"]["chunks_reused"], CHUNKS - 1);
    assert_eq!(r["recovery"]["model_reused"], true);
    assert_eq!(part_files(&broken.join("out/scored")), expected);
    check_output(&broken);
}

#[test]
fn resume_refuses_a_changed_input_and_restart_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = job(dir);
    let p = p.to_str().unwrap();
    let o = nomaly_env(
        &["run", p, "--no-progress"],
        &[("NOMALY_FAULTS", "fail_chunk=0")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The input changes under the unfinished run: one row fewer.
    write_input(dir, ROWS - 1);
    let o = nomaly_env(&["resume", p, "--no-progress"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot resume")
            && err.contains("tx.parquet changed size")
            && err.contains("--refit"),
        "{err}"
    );
    // A changed [run] setting is refused too, naming it; [resources]/[retry] may change.
    let o = nomaly_env(
        &["resume", p, "--no-progress", "--set", "run.chunk_rows=6000"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`run` is now {\"chunk_rows\":6000}"),
        "{}",
        stderr(&o)
    );
    write_input(dir, ROWS);
    let o = nomaly_env(&["run", p, "--restart", "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["recovery"]["resumed"], false);
    check_output(dir);
}

#[test]
fn bad_rows_are_quarantined_with_their_place_or_fail_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 30000 rows, 4 bad: text in a numeric column (one among the first lines, where the schema is
    // inferred) and a short row.
    let bad = [5u64, 12000, 20000, 29999];
    let mut csv = String::from("id,amount,latency_ms\n");
    for i in 0..30000u64 {
        match i {
            20000 => csv.push_str("20000,1.0\n"),
            _ if bad.contains(&i) => csv.push_str(&format!("{i},oops,{i}\n")),
            _ => csv.push_str(&format!(
                "{i},{},{}\n",
                100.0 + ((i * 7919) % 1000) as f64 / 50.0,
                ((i * 104729) % 977) as f64
            )),
        }
    }
    std::fs::write(dir.join("tx.csv"), &csv).unwrap();
    std::fs::write(dir.join("q.toml"), bad_rows_pipeline("quarantine")).unwrap();
    std::fs::write(dir.join("f.toml"), bad_rows_pipeline("fail")).unwrap();

    let o = nomaly_env(
        &[
            "run",
            dir.join("q.toml").to_str().unwrap(),
            "--no-progress",
            "--json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["quarantined_rows"], 4);
    assert_eq!(r["input_rows"], 29996);
    assert_eq!(r["output_rows"], 29996);
    let qdir = dir.join("out/quarantine/_nomaly/quarantine");
    assert_eq!(r["quarantine_dir"], qdir.display().to_string());
    let mut set_aside = quarantined_lines(&qdir, &csv);
    set_aside.sort();
    assert_eq!(
        set_aside
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>(),
        vec![
            "12000,oops,12000",
            "20000,1.0",
            "29999,oops,29999",
            "5,oops,5"
        ]
    );
    assert!(
        set_aside[1].1.contains("incorrect number of fields"),
        "{set_aside:?}"
    );
    assert!(set_aside[0].1.contains("'oops'"), "{set_aside:?}");
    // Every other id is scored once; each chunk's lines = rows written + quarantined.
    assert_eq!(
        query(
            &[("o", &dir.join("out/quarantine"))],
            "SELECT count(*), count(DISTINCT id), sum(CASE WHEN id IN (5, 12000, 20000, 29999) THEN 1 ELSE 0 END) FROM o",
        ),
        vec!["29996,29996,0"]
    );
    for c in manifest_lines(&dir.join("out/quarantine/_nomaly"))
        .iter()
        .filter(|l| l["event"] == "commit")
    {
        assert_eq!(
            c["source_lines"].as_u64().unwrap(),
            c["rows"].as_u64().unwrap() + c["quarantined"].as_u64().unwrap()
        );
    }

    the_default_fails_and_clean_data_agrees(dir, &csv);
}

/// The bad-rows pipeline over `tx.csv` with `on_bad_rows = mode`, into `out/<mode>/`.
fn bad_rows_pipeline(mode: &str) -> String {
    format!(
        "input = \"tx.csv\"\noutput = \"out/{mode}/\"\n[detect]\nalgorithm = \"ecod\"\n\
         columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 5000\non_bad_rows = \"{mode}\"\n"
    )
}

/// The quarantined lines under `qdir` as `(line, reason)`; each record's byte offset points at
/// its line in `csv`, and its file is its chunk's.
fn quarantined_lines(qdir: &Path, csv: &str) -> Vec<(String, String)> {
    let mut set_aside = Vec::new();
    for (name, bytes) in tree(qdir) {
        for line in String::from_utf8(bytes).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let offset = v["byte_offset"].as_u64().unwrap() as usize;
            // The byte offset points at the line in the input file.
            assert!(
                csv[offset..].starts_with(v["line"].as_str().unwrap()),
                "{v}"
            );
            assert!(name.ends_with(&format!("{:05}.ndjson", v["chunk"].as_u64().unwrap())));
            set_aside.push((
                v["line"].as_str().unwrap().to_string(),
                v["reason"].as_str().unwrap().to_string(),
            ));
        }
    }
    set_aside
}

/// The default fails with exit 2, writes nothing, and says how to set bad lines aside (a bad line
/// past the sampled first lines is named); on clean data both modes write the same bytes.
fn the_default_fails_and_clean_data_agrees(dir: &Path, csv: &str) {
    let o = nomaly_env(
        &["run", dir.join("f.toml").to_str().unwrap(), "--no-progress"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("on_bad_rows = \"quarantine\""),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("out/fail").exists());
    std::fs::write(dir.join("tx.csv"), csv.replace("5,oops,5\n", "5,1.5,2.5\n")).unwrap();
    let o = nomaly_env(
        &["run", dir.join("f.toml").to_str().unwrap(), "--no-progress"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("12000,oops,12000"), "{}", stderr(&o));
    assert!(!dir.join("out/fail").exists());

    // On clean data the line reader gives the same bytes as DataFusion's reader.
    let clean = dir.join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let good: String = csv
        .lines()
        .filter(|l| !l.contains("oops") && *l != "20000,1.0")
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(clean.join("tx.csv"), good).unwrap();
    std::fs::write(clean.join("q.toml"), bad_rows_pipeline("quarantine")).unwrap();
    std::fs::write(clean.join("f.toml"), bad_rows_pipeline("fail")).unwrap();
    for f in ["q.toml", "f.toml"] {
        let o = nomaly_env(
            &["run", clean.join(f).to_str().unwrap(), "--no-progress"],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(
        part_files(&clean.join("out/quarantine")),
        part_files(&clean.join("out/fail"))
    );
}

#[test]
fn a_materialized_run_resumes_over_the_same_materialized_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_input(dir, 50_000);
    // DISTINCT mixes rows across chunks: the detect input is written once and chunked.
    let p = dir.join("m.toml");
    std::fs::write(
        &p,
        "input = \"tx.parquet\"\noutput = \"out/m/\"\n[[step]]\nname = \"d\"\n\
         sql = \"SELECT DISTINCT id, amount, latency_ms FROM input\"\n[detect]\nalgorithm = \"hbos\"\n\
         columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 5000\n[retry]\ninitial_delay = \"5ms\"\n",
    )
    .unwrap();
    let p = p.to_str().unwrap();
    let o = nomaly_env(
        &["run", p, "--no-progress"],
        &[("NOMALY_FAULTS", "fail_chunk=2")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("error: chunk 2 ("), "{}", stderr(&o));
    assert!(
        dir.join("out/.m.nomaly-work").is_dir(),
        "the materialized input is kept"
    );
    let o = nomaly_env(&["resume", p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["chunking"], "materialized");
    let chunks = r["chunks"].as_u64().unwrap();
    assert!(chunks >= 10, "{r}");
    assert_eq!(r["recovery"]["chunks_reused"], chunks - 1);
    assert_eq!(r["output_rows"], 50_000);
    assert!(
        !dir.join("out/.m.nomaly-work").exists(),
        "removed once complete"
    );
    assert_eq!(
        query(
            &[("o", &dir.join("out/m"))],
            "SELECT count(*), count(DISTINCT id) FROM o",
        ),
        vec!["50000,50000"]
    );
}

/// Ctrl-C (SIGINT) cancels a run through the library's cancellation: in-flight chunks stop,
/// committed ones stay, the process exits 130 naming `nomaly resume`, and the resumed output is
/// the uninterrupted run's, byte for byte.
#[test]
fn sigint_cancels_and_resume_finishes_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = reference(&tmp.path().join("ref"));
    let dir = tmp.path().join("interrupted");
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = job(&dir);
    let p = pipeline.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(["run", p, "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_dir = dir.join("out/.scored.nomaly-staging/_nomaly");
    let waiting = Instant::now();
    // The manifest is being appended to: look for a commit line without parsing a torn one.
    let committed = |run_dir: &Path| {
        std::fs::read_to_string(run_dir.join("manifest.jsonl"))
            .is_ok_and(|t| t.contains("\"event\":\"commit\""))
    };
    while !committed(&run_dir) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(waiting.elapsed() < Duration::from_secs(120), "no commit");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sends a signal to our own child process, which is still running.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("the run was cancelled"), "{err}");
    assert!(err.contains(&format!("`nomaly resume {p}`")), "{err}");
    let lines = manifest_lines(&run_dir);
    let commits = lines.iter().filter(|l| l["event"] == "commit").count();
    assert!(
        (1..CHUNKS).contains(&commits),
        "{commits} of {CHUNKS} chunks committed"
    );
    assert_eq!(lines.last().unwrap()["event"], "stopped");
    assert_eq!(lines.last().unwrap()["status"], "cancelled");
    assert!(
        err.contains(&format!("{commits} of {CHUNKS} chunks are committed")),
        "{err}"
    );

    let o = nomaly_env(&["resume", p, "--no-progress", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["recovery"]["chunks_reused"], commits as u64);
    assert_eq!(part_files(&dir.join("out/scored")), expected);
    check_output(&dir);
}
