//! Hosts that come and go during a run: an executor started mid-run gets tasks, one stopped with
//! SIGTERM (as an operator or Kubernetes stops a pod) tells the scheduler, finishes its tasks and
//! exits, and the run's output is the local engine's, byte for byte.

use super::{Cluster, QUICK_EXECUTOR, local_and_cluster_pipelines, spawn_run};
use crate::{assert_no_temp_files, assert_same_parts, part_files, report};
use std::time::{Duration, Instant};

/// Completed chunk jobs of the run, as the scheduler lists them.
fn chunks_done(cluster: &Cluster) -> usize {
    let jobs = cluster.json("/api/jobs").unwrap_or_default();
    jobs.as_array().map_or(0, |j| {
        j.iter()
            .filter(|j| {
                j["status"] == "Completed"
                    && j["job_name"].as_str().is_some_and(|n| n.contains("chunk"))
            })
            .count()
    })
}

#[test]
fn an_executor_joins_another_leaves_on_sigterm_and_the_output_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = local_and_cluster_pipelines(dir);
    let mut cluster = Cluster::start_quick_to_notice(1);
    // 24 chunks, each held back a little, so the run outlasts the comings and goings.
    let mut run = spawn_run(
        &file,
        &cluster.engine(),
        &[("NOMALY_FAULTS", "chunk_delay_ms=150")],
    );
    let staging = dir.join(".out_cluster.nomaly-staging");
    let still_running = |run: &mut std::process::Child, what: &str| {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before {what}"
        );
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while chunks_done(&cluster) < 1 {
        still_running(&mut run, "a chunk completed");
        assert!(Instant::now() < deadline, "no chunk completed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second executor joins the running job's cluster and is given chunk tasks: it is seen
    // writing a part file.
    let joined_at = chunks_done(&cluster);
    let mut args = vec!["executor".to_string()];
    args.extend(cluster.processes.executor_flags(1));
    args.extend(
        QUICK_EXECUTOR
            .into_iter()
            .chain(["--log-level-setting", "warn"])
            .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.spawn_env("executor1", &args, &[]);
    cluster.wait_for(|c| c.executors() == 2);
    while cluster.executor_writing_in(&staging) != Some(1) {
        still_running(&mut run, "the new executor wrote a part");
        assert!(Instant::now() < deadline, "the new executor got no task");
        std::thread::sleep(Duration::from_millis(2));
    }
    let new_writing_after = chunks_done(&cluster);

    // The first executor is stopped with SIGTERM while it writes a part: it leaves the cluster,
    // finishes the task it holds, and exits on its own.
    while cluster.executor_writing_in(&staging) != Some(0) {
        still_running(&mut run, "the first executor wrote again");
        assert!(
            Instant::now() < deadline,
            "the first executor got no more tasks"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let first = cluster.processes.children()[1].id();
    // SAFETY: a signal to our own child process, not yet reaped.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGTERM) };
    let stopped = Instant::now();
    let child = &mut cluster.processes.children_mut()[1];
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "executor0 still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let drained_in = stopped.elapsed();
    let left_at = chunks_done(&cluster);
    still_running(&mut run, "the first executor left");

    let o = run.wait_with_output().unwrap();
    cluster.assert_succeeded(&o);
    let r = report(&o);
    eprintln!(
        "executor1 joined after {joined_at} chunk jobs, wrote a part after {new_writing_after}; \
         executor0 left ({status}) {drained_in:?} after SIGTERM, after {left_at}; \
         {} chunk retries, {} attempt files removed, {} s",
        r["retries"], r["recovery"]["task_attempt_files_removed"], r["seconds"]
    );
    assert_eq!(r["output_rows"], 240_000);
    let (a, b) = (
        part_files(&dir.join("out_local")),
        part_files(&dir.join("out_cluster")),
    );
    assert_eq!(a.len(), 24);
    assert_same_parts("executors joining and leaving", &a, &b);
    assert_no_temp_files(&dir.join("out_cluster"));
    cluster.wait_for(|c| c.executors() == 1);
}
