//! A hostile submitter against a real `nomaly serve`, and hostile pipelines against `nomaly run`
//! (SECURITY.md). Every case is refused with a clear message and a 4xx status or exit 2, the
//! server still answers, and nothing outside the allowed root is created or changed: a guard
//! directory beside the root is listed (names and bytes) before and after.

mod cluster_tls;
mod cluster_token;
mod connections;
mod output_lock;
mod webhooks;

use crate::serve::{Served, raw_request};
use crate::{nomaly_env, stderr, tree, write_tx_parquet};
use std::path::PathBuf;

/// The allowed root (with a Parquet input) and a guard directory outside it holding a secret.
struct Playground {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    guard: PathBuf,
}

const SECRET: &str = "id,amount\n1,4242424242\n";
const SERVER_SECRET: &str = "value-of-a-server-variable-7731";

impl Playground {
    fn new() -> Playground {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        let guard = base.join("guard");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(guard.join("sub")).unwrap();
        std::fs::write(guard.join("secret.csv"), SECRET).unwrap();
        std::fs::write(guard.join("secret.sql"), "SELECT 4242424242 AS leaked").unwrap();
        std::fs::write(guard.join(".profile"), "# untouched\n").unwrap();
        write_tx_parquet(&root.join("tx.parquet"), 0, 4_000, 1_000);
        std::os::unix::fs::symlink(&guard, root.join("link")).unwrap();
        std::os::unix::fs::symlink(guard.join("secret.sql"), root.join("q.sql")).unwrap();
        Playground {
            _dir: dir,
            base,
            root,
            guard,
        }
    }

    /// A pipeline over the root's input with `extra` appended (TOML sections).
    fn toml(&self, head: &str, extra: &str) -> String {
        format!(
            "{head}\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n{extra}\n",
            head = if head.is_empty() {
                "input = \"tx.parquet\"\noutput = \"out/\""
            } else {
                head
            }
        )
    }
}

/// One hostile submission: the TOML text, the status it must get, and a phrase its error must
/// hold.
struct Case {
    name: &'static str,
    toml: String,
    status: u16,
    says: &'static str,
}

fn case(name: &'static str, toml: String, status: u16, says: &'static str) -> Case {
    Case {
        name,
        toml,
        status,
        says,
    }
}

/// The shapes of a hostile pipeline: a fragment put into a valid pipeline file.
struct Kinds<'a> {
    p: &'a Playground,
}

impl Kinds<'_> {
    fn t(&self, extra: &str) -> String {
        self.p.toml("", extra)
    }
    fn with_input(&self, input: &str) -> String {
        self.p
            .toml(&format!("input = \"{input}\"\noutput = \"out/\""), "")
    }
    fn with_output(&self, output: &str) -> String {
        self.p.toml(
            &format!("input = \"tx.parquet\"\noutput = \"{output}\""),
            "",
        )
    }
    fn step(&self, sql: &str) -> String {
        self.t(&format!("[[step]]\nname = \"s\"\nsql = \"{sql}\""))
    }
    fn check(&self, sql: &str) -> String {
        self.t(&format!(
            "[[validate]]\ncheck = \"sql\"\nname = \"c\"\nsql = \"{sql}\""
        ))
    }
    fn notify(&self, body: &str) -> String {
        self.t(&format!("[[notify]]\n{body}"))
    }
}

fn hostile_pipelines(p: &Playground) -> Vec<Case> {
    let k = Kinds { p };
    let mut all = hostile_statements(&k);
    all.extend(hostile_paths(&k));
    all.extend(hostile_remotes_and_commands(&k));
    all
}

