//! A real Ballista cluster: `nomaly scheduler` and two `nomaly executor` processes on free loopback
//! ports. SQL and pipelines on it give what the local engine gives, byte for byte, and no process
//! outlives the test.

mod come_and_go;
mod compose;
mod equal_local;
mod flight_sql;
mod hosts;
mod separate_hosts;

use super::{
    assert_no_temp_files, assert_same_parts, free_port, nomaly, nomaly_env, part_files, report,
    stderr, stdout, write_tx_parquet,
};
use nomaly_tests::cluster::Processes;
use nomaly_tests::http::Request;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What [`Cluster::shuffled_query`] prints.
pub(crate) const SHUFFLED_ANSWER: &str = "k,n\n0,13334\n1,13333\n2,13333\n";

/// The scheduler and executors, killed (and reaped) when dropped, even when a test fails.
pub(crate) struct Cluster {
    /// The processes (the harness's: `nomaly_tests::cluster`), started as `nomaly <role>`.
    processes: Processes,
    pub port: u16,
    /// Sent with the harness's own REST calls (the scheduler's `--auth-token-file`).
    pub token: Option<String>,
    /// The CA of a scheduler serving TLS (`NOMALY_CLUSTER_CA`): the harness's REST calls then
    /// go through curl over HTTPS.
    pub ca: Option<String>,
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
        cluster.ca = env
            .iter()
            .find(|(k, _)| k == "NOMALY_CLUSTER_CA")
            .map(|(_, v)| v.clone());
        let p = cluster.port.to_string();
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
            let flags = cluster.processes.executor_flags(i);
            let mut args: Vec<&str> = vec!["executor"];
            args.extend(flags.iter().map(String::as_str));
            args.extend(["--log-level-setting", "warn"]);
            args.extend_from_slice(executor_flags);
            cluster.spawn_env(&format!("executor{i}"), &args, env);
        }
        cluster.wait_for(|c| c.executors() == executors);
        cluster
    }

    /// No processes yet; the scheduler will listen on `port`.
    pub fn empty(port: u16) -> Cluster {
        let launcher = Box::new(|role: &str| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_nomaly"));
            command.arg(role);
            command
        });
        Cluster {
            processes: Processes::new(port, launcher),
            port,
            token: None,
            ca: None,
        }
    }

    /// Starts `nomaly args` (the first is the role) with `env` set, its output in the logs.
    pub fn spawn_env(&mut self, name: &str, args: &[&str], env: &[(String, String)]) {
        let (role, flags) = args.split_first().expect("a role");
        self.processes.spawn(name, role, flags, env, &super::root());
    }

    /// Waits up to 60 s for `ready`, failing with the processes' logs.
    pub fn wait_for(&mut self, ready: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + nomaly_tests::cluster::READY_WITHIN;
        while !ready(self) {
            self.processes.assert_alive_until(deadline);
        }
    }

    pub fn logs(&self) -> String {
        self.processes.logs()
    }

    /// The directory of the processes' logs and the executors' work directories.
    pub fn dir(&self) -> &Path {
        self.processes.dir()
    }

    pub fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.port)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.children().iter().map(Child::id).collect()
    }

    /// SIGKILLs executor `i` (no goodbye to the scheduler) and reaps it.
    /// `o` exited 0; the failure names its stderr and the cluster's logs.
    #[track_caller]
    pub fn assert_succeeded(&self, o: &std::process::Output) {
        assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(o), self.logs());
    }

    /// The executor that holds a `.tmp` file under `dir` open (is writing a part there), if any.
    fn executor_writing_in(&self, dir: &Path) -> Option<usize> {
        let children = self.processes.children();
        (0..children.len() - 1).find(|i| {
            let fds = format!("/proc/{}/fd", children[1 + i].id());
            std::fs::read_dir(fds).is_ok_and(|d| {
                d.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|target| {
                        target.starts_with(dir) && target.to_string_lossy().ends_with(".tmp")
                    })
                })
            })
        })
    }

    /// Stops every process with SIGTERM (as an operator or a container runtime does) and waits
    /// for each to exit; fails naming those still running after `within`.
    pub fn terminate(&mut self, within: Duration) {
        for c in self.processes.children() {
            // SAFETY: a signal to our own child process, not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + within;
        let mut left = Vec::new();
        for c in self.processes.children_mut() {
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    left.push(c.id());
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(
            left.is_empty(),
            "still running {within:?} after SIGTERM: {left:?}\n{}",
            self.logs()
        );
    }

    fn kill_executor(&mut self, i: usize) {
        let child = &mut self.processes.children_mut()[1 + i];
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// The scheduler's REST API: `(status, body)`, or `None` while it does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        if let Some(ca) = &self.ca {
            return self.https_get(ca, path);
        }
        let request = Request {
            token: self.token.as_deref(),
            timeout: Some(Duration::from_secs(10)),
            ..Request::get(path)
        };
        request.send(self.port).map(|r| (r.status, r.body))
    }

    /// [`http_get`](Self::http_get) over HTTPS, trusting `ca` (curl).
    fn https_get(&self, ca: &str, path: &str) -> Option<(u16, String)> {
        let mut curl = Command::new("curl");
        curl.args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = &self.token {
            curl.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let o = curl
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, status) = text.rsplit_once('\n')?;
        Some((
            status.trim().parse().ok().filter(|s| *s != 0)?,
            body.to_string(),
        ))
    }

    /// A GROUP BY whose stages shuffle between the executors, over 40,000 rows written into
    /// `dir`, run by `nomaly sql` with `env`; [`SHUFFLED_ANSWER`] is what it prints.
    pub fn shuffled_query(&self, dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
        let tx = dir.join("tx.parquet");
        if !tx.exists() {
            write_tx_parquet(&tx, 0, 40_000, 5_000);
        }
        let table = format!("tx={}", tx.display());
        let shuffled = "SELECT id % 3 AS k, count(*) AS n FROM tx GROUP BY k ORDER BY k";
        let engine = self.engine();
        let args = [
            "sql", "--engine", &engine, "--table", &table, "--format", "csv", "-e", shuffled,
        ];
        nomaly_env(&args, env)
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

pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every process of this machine whose command line names one of `paths` (what a test started
/// with its own directories), as `pid: command line`.
pub(crate) fn processes_naming(paths: &[&Path]) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            paths
                .iter()
                .any(|p| cmdline.contains(&*p.to_string_lossy()))
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
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

/// Scheduler flags that notice a lost executor within seconds (a 3 s timeout)...
const QUICK_SCHEDULER: [&str; 4] = [
    "--executor-timeout-seconds",
    "3",
    "--expire-dead-executor-interval-seconds",
    "1",
];
/// ...with executors that heartbeat every second.
const QUICK_EXECUTOR: [&str; 2] = ["--executor-heartbeat-interval-seconds", "1"];

impl Cluster {
    /// [`Cluster::start`] with [`QUICK_SCHEDULER`] and [`QUICK_EXECUTOR`].
    fn start_quick_to_notice(executors: usize) -> Cluster {
        Cluster::start_with(executors, &QUICK_SCHEDULER, &QUICK_EXECUTOR)
    }
}

/// `nomaly run FILE --engine ENGINE --json --no-progress` in the background, with `env` set.
fn spawn_run(file: &Path, engine: &str, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--engine",
            engine,
            "--json",
            "--no-progress",
        ])
        .envs(env.iter().copied())
        .current_dir(super::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    let mut cluster = Cluster::start_quick_to_notice(2);
    let engine = cluster.engine();
    let run = spawn_run(&file, &engine, &[]);
    // Kill, once the fit and a first chunk are done, the executor that is writing a part file
    // at that moment (it holds a `.tmp` of the staging directory open), while the run is alive.
    let staging = dir.join(".out_cluster.nomaly-staging");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut running_listed = None;
    let mut run = run;
    loop {
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
        if done >= 1
            && running_listed.is_some()
            && let Some(victim) = cluster.executor_writing_in(&staging)
        {
            cluster.kill_executor(victim);
            break;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before an executor could be killed while writing"
        );
        assert!(Instant::now() < deadline, "no chunk completed: {jobs}");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run must still be running when its executor is killed"
    );
    let (name, listed) = running_listed.expect("a chunk job was seen running");
    assert!(listed.contains("Running"), "{name}: {listed}");
    assert!(listed.contains("cluster: chunk"), "{listed}");
    let o = run.wait_with_output().unwrap();
    cluster.assert_succeeded(&o);
    let r = report(&o);
    eprintln!(
        "after the kill: {} chunk retries {:?}, {} task attempt files removed, {} s",
        r["retries"],
        r["recovery"]["retries"],
        r["recovery"]["task_attempt_files_removed"],
        r["seconds"]
    );
    // The killed attempt's half-written part was found and removed, and its chunk written again.
    assert!(
        r["recovery"]["task_attempt_files_removed"].as_u64() >= Some(1),
        "the kill hit no part being written: {r}"
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
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be interrupted"
    );
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
    // The interrupt hit work in flight: the run had chunk jobs on the cluster to cancel.
    assert!(said >= 1, "the run cancelled no job:\n{err}");
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
