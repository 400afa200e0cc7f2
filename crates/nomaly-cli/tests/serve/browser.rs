//! The dashboard in a real browser: Debian's Chromium, headless, driven through ChromeDriver's
//! WebDriver protocol (plain JSON over HTTP). `scripts/test-services.sh` installs both.
//! Screenshots go to `target/nomaly-artifacts/dashboard/`.

use super::{Fixture, Served, raw_request};
use crate::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process with one headless Chromium session; both end when dropped.
pub(super) struct Browser {
    port: u16,
    session: String,
    driver: Child,
}

impl Browser {
    pub(super) fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the dashboard test needs Debian's chromium and chromium-driver; scripts/test-services.sh installs them"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while raw_request(port, "GET", "/status", None, None).is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]}
        }}});
        let (status, body) = raw_request(
            port,
            "POST",
            "/session",
            Some(caps.to_string().as_bytes()),
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 200, "{v}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            port,
            session,
            driver,
        }
    }

    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let path = format!("/session/{}{path}", self.session);
        let body = body.to_string();
        let (status, text) = raw_request(self.port, method, &path, Some(body.as_bytes()), None)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    pub(super) fn goto(&self, url: &str) {
        self.call("POST", "/url", serde_json::json!({"url": url}));
    }

    /// Runs a script in the page; its return value.
    pub(super) fn eval(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// Runs the accessibility audit (`a11y_audit.js`) on the page as it stands and fails the test,
    /// with a screenshot, if it finds a violation.
    pub(super) fn audit(&self, view: &str) {
        let found = self.eval(include_str!("a11y_audit.js"));
        let found: Vec<String> = found
            .as_array()
            .unwrap_or_else(|| panic!("the audit returned {found}"))
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect();
        if !found.is_empty() {
            let shot = self.screenshot(&format!("a11y-{view}"));
            panic!(
                "accessibility audit of the {view} view (screenshot {}):\n{}",
                shot.display(),
                found.join("\n")
            );
        }
    }

    /// Runs an async script (it calls `arguments[0]` with its result).
    pub(super) fn eval_async(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/async",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// Waits until `script` returns true in the page.
    pub(super) fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.eval(script) != serde_json::Value::Bool(true) {
            if Instant::now() > deadline {
                let shot = self.screenshot("failure");
                let text = self.eval("return document.body.innerText + '\\n' + location.href");
                panic!(
                    "the page never showed {what} (screenshot {}):\n{}",
                    shot.display(),
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element as a user would (the live view redraws itself, so an element found a
    /// moment ago may have been replaced: then it is found again).
    pub(super) fn click(&self, css: &str) {
        for _ in 0..20 {
            let e = self.call(
                "POST",
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            );
            let id = e
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            let path = format!("/session/{}/element/{id}/click", self.session);
            let (status, text) = raw_request(self.port, "POST", &path, Some(b"{}"), None).unwrap();
            if status == 200 {
                return;
            }
            assert!(text.contains("stale element"), "click {css}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    pub(super) fn type_into(&self, css: &str, text: &str) {
        let e = self.call(
            "POST",
            "/element",
            serde_json::json!({"using": "css selector", "value": css}),
        );
        let id = e
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            serde_json::json!({"text": text}),
        );
    }

    /// Presses and releases one key (WebDriver key codes: Tab is U+E004, Enter U+E007).
    pub(super) fn key(&self, key: &str) {
        self.call(
            "POST",
            "/actions",
            serde_json::json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
        );
    }

    /// Saves a PNG screenshot under the artifacts directory; returns its path.
    pub(super) fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", serde_json::json!({}));
        let png = decode_base64(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = raw_request(self.port, "DELETE", &path, None, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    target.join("nomaly-artifacts/dashboard")
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// A run submitted while the page is open moves its progress bar and finishes; cancel from the
/// run's page works; without the token the page's actions are refused; every request the page
/// makes goes to the server it came from.
#[test]
fn the_dashboard_shows_runs_live_and_cancels_them() {
    let f = Fixture::new();
    let token = "dashboard-token";
    let server = Served::start(
        f.path(),
        &["--max-runs", "1"],
        &[
            ("NOMALY_TOKEN", token),
            ("NOMALY_FAULTS", "chunk_delay_ms=250"),
        ],
    );
    let (status, html) = raw_request(server.port, "GET", "/", None, None).unwrap();
    assert_eq!(status, 200, "the page itself needs no token");
    assert!(html.contains("<title>Nomaly</title>"), "{html}");
    let browser = Browser::start();
    browser.goto(&server.url());
    // The API needs the token: the page asks for it.
    browser.wait_for(
        "the token dialog",
        "return document.getElementById('token-dialog').open === true",
    );
    browser.audit("token-dialog");
    browser.type_into("#token-input", token);
    browser.click("#token-form button");
    browser.wait_for("the runs view", "return document.querySelector('h1') && document.querySelector('h1').textContent === 'Runs' && !document.querySelector('main .error')");
    browser.wait_for(
        "the live stream",
        "return document.getElementById('live').textContent === 'live'",
    );

    // A run submitted now appears, its bar moves, and it finishes.
    let p = f.pipeline("browsed", "out_browsed", "iforest", "");
    let id = server.submit(serde_json::json!({"path": p.to_str().unwrap()}));
    let bar = format!(
        "(document.querySelector('#run-{id} [role=progressbar]') || {{}}).getAttribute ? Number(document.querySelector('#run-{id} [role=progressbar]').getAttribute('aria-valuenow')) : -1"
    );
    browser.wait_for(
        "the run's row",
        &format!("return ({bar}) > 0 && ({bar}) < 100"),
    );
    let first = browser.eval(&format!("return {bar}")).as_f64().unwrap();
    browser.screenshot("runs-in-progress");
    browser.audit("runs");
    browser.wait_for("the bar moving", &format!("return ({bar}) > {first}"));
    browser.wait_for("the run finishing", &format!("return (document.querySelector('#run-{id}') || {{}}).dataset && document.querySelector('#run-{id}').dataset.state === 'succeeded'"));
    let shot = browser.screenshot("runs-finished");
    eprintln!("screenshots: {}", shot.parent().unwrap().display());
    // Its page: every chunk committed, the charts and the report.
    browser.goto(&format!("{}/#/runs/{id}", server.url()));
    browser.wait_for("the report", "return !!document.getElementById('report')");
    let committed = browser.eval("return document.querySelectorAll('.cell.committed').length");
    assert_eq!(committed, 20);
    let report = browser
        .eval("return JSON.parse(document.getElementById('report').textContent).output_rows");
    assert_eq!(report, 20_000);
    assert_eq!(
        browser.eval("return document.querySelectorAll('svg polyline').length"),
        2
    );
    assert!(
        !browser
            .eval("return document.body.innerText")
            .as_str()
            .unwrap()
            .contains("[object")
    );
    browser.screenshot("run-detail-succeeded");
    browser.audit("run-detail");

    cancel_and_resume_from_the_run_page(&browser, &server, &f, token);

    // The queue and schedules views render.
    browser.goto(&format!("{}/#/queue", server.url()));
    browser.wait_for(
        "the queue view",
        "return document.querySelector('h1').textContent === 'Queue'",
    );
    browser.audit("queue");
    browser.goto(&format!("{}/#/schedules", server.url()));
    browser.wait_for(
        "the schedules view",
        "return document.querySelector('h1').textContent === 'Schedules'",
    );
    browser.audit("schedules");

    // Every request the page made went to the server it came from.
    let origin = server.url();
    let urls = browser.eval(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])",
    );
    let urls: Vec<String> = urls
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    assert!(urls.len() >= 3, "{urls:?}");
    for u in &urls {
        assert!(
            u.starts_with(&origin),
            "the page requested {u}, not on {origin}"
        );
    }
}

/// Cancel from a running run's page with the keyboard only; then the page's actions need the
/// token: without it resume is refused, with it the run resumes and succeeds.
fn cancel_and_resume_from_the_run_page(
    browser: &Browser,
    server: &Served,
    f: &Fixture,
    token: &str,
) {
    let slow = server.submit(serde_json::json!({"path": f.pipeline("to_cancel", "out_to_cancel", "zscore", "").to_str().unwrap()}));
    server.wait_run(slow, "committed chunks", |r| {
        r["progress"]["chunks_done"].as_u64().unwrap_or(0) >= 2
    });
    browser.goto(&format!("{}/#/runs/{slow}", server.url()));
    browser.wait_for(
        "the cancel button",
        "return !!document.getElementById('cancel')",
    );
    browser.screenshot("run-detail-running");
    // With the keyboard only: Tab to the Cancel button (the page redraws as chunks commit; the
    // focus stays where it was), then Enter.
    let mut tabs = 0;
    while browser.eval("return document.activeElement && document.activeElement.id") != "cancel" {
        tabs += 1;
        assert!(tabs <= 30, "Tab never reached the Cancel button");
        browser.key("\u{E004}");
    }
    browser.key("\u{E007}");
    let cancelled = server.wait_ended(slow);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    browser.wait_for(
        "the cancelled state",
        "return document.querySelector('h1 .state').textContent === 'cancelled'",
    );
    browser.wait_for(
        "the resume button",
        "return !!document.getElementById('resume')",
    );
    browser.screenshot("run-detail-cancelled");
    browser.audit("run-cancelled");

    // Without the token the page's actions are refused; with it they work.
    let without = browser.eval_async(&format!(
        "const done = arguments[0]; fetch('/api/runs/{slow}/resume', {{method: 'POST'}}).then(r => done(r.status))"
    ));
    assert_eq!(without, 401);
    let with = browser.eval_async(&format!(
        "const done = arguments[0]; fetch('/api/runs/{slow}/resume', {{method: 'POST', headers: {{Authorization: 'Bearer {token}'}}}}).then(r => done(r.status))"
    ));
    assert_eq!(with, 200);
    assert_eq!(server.wait_ended(slow)["state"], "succeeded");
}

/// `nomaly serve --scheduler` shows a real cluster (a scheduler and two executors, separate
/// processes): its executors, its jobs, a job's stages with task timings, and the stage plan
/// drawn in the page from the scheduler's DOT text.
#[test]
fn the_cluster_view_shows_executors_jobs_and_stages() {
    let f = Fixture::new();
    let cluster = crate::cluster::Cluster::start(2);
    let engine = cluster.engine();
    let table = format!("tx={}", f.path().join("tx.parquet").display());
    let o = crate::nomaly_env(
        &[
            "sql",
            "--engine",
            &engine,
            "--table",
            &table,
            "-e",
            "SELECT id, detect_anomalies('zscore', amount, latency_ms) AS a FROM tx ORDER BY id LIMIT 3",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", crate::stderr(&o));
    let server = Served::start(f.path(), &["--scheduler", &engine], &[]);
    let (job, stages) = the_cluster_api_answers(&server);

    let browser = Browser::start();
    browser.goto(&format!("{}/#/cluster", server.url()));
    // The server made its own token (none was given): the page asks for it.
    browser.wait_for(
        "the token dialog",
        "return document.getElementById('token-dialog').open === true",
    );
    browser.type_into("#token-input", server.token.as_deref().unwrap());
    browser.click("#token-form button");
    browser.wait_for(
        "the Cluster tab",
        "return !document.getElementById('cluster-link').hidden",
    );
    browser.wait_for(
        "two executors",
        "return document.querySelectorAll('table[aria-label=executors] tbody tr').length === 2",
    );
    browser.wait_for("the jobs", "return document.querySelectorAll('table[aria-label=\"cluster jobs\"] tbody tr').length >= 1");
    browser.screenshot("cluster");
    browser.audit("cluster");
    browser.click(&format!("#open-job-{job}"));
    browser.wait_for(
        "the job's stages",
        "return document.querySelectorAll('tr.stage').length >= 1",
    );
    browser.wait_for(
        "the plan graph",
        "return document.querySelectorAll('#plan-graph .plan-node').length >= 1",
    );
    let labels = browser.eval("return [...document.querySelectorAll('#plan-graph .plan-node text')].map(t => t.textContent).join(' ')");
    assert!(
        labels.as_str().unwrap().contains("DataSourceExec"),
        "operators named in the graph: {labels}"
    );
    let stages_shown = browser
        .eval("return document.querySelectorAll('tr.stage').length")
        .as_u64()
        .unwrap();
    assert_eq!(
        stages_shown as usize,
        stages["stages"].as_array().unwrap().len()
    );
    browser.screenshot("cluster-job");
    browser.audit("cluster-job");

    let origin = server.url();
    let urls = browser.eval("return performance.getEntriesByType('resource').map(e => e.name)");
    for u in urls.as_array().unwrap() {
        assert!(
            u.as_str().unwrap().starts_with(&origin),
            "the page requested {u}, not on {origin}"
        );
    }

    the_scheduler_serves_the_view_itself(&browser, cluster.port, &job);
}

/// The server's Cluster API answers from the scheduler: two executors, the jobs, a job's stages
/// and its plan as DOT; a bad job id is a 400, an unknown one a 404. Returns a job and its stages.
fn the_cluster_api_answers(server: &Served) -> (String, serde_json::Value) {
    let (status, executors) = server.json("GET", "/api/cluster/executors", None);
    assert_eq!(status, 200, "{executors}");
    assert_eq!(executors.as_array().unwrap().len(), 2, "{executors}");
    let (_, jobs) = server.json("GET", "/api/cluster/jobs", None);
    let jobs = jobs.as_array().unwrap().clone();
    assert!(!jobs.is_empty());
    let job = jobs[0]["job_id"].as_str().unwrap().to_string();
    let (status, stages) = server.json("GET", &format!("/api/cluster/jobs/{job}/stages"), None);
    assert_eq!(status, 200);
    assert!(!stages["stages"].as_array().unwrap().is_empty(), "{stages}");
    let (status, dot) = server
        .request("GET", &format!("/api/cluster/jobs/{job}/dot"), None)
        .unwrap();
    assert_eq!(status, 200);
    assert!(dot.contains("digraph"), "{dot}");
    assert_eq!(
        server
            .json("GET", "/api/cluster/jobs/not%20an%20id", None)
            .0,
        400
    );
    assert_eq!(
        server
            .json("GET", "/api/cluster/jobs/nosuchjob/stages", None)
            .0,
        404
    );
    (job, stages)
}

/// `nomaly scheduler` serves the same Cluster view at `/` itself (Ballista 55 redirects to an
/// external page there), reading its own REST API.
fn the_scheduler_serves_the_view_itself(browser: &Browser, port: u16, job: &str) {
    let (status, html) = raw_request(port, "GET", "/", None, None).unwrap();
    assert_eq!(
        status, 200,
        "the scheduler's / is a page, not a redirect: {html}"
    );
    assert!(html.contains("<title>Nomaly</title>") && html.contains("data-mode=\"scheduler\""));
    let (status, _) = raw_request(port, "GET", "/ui/app.js", None, None).unwrap();
    assert_eq!(status, 200);
    browser.goto(&format!("http://127.0.0.1:{}/", port));
    browser.wait_for(
        "the scheduler's executors",
        "return document.querySelectorAll('table[aria-label=executors] tbody tr').length === 2",
    );
    browser.wait_for("the scheduler's jobs", "return document.querySelectorAll('table[aria-label=\"cluster jobs\"] tbody tr').length >= 1");
    assert_eq!(
        browser.eval("return document.querySelectorAll('nav a').length"),
        1,
        "only the Cluster tab"
    );
    browser.screenshot("scheduler-cluster");
    browser.audit("scheduler-cluster");
    browser.click(&format!("#open-job-{job}"));
    browser.wait_for("the job's stages on the scheduler", "return document.querySelectorAll('tr.stage').length >= 1 && document.querySelectorAll('#plan-graph .plan-node').length >= 1");
    browser.screenshot("scheduler-job");
    let scheduler_origin = format!("http://127.0.0.1:{}", port);
    let urls = browser.eval("return performance.getEntriesByType('resource').map(e => e.name)");
    for u in urls.as_array().unwrap() {
        assert!(
            u.as_str().unwrap().starts_with(&scheduler_origin),
            "the page requested {u}"
        );
    }
}

/// A running job on a scheduler with two executors: its Cluster page shows its stages while it
/// runs, and Cancel there stops it on the cluster.
#[test]
fn the_scheduler_page_shows_a_running_job_and_cancels_it() {
    let f = Fixture::new();
    let cluster = crate::cluster::Cluster::start(2);
    let table = format!("tx={}", f.path().join("tx.parquet").display());
    // 400 million pairs: long enough to watch and cancel.
    let mut sql = std::process::Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args([
            "sql",
            "--engine",
            &cluster.engine(),
            "--table",
            &table,
            "-e",
            "SELECT count(*) FROM tx a CROSS JOIN tx b WHERE a.amount * b.latency_ms < 0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let running = cluster.json("/api/jobs").and_then(|jobs| {
            jobs.as_array()?
                .iter()
                .find(|j| j["status"] == "Running")
                .map(|j| j["job_id"].as_str().unwrap().to_string())
        });
        if let Some(j) = running {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "the job never ran: {}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let browser = Browser::start();
    browser.goto(&format!(
        "http://127.0.0.1:{}/#/cluster/{job}",
        cluster.port
    ));
    browser.wait_for("the running job's stages", "return [...document.querySelectorAll('tr.stage td:nth-child(2)')].some(td => td.textContent === 'Running')");
    browser.wait_for(
        "the cancel button",
        "return !!document.getElementById('cancel-job')",
    );
    browser.screenshot("scheduler-running-job");
    browser.audit("scheduler-running-job");
    browser.click("#cancel-job");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster
            .json(&format!("/api/job/{job}"))
            .map(|j| j["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        if status != "Running" && status != "Queued" && !status.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the job was not cancelled");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_for(
        "the job no longer running",
        "return !document.getElementById('cancel-job')",
    );
    browser.screenshot("scheduler-cancelled-job");
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = sql.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = sql.kill();
            panic!("the client kept waiting for its cancelled job");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(code, Some(0), "the cancelled query does not report success");
}