fn hostile_statements(k: &Kinds) -> Vec<Case> {
    let g = k.p.guard.display().to_string();
    vec![
        // The cases of issue 27's "Why".
        case(
            "validate CREATE EXTERNAL TABLE",
            k.check(&format!(
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{g}/secret.csv'"
            )),
            400,
            "is a CREATE EXTERNAL TABLE statement",
        ),
        case(
            "step COPY TO",
            k.step(&format!("COPY (SELECT 1) TO '{g}/written.csv'")),
            400,
            "is a COPY statement",
        ),
        case(
            "validate COPY TO",
            k.check(&format!("COPY (SELECT 1) TO '{g}/written.csv'")),
            400,
            "is a COPY statement",
        ),
        case(
            "notify file outside",
            k.notify(&format!("type = \"file\"\npath = \"{g}/.profile\"")),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "server variable",
            k.with_input("/x/${NOMALY_TEST_SERVER_SECRET}.csv"),
            400,
            "--allow-env",
        ),
        // Statements of every kind.
        case(
            "step SET",
            k.step("SET datafusion.execution.batch_size = 1"),
            400,
            "is a SET statement",
        ),
        case(
            "step INSERT",
            k.step("INSERT INTO input VALUES (1, 2.0, 3.0)"),
            400,
            "is an INSERT INTO statement",
        ),
        case(
            "step CREATE VIEW",
            k.step("CREATE VIEW v AS SELECT 1"),
            400,
            "is a CREATE VIEW statement",
        ),
        case(
            "step CREATE EXTERNAL TABLE on a directory",
            k.step(&format!(
                "CREATE EXTERNAL TABLE y STORED AS PARQUET LOCATION '{g}/'"
            )),
            400,
            "CREATE EXTERNAL TABLE",
        ),
        case(
            "step DROP",
            k.step("DROP TABLE input"),
            400,
            "is a DROP TABLE statement",
        ),
        case(
            "step EXPLAIN ANALYZE",
            k.step("EXPLAIN ANALYZE SELECT * FROM input"),
            400,
            "is an EXPLAIN statement",
        ),
        case(
            "step two statements",
            k.step(&format!(
                "SELECT * FROM input; COPY (SELECT 1) TO '{g}/w.csv'"
            )),
            400,
            "holds 2 statements",
        ),
        case(
            "check two statements",
            k.check("SELECT 1 WHERE false; SET x = 1"),
            400,
            "holds 2 statements",
        ),
    ]
}

fn hostile_paths(k: &Kinds) -> Vec<Case> {
    let g = k.p.guard.display().to_string();
    let r = k.p.root.display().to_string();
    vec![
        // Paths: `..`, symlinks, globs, sql_file.
        case(
            "input with ..",
            k.with_input("../guard/secret.csv"),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "input absolute outside",
            k.with_input(&format!("{g}/secret.csv")),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "input through a symlink",
            k.with_input("link/secret.csv"),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "glob through a symlink",
            k.with_input("link/*.csv"),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "glob with .. after the wildcard",
            k.with_input(&format!("{r}/*/../../guard/*.csv")),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "file:// outside",
            k.with_input(&format!("file://{g}/secret.csv")),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "sql_file with ..",
            k.t("[[step]]\nname = \"s\"\nsql_file = \"../guard/secret.sql\""),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "sql_file through a symlink",
            k.t("[[step]]\nname = \"s\"\nsql_file = \"q.sql\""),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "sql_file a device",
            k.t("[[step]]\nname = \"s\"\nsql_file = \"/dev/zero\""),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "output with ..",
            k.with_output("../guard/out/"),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "output through a symlink",
            k.with_output("link/out/"),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "output is the root",
            k.with_output("."),
            403,
            "is an allowed root itself",
        ),
        case(
            "sink outside",
            k.t(&format!("[[sink]]\npath = \"{g}/sub/out\"")),
            403,
            "outside the server's allowed roots",
        ),
        case(
            "notify file through a symlink",
            k.notify("type = \"file\"\npath = \"link/.profile\""),
            403,
            "outside the server's allowed roots",
        ),
    ]
}

fn hostile_remotes_and_commands(k: &Kinds) -> Vec<Case> {
    let g = k.p.guard.display().to_string();
    vec![
        // Remote locations and SSRF.
        case(
            "s3 without --allow-location",
            k.with_input("s3://bucket/x.parquet"),
            403,
            "--allow-location",
        ),
        case(
            "http metadata address",
            k.with_input("http://169.254.169.254/latest/x.csv"),
            403,
            "--allow-location",
        ),
        case(
            "webhook to loopback",
            k.notify("type = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\""),
            403,
            "--allow-location",
        ),
        case(
            "webhook to decimal loopback",
            k.notify("type = \"webhook\"\nurl = \"http://2130706433/hook\""),
            403,
            "--allow-location",
        ),
        case(
            "webhook to IPv6 loopback",
            k.notify("type = \"webhook\"\nurl = \"http://[::1]:80/hook\""),
            403,
            "--allow-location",
        ),
        case(
            "webhook header injection",
            k.notify("type = \"webhook\"\nurl = \"http://example.com/a\\r\\nX-Injected: 1\""),
            403,
            "control characters",
        ),
        // Commands and variables.
        case(
            "command notify",
            k.notify(&format!(
                "type = \"command\"\ncommand = \"touch {g}/pwned\""
            )),
            403,
            "--allow-notify-commands",
        ),
        case(
            "variable with a default",
            k.with_input("${HOME:-tx.parquet}"),
            400,
            "--allow-env",
        ),
    ]
}

