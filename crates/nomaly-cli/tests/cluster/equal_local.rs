//! SQL and a pipeline on a real cluster (a scheduler and two executors, separate processes)
//! against the local engine.

use super::{Cluster, alive, processes_naming};
use crate::{
    assert_no_temp_files, assert_same_parts, nomaly, nomaly_env, part_files, report, stderr,
    stdout, tree, write_tx_parquet,
};

/// SQL and a pipeline on a scheduler and two executors (separate processes) give the local
/// engine's answer and part files; the scheduler's REST API lists the jobs; no process survives.
#[test]
fn sql_and_pipelines_on_a_cluster_equal_local() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_tx_parquet(&dir.join("tx.parquet"), 0, 40_000, 5_000);
    let cluster = Cluster::start(2);
    let engine = cluster.engine();

    let q = "SELECT id, detect_anomalies('ecod', amount, latency_ms)['score'] AS s FROM tx ORDER BY s DESC, id LIMIT 5";
    let table = format!("tx={}", dir.join("tx.parquet").display());
    let run_sql = |engine: &str| {
        let o = nomaly(&[
            "sql", "--engine", engine, "--table", &table, "--format", "csv", "-e", q,
        ]);
        assert_eq!(o.status.code(), Some(0), "{engine}: {}", stderr(&o));
        stdout(&o)
    };
    let local = run_sql("local");
    assert_eq!(local.lines().count(), 6, "{local}");
    assert_eq!(run_sql(&engine), local);

    let pipeline = "input = \"tx.parquet\"\noutput = \"out_{name}/\"\n[detect]\nalgorithm = \"iforest\"\n\
                    columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 5000\n";
    let mut reports = Vec::new();
    // The cluster's pipeline names its engine in the file, from the environment.
    let address = format!("127.0.0.1:{}", cluster.port);
    for (name, engine_line) in [
        ("local", "engine = \"local\"\n"),
        ("cluster", "engine = \"ballista://${NOMALY_SCHEDULER}\"\n"),
    ] {
        let file = dir.join(format!("{name}.toml"));
        let text = format!("{}{engine_line}", pipeline.replace("{name}", name));
        std::fs::write(&file, text).unwrap();
        let o = nomaly_env(
            &["run", file.to_str().unwrap(), "--json", "--no-progress"],
            &[("NOMALY_SCHEDULER", &address)],
        );
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        reports.push(report(&o));
    }
    let (local, remote) = (&reports[0], &reports[1]);
    assert_eq!(remote["engine"], engine.as_str(), "{remote}");
    assert_eq!(remote["chunks"], 8, "{remote}");
    assert_eq!(
        remote["ballista_jobs"], 9,
        "the fit and one job per chunk: {remote}"
    );
    for key in ["input_rows", "output_rows", "anomalies", "chunks"] {
        assert_eq!(local[key], remote[key], "{key}");
    }
    let (a, b) = (
        part_files(&dir.join("out_local")),
        part_files(&dir.join("out_cluster")),
    );
    assert_eq!(a.len(), 8);
    assert_same_parts("local vs the cluster", &a, &b);
    // The executors wrote the part files: what came back to this process is the fit's states
    // and the chunks' summaries.
    let written: u64 = remote["sinks"][0]["bytes"].as_u64().unwrap();
    let received = remote["chunk_bytes_from_cluster"].as_u64().unwrap();
    assert!(remote["bytes_from_cluster"].as_u64().unwrap() > received);
    assert!(
        received > 0 && received * 100 <= written,
        "received {received} of {written}"
    );
    assert_eq!(remote["recovery"]["task_attempt_files_removed"], 0);

    examples_equal_local(dir, &engine);
    jobs_are_listed(&cluster, remote, &engine);

    // Stopped as an operator would (SIGTERM), every process of the cluster exits, and nothing
    // this test started (a command line naming its directories) is left running.
    let mut cluster = cluster;
    let pids = cluster.pids();
    assert!(pids.iter().all(|&p| alive(p)));
    let work = cluster.dir().to_path_buf();
    assert!(!processes_naming(&[dir, &work]).is_empty());
    cluster.terminate(std::time::Duration::from_secs(10));
    let left = processes_naming(&[dir, &work]);
    assert!(left.is_empty(), "processes left running: {left:?}");
}

/// The example pipelines (CSV chunks, steps and a join, a filtered CSV sink, a sink partitioned
/// into directories) write the same files on the cluster as locally.
fn examples_equal_local(dir: &std::path::Path, engine: &str) {
    for example in [
        "minimal",
        "multi_source_join",
        "per_segment",
        "validate_notify",
    ] {
        let outputs: Vec<Vec<(String, Vec<u8>)>> = ["local", engine]
            .iter()
            .enumerate()
            .map(|(i, engine)| {
                let out = dir.join(format!("{example}_{i}"));
                let o = nomaly_env(
                    &[
                        "run",
                        &format!("examples/pipelines/{example}.toml"),
                        "--engine",
                        engine,
                        "--json",
                    ],
                    &[("NOMALY_OUT", out.to_str().unwrap())],
                );
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{example} {engine}: {}",
                    stderr(&o)
                );
                assert_no_temp_files(&out);
                tree(&out)
                    .into_iter()
                    .filter(|(f, _)| f.contains("part-"))
                    .collect()
            })
            .collect();
        assert!(!outputs[0].is_empty(), "{example}");
        assert_same_parts(example, &outputs[0], &outputs[1]);
    }
}

/// The scheduler lists the SQL query's job and the pipeline's nine by name, Prometheus counts
/// them, and `nomaly jobs` / `nomaly job` print them.
fn jobs_are_listed(cluster: &Cluster, remote: &serde_json::Value, engine: &str) {
    let listing = cluster.json("/api/jobs").expect("/api/jobs answers");
    let jobs = listing.as_array().expect("a list of jobs");
    let completed = jobs.iter().filter(|j| j["status"] == "Completed").count();
    assert!(completed >= 10, "{listing}");
    // Jobs carry names: the pipeline's (the file's stem) with the fit or the chunk, and the SQL.
    let names: Vec<String> = jobs
        .iter()
        .map(|j| j["job_name"].as_str().unwrap_or_default().to_string())
        .collect();
    let tag = remote["ballista_job_tag"].as_str().expect("a job tag");
    let fit_name = format!("cluster: fit [{tag}]");
    assert!(names.contains(&fit_name), "{names:?}");
    for chunk in 0..8 {
        let name = format!("cluster: chunk {chunk} [{tag}]");
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("SELECT id, detect_anomalies")),
        "{names:?}"
    );

    // Prometheus metrics count them too.
    let (status, metrics) = cluster
        .http_get("/api/metrics")
        .expect("/api/metrics answers");
    assert_eq!(status, 200);
    let completed_metric: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("job_completed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no job_completed_total in {metrics}"));
    assert!(completed_metric >= 10, "{metrics}");

    // `nomaly jobs` and `nomaly job` print the same from the REST API.
    let listed = nomaly(&["jobs", "--scheduler", engine]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed = stdout(&listed);
    assert!(listed.contains("cluster: chunk 7"), "{listed}");
    assert!(listed.contains("2 executor(s)"), "{listed}");
    let fit = jobs
        .iter()
        .find(|j| j["job_name"] == fit_name.as_str())
        .unwrap();
    let id = fit["job_id"].as_str().unwrap();
    let shown = nomaly(&["job", id, "--scheduler", engine]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let shown = stdout(&shown);
    assert!(
        shown.contains(&format!("\"{fit_name}\": Completed")),
        "{shown}"
    );
    assert!(shown.contains("stage 1:"), "{shown}");
}
