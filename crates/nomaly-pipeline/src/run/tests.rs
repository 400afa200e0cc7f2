//! Runs driven through the library API, in process: the event stream, cancellation then resume,
//! and two runs at once. Outputs are compared byte for byte with uninterrupted runs alone.

use crate::error::PipelineError;
use crate::events::{RunEvent, RunObserver};
use crate::report::RunStatus;
use crate::run_dir::{MANIFEST_FILE, RUN_DIR};
use crate::{CompiledPipeline, PipelineFile, Run, RunMode, RunOptions, compile};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Writes `rows` rows (ids from 0) to a Parquet file in row groups of 1,000 rows: chunks of 1,000
/// rows at `chunk_rows = 1000`.
async fn write_input(path: &Path, rows: u64) {
    let ctx = datafusion::prelude::SessionContext::new();
    let sql = format!(
        "COPY (SELECT value AS id, 100.0 + ((value * 7919) % 1000) / 50.0 AS amount, \
         CAST((value * 104729) % 977 AS DOUBLE) AS latency_ms FROM generate_series(0, {})) \
         TO '{}' STORED AS PARQUET OPTIONS ('format.max_row_group_size' '1000')",
        rows - 1,
        path.display()
    );
    ctx.sql(&sql).await.unwrap().collect().await.unwrap();
}

/// A pipeline over `input` writing to `dir/<out>`, with `algorithm` on both features.
fn pipeline(dir: &Path, input: &Path, out: &str, algorithm: &str) -> CompiledPipeline {
    let file = dir.join(format!("{out}.toml"));
    let text = format!(
        "input = \"{}\"\noutput = \"{}\"\n[run]\nchunk_rows = 1000\n[resources]\ncpus = 2\n\
         [detect]\nalgorithm = \"{algorithm}\"\ncolumns = [\"amount\", \"latency_ms\"]\n",
        input.display(),
        dir.join(out).display()
    );
    std::fs::write(&file, text).unwrap();
    compile(PipelineFile::load(&file, &[], &crate::RunRequest::default()).unwrap()).unwrap()
}

/// The part files of an output directory, by name, with their bytes.
fn parts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut parts: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    parts.sort();
    assert!(!parts.is_empty(), "no part files in {}", dir.display());
    parts
}

/// The chunk of every commit line of a manifest, in file order.
fn committed_in_manifest_order(run_dir: &Path) -> Vec<usize> {
    std::fs::read_to_string(run_dir.join(MANIFEST_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "commit")
        .map(|v| v["chunk"].as_u64().unwrap() as usize)
        .collect()
}

async fn run_alone(p: &CompiledPipeline) -> PathBuf {
    let outcome = crate::run(p, &RunOptions::default()).await;
    let report = outcome.map_err(|f| f.error.to_string()).unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    p.sinks[0].path.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_manifest_and_end_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tx.parquet");
    write_input(&input, 12_000).await;
    let p = pipeline(dir.path(), &input, "out", "zscore");
    let mut run = Run::start(p.clone(), RunOptions::default());
    let mut events = Vec::new();
    while let Some(e) = run.next_event().await {
        events.push(e);
    }
    let report = run.wait().await.map_err(|f| f.error.to_string()).unwrap();
    assert!(
        matches!(&events[0], RunEvent::Started { resume: false, .. }),
        "{:?}",
        events[0]
    );
    let RunEvent::Finished { report: last } = events.last().unwrap() else {
        panic!("the last event is not Finished: {:?}", events.last());
    };
    assert_eq!(
        (last.status, last.output_rows),
        (RunStatus::Succeeded, 12_000)
    );
    assert_eq!(**last, report);
    let position = |f: &dyn Fn(&RunEvent) -> bool| events.iter().position(f).unwrap();
    let fit = position(&|e| {
        matches!(
            e,
            RunEvent::FitDone {
                input_rows: 12_000,
                ..
            }
        )
    });
    let scoring = position(&|e| matches!(e, RunEvent::ScoringStarted { chunks: 12, .. }));
    assert!(
        fit < scoring,
        "FitDone at {fit}, ScoringStarted at {scoring}"
    );
    let committed: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::ChunkCommitted { chunk, rows, .. } => {
                assert_eq!(*rows, 1000);
                Some(*chunk)
            }
            _ => None,
        })
        .collect();
    let manifest = committed_in_manifest_order(&p.sinks[0].path.join(RUN_DIR));
    assert_eq!(manifest.len(), 12);
    assert_eq!(
        committed, manifest,
        "ChunkCommitted events in manifest order"
    );
    let anomalies: u64 = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::ChunkCommitted { anomalies, .. } => Some(*anomalies),
            _ => None,
        })
        .sum();
    assert_eq!(anomalies, report.anomalies);
}

/// Cancels its run when it sees the first committed chunk (synchronously, on the committing
/// task), and keeps every event.
struct CancelOnFirstCommit {
    cancel: CancellationToken,
    seen: Mutex<Vec<RunEvent>>,
}

