//! A real Ballista cluster: `nomaly scheduler` and two `nomaly executor` processes on free loopback
//! ports. SQL and pipelines on it give what the local engine gives, byte for byte, and no process
//! outlives the test.

mod compose;
mod flight_sql;

use super::{
    assert_no_temp_files, assert_same_parts, free_port, nomaly, nomaly_env, part_files, report,
    stderr, stdout, tree, write_tx_parquet,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The scheduler and executors, killed (and reaped) when dropped, even when a test fails.
pub(crate) struct Cluster {
    children: Vec<Child>,
    pub port: u16,
    /// Sent with the harness's own REST calls (the scheduler's `--auth-token-file`).
    pub token: Option<String>,
    logs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a scheduler and `executors` executors (2 task slots each) and waits until every
    /// executor has registered.
    pub fn start(executors: usize) -> Cluster {
        Cluster::start_with(executors, &[], &[])
    }

    /// [`Cluster::start`] with more flags for the scheduler and for every executor.
    pub fn start_with(
        executors: usize,
        scheduler_flags: &[&str],
        executor_flags: &[&str],
    ) -> Cluster {
        Cluster::start_with_env(executors, scheduler_flags, executor_flags, &[])
    }

    /// [`Cluster::start_with`], every process with `env` set (object-store credentials).
    pub fn start_with_env(
        executors: usize,
        scheduler_flags: &[&str],
        executor_flags: &[&str],
        env: &[(String, String)],
    ) -> Cluster {
        let mut cluster = Cluster::empty(free_port());
        cluster.token = env
            .iter()
            .find(|(k, _)| k == "NOMALY_CLUSTER_TOKEN")
            .map(|(_, v)| v.clone());
        let (port, logs) = (cluster.port, cluster.logs.clone());
        let p = port.to_string();
        let mut args = vec![
            "scheduler",
            "--bind-port",
            &p,
            "--log-level-setting",
            "warn",
        ];
        args.extend_from_slice(scheduler_flags);
        cluster.spawn_env("scheduler", &args, env);
        cluster.wait_for(|c| c.http_get("/api/state").is_some_and(|(s, _)| s == 200));
        for i in 0..executors {
            let work = logs.join(format!("work{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let ports: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
            let mut args = vec![
                "executor",
                "--scheduler-host",
                "127.0.0.1",
                "--scheduler-port",
                &p,
                "--bind-port",
                &ports[0],
                "--bind-grpc-port",
                &ports[1],
                "--bind-health-port",
                &ports[2],
                "--work-dir",
                work.to_str().unwrap(),
                "--vcores",
                "2",
                "--scheduler-connect-timeout-seconds",
                "30",
                "--log-level-setting",
                "warn",
            ];
            args.extend_from_slice(executor_flags);
            cluster.spawn_env(&format!("executor{i}"), &args, env);
        }
        cluster.wait_for(|c| c.executors() == executors);
        cluster
    }

    /// No processes yet; the scheduler will listen on `port`.
    pub fn empty(port: u16) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        Cluster {
            children: Vec::new(),
            port,
            token: None,
            logs: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// Starts `nomaly args` with `env` set, its output in the cluster's logs.
    pub fn spawn_env(&mut self, name: &str, args: &[&str], env: &[(String, String)]) {
        let log = |suffix: &str| std::fs::File::create(self.logs.join(format!("{name}.{suffix}")));
        let child = Command::new(env!("CARGO_BIN_EXE_nomaly"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(super::root())
            .stdin(Stdio::null())
            .stdout(log("out").unwrap())
            .stderr(log("err").unwrap())
            .spawn()
            .expect("start nomaly");
        self.children.push(child);
    }

    /// Waits up to 60 s for `ready`, failing with the processes' logs.
    pub fn wait_for(&mut self, ready: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("a cluster process exited ({status}):\n{}", self.logs());
                }
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not ready in 60 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.logs).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push_str(&format!("--- {}\n{text}\n", p.display()));
            }
        }
        out
    }

    pub fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.port)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// SIGKILLs executor `i` (no goodbye to the scheduler) and reaps it.
    fn kill_executor(&mut self, i: usize) {
        let child = &mut self.children[1 + i];
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// The scheduler's REST API: `(status, body)`, or `None` while it does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n"
        )
        .ok()?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Some((status, body))
    }

    /// The registered executors, from `/api/executors`.
    pub fn executors(&self) -> usize {
        self.json("/api/executors")
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    }

    pub fn json(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = self.http_get(path)?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

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

    // The example pipelines (CSV chunks, steps and a join, a filtered CSV sink, a sink
    // partitioned into directories) write the same files on the cluster as here.
    for example in [
        "minimal",
        "multi_source_join",
        "per_segment",
        "validate_notify",
    ] {
        let outputs: Vec<Vec<(String, Vec<u8>)>> = ["local", engine.as_str()]
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

    // The scheduler saw the SQL query's job and the pipeline's nine.
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
    let listed = nomaly(&["jobs", "--scheduler", &engine]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed = stdout(&listed);
    assert!(listed.contains("cluster: chunk 7"), "{listed}");
    assert!(listed.contains("2 executor(s)"), "{listed}");
    let fit = jobs
        .iter()
        .find(|j| j["job_name"] == fit_name.as_str())
        .unwrap();
    let id = fit["job_id"].as_str().unwrap();
    let shown = nomaly(&["job", id, "--scheduler", &engine]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let shown = stdout(&shown);
    assert!(
        shown.contains(&format!("\"{fit_name}\": Completed")),
        "{shown}"
    );
    assert!(shown.contains("stage 1:"), "{shown}");

    let pids = cluster.pids();
    assert!(pids.iter().all(|&p| alive(p)));
    drop(cluster);
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "cluster processes left running: {left:?}");
}

/// An unreachable scheduler is a clear error naming the address and how to start one.
#[test]
fn an_unreachable_cluster_says_how_to_start_one() {
    let port = free_port();
    let o = nomaly(&[
        "sql",
        "--engine",
        &format!("ballista://127.0.0.1:{port}"),
        "-e",
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("ballista://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("nomaly scheduler"), "{err}");
    let bad = nomaly(&[
        "sql",
        "--engine",
        "ballista://host:notaport",
        "-e",
        "SELECT 1",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("not a number"), "{}", stderr(&bad));
}

/// Writes `tx.parquet` (240,000 rows: 24 chunks of 10,000) and one iforest pipeline twice,
/// `local.toml` (into `out_local/`) and `cluster.toml` (into `out_cluster/`); runs the local one
/// and returns the cluster one's file.
fn local_and_cluster_pipelines(dir: &Path) -> PathBuf {
    write_tx_parquet(&dir.join("tx.parquet"), 0, 240_000, 10_000);
    let pipeline = "input = \"tx.parquet\"\noutput = \"out_{name}/\"\n[detect]\nalgorithm = \"iforest\"\n\
                    columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 10000\n";
    for name in ["local", "cluster"] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            pipeline.replace("{name}", name),
        )
        .unwrap();
    }
    let local = nomaly(&[
        "run",
        dir.join("local.toml").to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    dir.join("cluster.toml")
}

/// One of two executors SIGKILLed while a pipeline's chunk jobs run: Ballista notices (1 s
/// heartbeats, a 3 s timeout) and re-runs its tasks on the other executor, the client retries a
/// chunk whose result it could not fetch, and the output is byte-identical to the local engine's,
/// with no partial or second part file.
#[test]
fn a_pipeline_survives_losing_an_executor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = local_and_cluster_pipelines(dir);
    let mut cluster = Cluster::start_with(
        2,
        &[
            "--executor-timeout-seconds",
            "3",
            "--expire-dead-executor-interval-seconds",
            "1",
        ],
        &["--executor-heartbeat-interval-seconds", "1"],
    );
    let engine = cluster.engine();
    let run = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--engine",
            &engine,
            "--json",
            "--no-progress",
        ])
        .current_dir(super::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill, once the fit and a first chunk are done, an executor that ran tasks (its work
    // directory holds shuffle output) while a part file is being written.
    let staging = dir.join(".out_cluster.nomaly-staging");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut running_listed = None;
    let victim = loop {
        let jobs = cluster.json("/api/jobs").unwrap_or_default();
        // While they run, the REST API lists the chunk jobs by name with their progress, and so
        // does `nomaly jobs`.
        if running_listed.is_none()
            && let Some(job) = jobs.as_array().and_then(|j| {
                j.iter().find(|j| {
                    j["status"] == "Running"
                        && j["job_name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("cluster: chunk"))
                        && j["percent_complete"].is_number()
                })
            })
        {
            let listed = stdout(&nomaly(&["jobs", "--scheduler", &engine]));
            if listed.contains("Running") {
                running_listed = Some((job["job_name"].clone(), listed));
            }
        }
        let done = jobs.as_array().map_or(0, |j| {
            j.iter()
                .filter(|j| {
                    j["status"] == "Completed"
                        && j["job_name"].as_str().is_some_and(|n| n.contains("chunk"))
                })
                .count()
        });
        let writing = std::fs::read_dir(&staging)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false);
        let busy = (0..2).find(|i| {
            std::fs::read_dir(cluster.logs.join(format!("work{i}")))
                .is_ok_and(|mut d| d.next().is_some())
        });
        if let (true, true, Some(i), true) = (done >= 1, writing, busy, running_listed.is_some()) {
            break i;
        }
        assert!(Instant::now() < deadline, "no chunk completed: {jobs}");
        std::thread::sleep(Duration::from_millis(5));
    };
    cluster.kill_executor(victim);
    let (name, listed) = running_listed.expect("a chunk job was seen running");
    assert!(listed.contains("Running"), "{name}: {listed}");
    assert!(listed.contains("cluster: chunk"), "{listed}");
    let o = run.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&o),
        cluster.logs()
    );
    let r = report(&o);
    eprintln!(
        "after the kill: {} chunk retries {:?}, {} task attempt files removed, {} s",
        r["retries"],
        r["recovery"]["retries"],
        r["recovery"]["task_attempt_files_removed"],
        r["seconds"]
    );
    assert_eq!(r["output_rows"], 240_000);
    let (a, b) = (
        part_files(&dir.join("out_local")),
        part_files(&dir.join("out_cluster")),
    );
    assert_eq!(a.len(), 24);
    assert_same_parts("after losing an executor", &a, &b);
    assert_no_temp_files(&dir.join("out_cluster"));
    // Only the survivor is left registered.
    cluster.wait_for(|c| c.executors() == 1);
}

/// Ctrl-C during a run on a cluster: the run stops (exit 130), its jobs still in flight are
/// cancelled on the cluster rather than left running, and `nomaly resume` on the cluster finishes
/// the output byte-identical to a local run.
#[test]
fn an_interrupted_cluster_run_cancels_its_jobs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = local_and_cluster_pipelines(dir);
    let cluster = Cluster::start(2);
    let engine = cluster.engine();
    let child = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--engine",
            &engine,
            "--no-progress",
        ])
        .current_dir(super::root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = dir.join(".out_cluster.nomaly-staging/_nomaly/manifest.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("\"event\":\"commit\"")) {
        assert!(Instant::now() < deadline, "no chunk committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: a signal to our own child process, which is still running.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    // The run cancelled its jobs before it exited: none is left queued or running, and the
    // scheduler lists as many cancelled as the run said.
    // The number the run printed right after `text` (0 when it printed none).
    let number_after = |text: &str| -> usize {
        err.split(text)
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let said = number_after("cancelled ");
    let jobs = cluster.json("/api/jobs").unwrap();
    let jobs = jobs.as_array().unwrap();
    let unfinished = jobs
        .iter()
        .filter(|j| matches!(j["status"].as_str(), Some("Queued" | "Running")))
        .count();
    assert_eq!(unfinished, 0, "{jobs:?}");
    let cancelled = jobs
        .iter()
        .filter(|j| j["job_status"] == "Failed: Cancelled")
        .count();
    // A chunk's job can complete on the cluster between the run's cancel and the scheduler acting
    // on it (seen once in CI: 3 said, 2 cancelled, the third completed 2 ms after): each job the
    // run cancelled ended cancelled, or completed without being committed.
    let committed = number_after("cancelled. ");
    let chunks_completed = jobs
        .iter()
        .filter(|j| {
            j["status"] == "Completed"
                && j["job_name"]
                    .as_str()
                    .is_some_and(|n| n.contains(": chunk "))
        })
        .count();
    assert!(
        cancelled <= said && cancelled + chunks_completed.saturating_sub(committed) >= said,
        "said {said}, cancelled {cancelled}, chunks completed {chunks_completed}, committed \
         {committed}\n{err}\n{jobs:?}"
    );

    let o = nomaly(&[
        "resume",
        file.to_str().unwrap(),
        "--engine",
        &engine,
        "--json",
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        part_files(&dir.join("out_local")),
        part_files(&dir.join("out_cluster"))
    );
}
