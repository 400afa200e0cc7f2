//! Run dates and backfills through the real binary, on the bundled daily example (the bundled
//! transactions, one every five minutes from 2026-01-01, scored one UTC day per run).

use crate::{nomaly_env, part_files, stderr, stdout, tree};
use std::path::Path;
use std::time::SystemTime;

const DAILY: &str = "examples/pipelines/daily.toml";
pub(crate) const DAYS: [&str; 7] = [
    "2026-01-01",
    "2026-01-02",
    "2026-01-03",
    "2026-01-04",
    "2026-01-05",
    "2026-01-06",
    "2026-01-07",
];

fn daily(out: &Path, args: &[&str]) -> std::process::Output {
    nomaly_env(args, &[("NOMALY_OUT", out.to_str().unwrap())])
}

/// Every file of each day's output except the run's record of itself (`_nomaly/`, the report:
/// they hold times), with the part files' modification times.
fn day_files(out: &Path, day: &str) -> Vec<(String, Vec<u8>, SystemTime)> {
    let dir = out.join(format!("daily/date={day}"));
    tree(&dir)
        .into_iter()
        .filter(|(name, _)| name.starts_with("part-"))
        .map(|(name, bytes)| {
            let modified = std::fs::metadata(dir.join(&name))
                .unwrap()
                .modified()
                .unwrap();
            (name, bytes, modified)
        })
        .collect()
}

/// A 7-day backfill writes 7 outputs, each equal (byte for byte) to a run of that day alone;
/// re-running one day rewrites its directory only. `validate` shows the expanded values.
#[test]
fn a_backfill_writes_one_output_per_day_equal_to_each_day_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (filled, alone) = (tmp.path().join("filled"), tmp.path().join("alone"));
    let o = daily(
        &filled,
        &[
            "backfill",
            DAILY,
            "--from",
            DAYS[0],
            "--to",
            DAYS[6],
            "--no-progress",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("backfill: 7 of 7 intervals succeeded"),
        "{}",
        stderr(&o)
    );
    let mut dirs: Vec<String> = std::fs::read_dir(filled.join("daily"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    dirs.sort();
    assert_eq!(dirs, DAYS.map(|d| format!("date={d}")));
    let mut rows = 0;
    for day in DAYS {
        let o = daily(&alone, &["run", DAILY, "--date", day, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{day}: {}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        rows += report["output_rows"].as_u64().unwrap();
        let dir = |root: &Path| root.join(format!("daily/date={day}"));
        let (a, b) = (part_files(&dir(&filled)), part_files(&dir(&alone)));
        assert!(!a.is_empty());
        crate::assert_same_parts(day, &a, &b);
    }
    assert_eq!(rows, 2000, "the seven days hold every bundled row once");

    // Re-running the 3rd rewrites its directory (a new run record) and nothing else.
    let before: Vec<_> = DAYS.iter().map(|d| day_files(&filled, d)).collect();
    let record = |root: &Path| {
        std::fs::read_to_string(root.join("daily/date=2026-01-03/_nomaly/run.json")).unwrap()
    };
    let first = record(&filled);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = daily(&filled, &["run", DAILY, "--date", DAYS[2]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after: Vec<_> = DAYS.iter().map(|d| day_files(&filled, d)).collect();
    for (i, day) in DAYS.iter().enumerate() {
        if i == 2 {
            let bytes = |v: &[(String, Vec<u8>, SystemTime)]| {
                v.iter().map(|f| f.1.clone()).collect::<Vec<_>>()
            };
            assert_eq!(bytes(&before[i]), bytes(&after[i]), "same scores again");
            assert_ne!(before[i][0].2, after[i][0].2, "{day} was rewritten");
        } else {
            assert_eq!(before[i], after[i], "{day} was touched");
        }
    }
    assert_ne!(first, record(&filled), "the 3rd has a new run record");
    assert!(
        record(&filled).contains("\"start_ms\": 1767398400000"),
        "{}",
        record(&filled)
    );

    let o = daily(&filled, &["validate", DAILY, "--date", DAYS[3]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "for run.date = 2026-01-04, run.start = 2026-01-04T00:00:00+00:00, \
             run.end = 2026-01-05T00:00:00+00:00"
        ) && stdout(&o).contains("date=2026-01-04"),
        "{}",
        stdout(&o)
    );
}

/// Bad dates and parameters are refused with the flag and the fix, before anything runs.
#[test]
fn bad_dates_and_parameters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["run", DAILY, "--date", "2026-02-30"],
            "--date: '2026-02-30' is not a day",
        ),
        (
            vec!["run", DAILY, "--date", "2026-01-02", "--param", "region=eu"],
            "parameter [\"region\"] is not read",
        ),
        (vec!["run", DAILY, "--param", "region=eu'--"], "holds '\\''"),
        (
            vec![
                "backfill",
                DAILY,
                "--from",
                "2026-01-05",
                "--to",
                "2026-01-01",
            ],
            "the last day 2026-01-01 is before the first day 2026-01-05",
        ),
        (
            vec![
                "backfill",
                DAILY,
                "--from",
                "2099-01-01",
                "--to",
                "2099-01-02",
            ],
            "has ended yet",
        ),
        (
            vec![
                "backfill",
                "examples/pipelines/minimal.toml",
                "--from",
                "2026-01-01",
                "--to",
                "2026-01-02",
            ],
            "reads no ${run.…} value",
        ),
    ] {
        let o = daily(tmp.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    assert!(
        !tmp.path().join("daily").exists() && !tmp.path().join("minimal").exists(),
        "nothing was written"
    );
}

/// A stopped run resumes from its output directory for the day and parameters it recorded, to
/// the bytes of an uninterrupted run of that day.
#[test]
fn a_stopped_run_resumes_for_the_day_it_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    crate::write_tx_parquet(&dir.join("tx.parquet"), 0, 4_000, 1_000);
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        "input = \"tx.parquet\"\noutput = \"${OUT}/date=${run.date}/${param.region}/\"\n\
         [detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n[run]\nchunk_rows = 1000\n\
         [retry]\ninitial_delay = \"5ms\"\nmax_delay = \"20ms\"\nmax_retries = 1\n",
    )
    .unwrap();
    let p = file.to_str().unwrap();
    let run = |out: &str, faults: &str, args: &[&str]| {
        let mut all = vec!["run", p, "--date", "2026-01-05", "--param", "region=eu"];
        all.extend(args);
        let mut env = vec![("OUT", out)];
        if !faults.is_empty() {
            env.push(("NOMALY_FAULTS", faults));
        }
        nomaly_env(&all, &env)
    };
    let o = run("stopped", "fail_chunk=2", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let output = dir.join("stopped/date=2026-01-05/eu");
    assert!(!output.exists(), "nothing is published");
    // No --date or --param: the run directory says which.
    let o = nomaly_env(&["resume", output.to_str().unwrap()], &[("OUT", "stopped")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run("clean", "", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    crate::assert_same_parts(
        "resumed",
        &part_files(&output),
        &part_files(&dir.join("clean/date=2026-01-05/eu")),
    );
    // A run directory's values are not overridden.
    let o = nomaly_env(
        &["resume", output.to_str().unwrap(), "--date", "2026-01-06"],
        &[("OUT", "stopped")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("records its run's --date"),
        "{}",
        stderr(&o)
    );
}