#[test]
fn a_hostile_submitter_is_refused_and_nothing_outside_the_root_changes() {
    let p = Playground::new();
    let before = tree(&p.guard);
    let server = Served::start(
        &p.root,
        &[],
        &[("NOMALY_TEST_SERVER_SECRET", SERVER_SECRET)],
    );
    let cases = hostile_pipelines(&p);
    for c in &cases {
        let (status, v) = server.json(
            "POST",
            "/api/runs",
            Some(serde_json::json!({"toml": c.toml})),
        );
        let error = v["error"].as_str().unwrap_or_default();
        assert_eq!(status, c.status, "{}: {v}", c.name);
        assert!(error.contains(c.says), "{}: {error}", c.name);
        for leak in [SERVER_SECRET, "4242424242"] {
            assert!(
                !error.contains(leak),
                "{}: the answer leaks {leak}: {error}",
                c.name
            );
        }
    }
    // Submissions by path and base_dir outside the root.
    let (status, _) = server.json(
        "POST",
        "/api/runs",
        Some(serde_json::json!({"path": format!("{}/secret.sql", p.guard.display())})),
    );
    assert_eq!(status, 403);
    let (status, _) = server.json(
        "POST",
        "/api/runs",
        Some(
            serde_json::json!({"toml": p.toml("", ""), "base_dir": p.guard.display().to_string()}),
        ),
    );
    assert_eq!(status, 403);
    let http = http_cases(&server);
    // Nothing was queued, nothing outside the root changed, the server still answers.
    let (_, runs) = server.json("GET", "/api/runs", None);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
    assert_eq!(tree(&p.guard), before, "the guard directory changed");
    let mut base: Vec<String> = std::fs::read_dir(&p.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    base.sort();
    assert_eq!(base, ["guard", "root"]);
    assert_eq!(server.request("GET", "/health", None).unwrap().0, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
    symlink_listed_under_a_root_fails_the_run(&p, &server);
    assert_eq!(tree(&p.guard), before, "the guard directory changed");
    eprintln!(
        "{} hostile pipelines and {http} hostile requests refused",
        cases.len() + 2
    );
}

/// Requests a browser on another site, or a rebinding name, would send. Returns the count.
fn http_cases(server: &Served) -> usize {
    let body = br#"{"toml": "input = \"tx.parquet\"\noutput = \"o/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n"}"#;
    let send = |head: &str, body: &[u8]| {
        let req = format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        nomaly_tests::http::send_raw(server.port, req.as_bytes(), body)
    };
    let cases: Vec<(&str, String, &[u8], u16)> = vec![
        (
            "cross-site form POST",
            "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n".into(),
            body,
            403,
        ),
        (
            "text/plain from the same origin",
            format!("POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nOrigin: http://127.0.0.1:{0}\r\nContent-Type: text/plain\r\n", server.port),
            body,
            415,
        ),
        (
            "no content type",
            "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n".into(),
            body,
            415,
        ),
        (
            "cross-site cancel without a body",
            "POST /api/runs/1/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n".into(),
            b"",
            403,
        ),
        (
            "cross-site read",
            "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n".into(),
            b"",
            403,
        ),
        (
            "DNS rebinding",
            "GET /api/runs HTTP/1.1\r\nHost: rebind.evil.example:8080\r\n".into(),
            b"",
            421,
        ),
        (
            "DNS rebinding POST",
            "POST /api/runs HTTP/1.1\r\nHost: rebind.evil.example\r\nContent-Type: application/json\r\n".into(),
            body,
            421,
        ),
    ];
    for (name, head, body, want) in &cases {
        let got = send(head, body);
        assert_eq!(got, Some(*want), "{name}");
    }
    // An oversized body.
    let token = server.token.as_deref();
    let big = vec![b' '; 2 << 20];
    let (status, _) = raw_request(server.port, "POST", "/api/runs", Some(&big), token).unwrap();
    assert_eq!(status, 413);
    // The token the server made at start (none was given) is required.
    let (status, _) = raw_request(server.port, "GET", "/api/runs", None, None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = raw_request(server.port, "GET", "/api/runs", None, Some("guess")).unwrap();
    assert_eq!(status, 401);
    cases.len() + 3
}

/// The operator's own `nomaly run` refuses statements too (exit 2), and never writes the file.
#[test]
fn nomaly_run_refuses_statements_in_pipeline_sql() {
    let p = Playground::new();
    let target = p.guard.join("from_run.csv");
    let file = p.root.join("copy.toml");
    std::fs::write(
        &file,
        p.toml(
            "",
            &format!(
                "[[validate]]\ncheck = \"sql\"\nname = \"c\"\nsql = \"COPY (SELECT 1) TO '{}'\"",
                target.display()
            ),
        ),
    )
    .unwrap();
    for cmd in ["run", "validate", "explain"] {
        let o = nomaly_env(&[cmd, file.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("copy.toml:")
                && stderr(&o).contains("check 'c' is a COPY statement"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    assert!(!target.exists());
    assert!(!p.root.join("out").exists());
}

/// A glob inside the root passes compilation, but a file it lists that is a symlink out of the
/// root fails the run when the source is listed, naming the file; the secret is read nowhere.
fn symlink_listed_under_a_root_fails_the_run(p: &Playground, server: &Served) {
    let data = p.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows: String = (0..50).map(|i| format!("{i},{}\n", 10 + i % 7)).collect();
    std::fs::write(data.join("a.csv"), format!("id,amount\n{rows}")).unwrap();
    std::os::unix::fs::symlink(p.guard.join("secret.csv"), data.join("b.csv")).unwrap();
    let toml = p.toml("input = \"data/*.csv\"\noutput = \"out_link/\"", "");
    let id = server.submit(serde_json::json!({ "toml": toml }));
    let run = server.wait_ended(id);
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("b.csv") && error.contains("outside the server's allowed roots"),
        "{error}"
    );
    let (_, report) = server.json("GET", &format!("/api/runs/{id}/report"), None);
    assert!(!report.to_string().contains("4242424242"), "{report}");
    assert!(!p.root.join("out_link").exists());
}

/// A forest too large for the memory budget (`n_trees` × `sample_size` from a submitter) is a
/// clear error before it is grown, on each plan that fits it: the one-pass operator, the
/// segmented one and a pipeline; the defaults still run under the same budget.
#[test]
fn a_forest_larger_than_the_budget_is_refused_before_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let tx = dir.path().join("tx.parquet");
    write_tx_parquet(&tx, 0, 20_000, 5_000);
    let table = format!("tx={}", tx.display());
    let huge = "'n_trees=10000, sample_size=1000000'";
    let sql = |options: &str, over: &str| {
        format!(
            "SELECT max(a['score']) AS top FROM (SELECT detect_anomalies('iforest', amount, \
             latency_ms, {options}) {over} AS a FROM tx)"
        )
    };
    for over in ["", "OVER (PARTITION BY id % 4)"] {
        let o = nomaly_env(
            &[
                "sql",
                "--memory-limit",
                "256MB",
                "--table",
                &table,
                "-e",
                &sql(huge, over),
            ],
            &[],
        );
        assert_ne!(o.status.code(), Some(0), "{over}");
        assert!(
            stderr(&o).contains("lower n_trees or sample_size"),
            "{over}: {}",
            stderr(&o)
        );
        let o = nomaly_env(
            &[
                "sql",
                "--memory-limit",
                "256MB",
                "--table",
                &table,
                "-e",
                &sql("'n_trees=100'", over),
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{over}: {}", stderr(&o));
    }
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "input = \"tx.parquet\"\noutput = \"out/\"\n[detect]\nalgorithm = \"iforest\"\n\
         columns = [\"amount\", \"latency_ms\"]\noptions = { n_trees = 10000, sample_size = 1000000 }\n",
    )
    .unwrap();
    let o = nomaly_env(
        &["run", pipeline.to_str().unwrap(), "--memory-limit", "256MB"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lower n_trees or sample_size"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("out").exists());
}
