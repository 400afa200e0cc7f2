//! `nomaly serve` through a real server process on 127.0.0.1: its API, event streams, queue,
//! schedules, restart safety, and the terminal clients.

use super::{
    assert_same_parts, free_port, nomaly_env, part_files, stderr, stdout, write_tx_parquet,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod api_fuzz;
mod backfills;
mod browser;
mod file_trigger;
mod history_ui;
mod http;
mod logs;
mod models;
mod openapi;
mod retries;
mod schedules;

pub use http::{Received, follow_events, raw_request};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A `nomaly serve` process with its own job store; killed when dropped.
pub struct Served {
    pub port: u16,
    pub dir: PathBuf,
    pub token: Option<String>,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Served {
    /// Starts a server whose root (and job store) is `dir`.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut s = Served {
            port: free_port(),
            dir: dir.to_path_buf(),
            token: env
                .iter()
                .find(|(k, _)| *k == "NOMALY_TOKEN")
                .map(|(_, v)| v.to_string()),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let db = self.dir.join("jobs.db");
        let mut c = Command::new(env!("CARGO_BIN_EXE_nomaly"));
        c.args(["serve", "--port", &port, "--db"])
            .arg(&db)
            .arg("--allow-root")
            .arg(&self.dir)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("serve.log"))
                    .unwrap(),
            ));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().expect("start nomaly serve"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.request("GET", "/health", None).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the server did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Without NOMALY_TOKEN or --no-auth the server made a token beside its store.
        if self.token.is_none() && !self.args.iter().any(|a| a == "--no-auth") {
            let made = std::fs::read_to_string(self.dir.join("jobs.token"))
                .unwrap_or_else(|e| panic!("the server made no token file: {e}; {}", self.log()));
            self.token = Some(made.trim().to_string());
        }
    }

    /// SIGKILLs the server (no chance to clean up), then starts it again on the same store.
    pub fn kill_and_restart(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP request with the server's token (if any): `(status, body)`.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Option<(u16, String)> {
        let token = self.token.clone();
        raw_request(self.port, method, path, body, token.as_deref())
    }

    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let (status, text) = self
            .request(method, path, bytes.as_deref())
            .unwrap_or_else(|| panic!("{method} {path}: no answer; {}", self.log()));
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }

    pub fn submit(&self, body: serde_json::Value) -> i64 {
        let (status, v) = self.json("POST", "/api/runs", Some(body));
        assert_eq!(status, 201, "{v}");
        v["id"].as_i64().unwrap()
    }

    pub fn run(&self, id: i64) -> serde_json::Value {
        let (status, v) = self.json("GET", &format!("/api/runs/{id}"), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Waits until run `id` satisfies `done`, returning it.
    pub fn wait_run(
        &self,
        id: i64,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.run(id);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never {what}: {r}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ended(&self, id: i64) -> serde_json::Value {
        self.wait_run(id, "ended", |r| {
            !matches!(r["state"].as_str(), Some("queued") | Some("running"))
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 20 000-row Parquet input in row groups of 1 000 (20 chunks), and pipeline files over it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_tx_parquet(&dir.path().join("tx.parquet"), 0, 20_000, 1_000);
        Fixture { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name.toml` scoring the input into `out_<output>/` with `algorithm`.
    pub fn pipeline(&self, name: &str, output: &str, algorithm: &str, extra: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\n{extra}\ninput = \"tx.parquet\"\noutput = \"{output}/\"\n\
                 [detect]\nalgorithm = \"{algorithm}\"\ncolumns = [\"amount\", \"latency_ms\"]\n\
                 [run]\nchunk_rows = 1000\n"
            ),
        )
        .unwrap();
        path
    }

    /// The same pipeline run alone by `nomaly run` into `<output>_alone/`: the reference output.
    pub fn run_alone(&self, name: &str, output: &str, algorithm: &str) -> PathBuf {
        let alone = format!("{output}_alone");
        let p = self.pipeline(&format!("{name}_alone"), &alone, algorithm, "");
        let o = nomaly_env(&["run", p.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        self.path().join(alone)
    }
}

fn submit_path(p: &Path) -> serde_json::Value {
    serde_json::json!({"path": p.to_str().unwrap()})
}

/// Submit → event stream → completed report; every chunk's event arrives after its manifest
/// commit, in commit order, with progress between commits.
#[test]
fn a_submitted_run_streams_its_events_and_report() {
    let f = Fixture::new();
    let server = Served::start(f.path(), &[], &[("NOMALY_FAULTS", "chunk_delay_ms=100")]);
    let p = f.pipeline("streamed", "out_streamed", "iforest", "");
    let id = server.submit(submit_path(&p));
    let events = follow_events(server.port, id, server.token.as_deref());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "snapshot");
    assert_eq!(*kinds.last().unwrap(), "finished", "{kinds:?}");
    assert_eq!(
        events.last().unwrap().event["data"]["state"],
        "succeeded",
        "{}",
        server.log()
    );
    let commits: Vec<&Received> = events
        .iter()
        .filter(|e| e.event["kind"] == "chunk_committed")
        .collect();
    assert_eq!(commits.len(), 20, "{kinds:?}");
    // Each chunk's event comes after its commit and in commit order, and progress is reported
    // between commits while the run is active (how soon is measured by benchmarks/serve.py).
    let mut last = 0;
    for c in &commits {
        let committed = c.event["data"]["committed_at_ms"].as_i64().unwrap();
        assert!(c.at_ms >= committed && committed >= last, "{:?}", c.event);
        last = committed;
    }
    let first = events
        .iter()
        .position(|e| e.event["kind"] == "chunk_committed")
        .unwrap();
    let last_commit = events
        .iter()
        .rposition(|e| e.event["kind"] == "chunk_committed")
        .unwrap();
    assert!(
        events[first..last_commit]
            .iter()
            .any(|e| e.event["kind"] == "progress"),
        "no progress between commits: {kinds:?}"
    );
    let progress = events
        .iter()
        .rfind(|e| e.event["kind"] == "progress")
        .unwrap();
    assert!(
        progress.event["data"]["rows_total"] == 20_000,
        "{:?}",
        progress.event
    );
    // The manifest has the same commit times the events carried.
    let manifest =
        std::fs::read_to_string(f.path().join("out_streamed/_nomaly/manifest.jsonl")).unwrap();
    for c in &commits {
        let t = c.event["data"]["committed_at_ms"].as_i64().unwrap();
        assert!(
            manifest.contains(&format!("\"committed_at_unix_ms\":{t}")),
            "{t}"
        );
    }
    // The report, the chunks and the output.
    let (status, report) = server.json("GET", &format!("/api/runs/{id}/report"), None);
    assert_eq!(status, 200);
    assert_eq!(
        (report["status"].as_str(), report["output_rows"].as_u64()),
        (Some("succeeded"), Some(20_000))
    );
    let (_, chunks) = server.json("GET", &format!("/api/runs/{id}/chunks"), None);
    let chunks = chunks["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 20);
    assert_eq!(
        chunks
            .iter()
            .map(|c| c["rows"].as_u64().unwrap())
            .sum::<u64>(),
        20_000
    );
    let run = server.run(id);
    assert_eq!(run["progress"]["percent"], 100.0, "{run}");
    let alone = f.run_alone("streamed", "out_streamed", "iforest");
    assert_same_parts(
        "served vs nomaly run",
        &part_files(&f.path().join("out_streamed")),
        &part_files(&alone),
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("nomaly_rows_processed_total 20000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nomaly_runs{state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nomaly_chunk_seconds_count 20"),
        "{metrics}"
    );
}

/// Cancel (queued and running), timeout, priority order, resume after a cancel.
#[test]
fn cancel_timeout_and_priority() {
    let f = Fixture::new();
    let server = Served::start(
        f.path(),
        &["--max-runs", "1"],
        &[("NOMALY_FAULTS", "chunk_delay_ms=150")],
    );
    let slow = server.submit(submit_path(&f.pipeline("first", "out_first", "zscore", "")));
    // The others are submitted once it holds the only slot.
    server.wait_run(slow, "started", |r| r["state"] == "running");
    let low = server.submit(serde_json::json!({"path": f.pipeline("low", "out_low", "zscore", "").to_str().unwrap(), "priority": 0}));
    let dropped = server.submit(submit_path(&f.pipeline(
        "dropped",
        "out_dropped",
        "zscore",
        "",
    )));
    let high = server.submit(serde_json::json!({"path": f.pipeline("high", "out_high", "hbos", "").to_str().unwrap(), "priority": 5}));
    // The queue shows the order it will start in.
    let (_, q) = server.json("GET", "/api/queue", None);
    let order: Vec<i64> = q["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![high, low, dropped], "{q}");
    assert_eq!(q["queued"][0]["waiting_for"], "slots", "{q}");
    assert!(
        q["queued"][2]["estimated_start_ms"].as_i64().is_some(),
        "{q}"
    );
    // Cancel a queued run: it ends at once.
    let (status, v) = server.json("POST", &format!("/api/runs/{dropped}/cancel"), None);
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    // A run over its timeout ends timed_out.
    let timed = server.submit(serde_json::json!({"path": f.pipeline("timed", "out_timed", "zscore", "").to_str().unwrap(), "priority": 9, "timeout": "1s"}));
    for id in [slow, high, low, timed] {
        server.wait_ended(id);
    }
    let started = |id: i64| server.run(id)["started_ms"].as_i64().unwrap();
    assert!(started(timed) < started(high), "priority 9 before 5");
    assert!(started(high) < started(low), "priority 5 before 0");
    let timed_run = server.run(timed);
    assert_eq!(timed_run["state"], "timed_out", "{timed_run}");
    assert!(
        timed_run["error"].as_str().unwrap().contains("timeout"),
        "{timed_run}"
    );
    // Cancelling a finished run is a conflict.
    let (status, v) = server.json("POST", &format!("/api/runs/{high}/cancel"), None);
    assert_eq!(status, 409, "{v}");
    // Cancel a running run, then resume it: the output equals an uninterrupted run's.
    let id = server.submit(submit_path(&f.pipeline("again", "out_again", "ecod", "")));
    server.wait_run(id, "committed a chunk", |r| {
        r["progress"]["chunks_done"].as_u64().unwrap_or(0) >= 2
    });
    let (status, _) = server.json("POST", &format!("/api/runs/{id}/cancel"), None);
    assert_eq!(status, 200);
    let cancelled = server.wait_ended(id);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (status, v) = server.json("POST", &format!("/api/runs/{id}/resume"), None);
    assert_eq!(status, 200, "{v}");
    let resumed = server.wait_ended(id);
    assert_eq!(resumed["state"], "succeeded", "{resumed}\n{}", server.log());
    let (_, report) = server.json("GET", &format!("/api/runs/{id}/report"), None);
    // The cancel stopped work in flight: the resume reused what was committed and wrote the rest.
    let reused = report["recovery"]["chunks_reused"].as_u64().unwrap();
    assert!(
        reused >= 2 && reused < report["chunks"].as_u64().unwrap(),
        "{report}"
    );
    let alone = f.run_alone("again", "out_again", "ecod");
    assert_same_parts(
        "resumed vs alone",
        &part_files(&f.path().join("out_again")),
        &part_files(&alone),
    );
}

/// Two runs whose budgets do not fit together run one after the other; each output equals the
/// run alone.
#[test]
fn runs_whose_budgets_do_not_fit_together_take_turns() {
    let f = Fixture::new();
    // On Ballista standalone (the server's --engine): the runs' outputs still equal local runs.
    let server = Served::start(
        f.path(),
        &[
            "--memory-limit",
            "1GB",
            "--max-runs",
            "2",
            "--engine",
            "standalone",
        ],
        &[("NOMALY_FAULTS", "chunk_delay_ms=50")],
    );
    let a = server.submit(serde_json::json!({"path": f.pipeline("a", "out_a", "iforest", "").to_str().unwrap(), "memory_limit": "600MB"}));
    // b is submitted once a holds its memory: until a starts, b waits for the run ahead of it.
    server.wait_run(a, "started", |r| r["state"] != "queued");
    let b = server.submit(serde_json::json!({"path": f.pipeline("b", "out_b", "copod", "").to_str().unwrap(), "memory_limit": "600MB"}));
    let waiting = server.run(b);
    if waiting["state"] == "queued" {
        assert_eq!(waiting["queue"]["waiting_for"], "memory", "{waiting}");
    }
    let (ra, rb) = (server.wait_ended(a), server.wait_ended(b));
    assert_eq!(
        (ra["state"].as_str(), rb["state"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    assert!(
        rb["started_ms"].as_i64().unwrap() >= ra["finished_ms"].as_i64().unwrap(),
        "b started before a ended: {ra} {rb}"
    );
    assert_eq!(ra["memory_bytes"], 600 << 20);
    let (_, report) = server.json("GET", &format!("/api/runs/{a}/report"), None);
    assert_eq!(report["engine"], "standalone", "{report}");
    assert_eq!(
        report["memory_limit_bytes"],
        600 << 20,
        "the run's pool is its admitted budget"
    );
    for (name, alg) in [("a", "iforest"), ("b", "copod")] {
        let out = format!("out_{name}");
        let alone = f.run_alone(name, &out, alg);
        assert_same_parts(name, &part_files(&f.path().join(&out)), &part_files(&alone));
    }
    // A run that can never fit is refused at submission, saying why.
    let (status, v) = server.json(
        "POST",
        "/api/runs",
        Some(serde_json::json!({"path": f.pipeline("big", "out_big", "zscore", "").to_str().unwrap(), "memory_limit": "2GB"})),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("--memory-limit"),
        "{v}"
    );
}

/// A server SIGKILLed mid-run restarts: the run resumes from its checkpoint and its output is
/// byte-identical to an uninterrupted run's; the queued runs start in priority order.
#[test]
fn a_killed_server_resumes_its_run_and_keeps_its_queue() {
    let f = Fixture::new();
    let mut server = Served::start(
        f.path(),
        &["--max-runs", "1"],
        &[("NOMALY_FAULTS", "chunk_delay_ms=200")],
    );
    let running = server.submit(submit_path(&f.pipeline(
        "killed",
        "out_killed",
        "iforest",
        "",
    )));
    // The queued runs are submitted once the first one holds the only slot (else the higher
    // priorities would rightly start first).
    server.wait_run(running, "started", |r| r["state"] == "running");
    let low = server.submit(serde_json::json!({"path": f.pipeline("q_low", "out_q_low", "zscore", "").to_str().unwrap(), "priority": 1}));
    let high = server.submit(serde_json::json!({"path": f.pipeline("q_high", "out_q_high", "zscore", "").to_str().unwrap(), "priority": 7}));
    server.wait_run(running, "committed chunks", |r| {
        r["progress"]["chunks_done"].as_u64().unwrap_or(0) >= 4
    });
    server.kill_and_restart();
    let r = server.run(running);
    assert!(
        matches!(r["state"].as_str(), Some("queued") | Some("running")),
        "{r}"
    );
    assert_eq!(r["mode"], "resume", "{r}");
    let done = server.wait_ended(running);
    assert_eq!(done["state"], "succeeded", "{done}\n{}", server.log());
    assert_eq!(done["attempts"], 2, "{done}");
    let (_, report) = server.json("GET", &format!("/api/runs/{running}/report"), None);
    assert!(report["recovery"]["resumed"].as_bool().unwrap(), "{report}");
    assert!(
        report["recovery"]["chunks_reused"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let alone = f.run_alone("killed", "out_killed", "iforest");
    assert_same_parts(
        "killed and resumed vs alone",
        &part_files(&f.path().join("out_killed")),
        &part_files(&alone),
    );
    let (hi, lo) = (server.wait_ended(high), server.wait_ended(low));
    assert_eq!(
        (hi["state"].as_str(), lo["state"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    assert!(
        hi["started_ms"].as_i64() < lo["started_ms"].as_i64(),
        "{hi} {lo}"
    );
}

/// `nomaly submit | runs | status | cancel | retry` talk to the server's API.
#[test]
fn terminal_clients_use_the_api() {
    let f = Fixture::new();
    let server = Served::start(
        f.path(),
        &["--log-format", "json"],
        &[("NOMALY_FAULTS", "chunk_delay_ms=20")],
    );
    let url = server.url();
    let token = server.token.clone().unwrap();
    let cli = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--server", &url]);
        nomaly_env(&a, &[("NOMALY_TOKEN", &token)])
    };
    let p = f.pipeline("cli", "out_cli", "hbos", "");
    let o = cli(&["submit", p.to_str().unwrap(), "--priority", "3", "--follow"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("run 1 queued (cli"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    let o = cli(&["runs"]);
    let out = stdout(&o);
    assert!(
        out.contains("cli") && out.contains("succeeded") && out.contains("100%"),
        "{out}"
    );
    let o = cli(&["status", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["priority"].as_i64()),
        (Some("succeeded"), Some(3))
    );
    let o = cli(&["cancel", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already ended (succeeded)"),
        "{}",
        stderr(&o)
    );
    let o = cli(&["retry", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(server.wait_ended(1)["attempts"], 2);
    let o = cli(&["status", "99"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run 99"), "{}", stderr(&o));
    // A submission's errors carry the pipeline's place.
    let bad = f.path().join("bad.toml");
    std::fs::write(&bad, "input = \"tx.parquet\"\noutput = \"o/\"\n[detect]\nalgorithm = \"nope\"\ncolumns = [\"amount\"]\n").unwrap();
    let o = cli(&["submit", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml:4"), "{}", stderr(&o));
    // No server there: say how to start one.
    let o = nomaly_env(
        &[
            "runs",
            "--server",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nomaly serve"), "{}", stderr(&o));
    // A failed run queues its `on_failure` pipelines (registered with the server).
    let alert = f.pipeline("alert", "out_alert", "zscore", "");
    let (status, _) = server.json(
        "POST",
        "/api/schedules",
        Some(serde_json::json!({"path": alert.to_str().unwrap()})),
    );
    assert_eq!(status, 201);
    let failing = f.path().join("failing.toml");
    std::fs::write(&failing, "name = \"failing\"\non_failure = [\"alert\"]\ninput = \"tx.parquet\"\noutput = \"out_failing/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"no_such_column\"]\n").unwrap();
    let id = server.submit(serde_json::json!({"path": failing.to_str().unwrap()}));
    let failed = server.wait_ended(id);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("no_such_column"),
        "{failed}"
    );
    let alerted = server.wait_run(id + 1, "ran", |r| r["state"] == "succeeded");
    assert_eq!(
        (alerted["pipeline"].as_str(), alerted["trigger"].as_str()),
        (Some("alert"), Some(format!("on_failure:{id}").as_str()))
    );
    // --log-format json: every line of the server's log is a JSON object.
    let log = server.log();
    assert!(log.contains("nomaly serve listening"), "{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