impl RunObserver for CancelOnFirstCommit {
    fn on_event(&self, event: &RunEvent) {
        if matches!(event, RunEvent::ChunkCommitted { .. }) {
            self.cancel.cancel();
        }
        self.seen.lock().unwrap().push(event.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_resumes_to_the_uninterrupted_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tx.parquet");
    write_input(&input, 40_000).await;
    let reference = run_alone(&pipeline(dir.path(), &input, "reference", "iforest")).await;

    let p = pipeline(dir.path(), &input, "out", "iforest");
    let cancel = CancellationToken::new();
    let observer = Arc::new(CancelOnFirstCommit {
        cancel: cancel.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let opts = RunOptions {
        observer: observer.clone(),
        cancel,
        ..Default::default()
    };
    let failure = Run::start(p.clone(), opts).wait().await.unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::Cancelled { .. }),
        "{}",
        failure.error
    );
    assert_eq!(failure.error.exit_code(), 130);
    assert_eq!(failure.report.status, RunStatus::Cancelled);
    let message = failure.error.to_string();
    assert!(message.contains("nomaly resume"), "{message}");
    let staging = crate::sink_writer::staging_dir(&p.sinks[0].path).join(RUN_DIR);
    let manifest = crate::run_dir::RunDir::at(&crate::sink_writer::staging_dir(&p.sinks[0].path))
        .read_manifest()
        .unwrap();
    let committed = manifest.commits.len();
    assert!(
        (1..40).contains(&committed),
        "{committed} of 40 chunks committed"
    );
    assert_eq!(manifest.stopped.as_deref(), Some("cancelled"));
    assert!(
        !p.sinks[0].path.exists(),
        "a cancelled run is not published"
    );
    {
        let seen = observer.seen.lock().unwrap();
        let last = seen.last();
        assert!(
            matches!(last, Some(RunEvent::Finished { report }) if report.status == RunStatus::Cancelled),
            "{last:?}"
        );
    }
    assert!(staging.is_dir());

    let report = crate::run(&p, &RunOptions::with_mode(RunMode::Resume { refit: false }))
        .await
        .map_err(|f| f.error.to_string())
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.recovery.chunks_reused, committed);
    assert!(report.recovery.model_reused);
    assert_eq!(parts(&p.sinks[0].path), parts(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_give_their_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_input(&a_in, 9_000).await;
    write_input(&b_in, 7_000).await;
    let a_alone = run_alone(&pipeline(dir.path(), &a_in, "a_alone", "iforest")).await;
    let b_alone = run_alone(&pipeline(dir.path(), &b_in, "b_alone", "ecod")).await;

    let a = Run::start(
        pipeline(dir.path(), &a_in, "a", "iforest"),
        RunOptions::default(),
    );
    let b = Run::start(
        pipeline(dir.path(), &b_in, "b", "ecod"),
        RunOptions::default(),
    );
    let (a, b) = tokio::join!(a.wait(), b.wait());
    for outcome in [&a, &b] {
        let report = outcome.as_ref().map_err(|f| f.error.to_string()).unwrap();
        assert_eq!(report.status, RunStatus::Succeeded);
    }
    assert_eq!(parts(&dir.path().join("a")), parts(&a_alone));
    assert_eq!(parts(&dir.path().join("b")), parts(&b_alone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_validate_and_run_score_the_last_step_without_detect() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tx.parquet");
    write_input(&input, 3_000).await;
    let file = dir.path().join("steps.toml");
    // The sink's `where` names a column only the last step has: planned against the first
    // source, validate would refuse it.
    let text = format!(
        "input = \"{}\"\n[run]\nchunk_rows = 1000\n\
         [[step]]\nname = \"flagged\"\nsql = \"SELECT id, amount, id % 7 = 0 AS sevens FROM input\"\n\
         [[step]]\nname = \"kept\"\nsql = \"SELECT *, amount * 2 AS doubled FROM flagged\"\n\
         [[sink]]\npath = \"{}\"\nwhere = \"sevens\"\n",
        input.display(),
        dir.path().join("out").display()
    );
    std::fs::write(&file, text).unwrap();
    let p =
        compile(PipelineFile::load(&file, &[], &crate::RunRequest::default()).unwrap()).unwrap();
    let summary = crate::validate(&p).await.unwrap();
    assert!(summary.contains("valid"), "{summary}");
    let explained = crate::explain(&p).await.unwrap();
    assert!(
        explained.contains("doubled"),
        "explain plans the last step:\n{explained}"
    );
    let report = crate::run(&p, &RunOptions::default())
        .await
        .map_err(|f| f.error.to_string())
        .unwrap();
    assert_eq!(report.output_rows, 3_000);
    // ids 0, 7, ..., 2996 pass the sink's filter.
    assert_eq!(report.sinks[0].rows, 429);
}
