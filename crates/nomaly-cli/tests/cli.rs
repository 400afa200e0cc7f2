//! The `nomaly sql` contract, through the real binary: output formats, exit codes, atomic output.

#[path = "cluster/mod.rs"]
mod cluster;
#[path = "pipeline/mod.rs"]
mod pipeline;
#[path = "recovery/mod.rs"]
mod recovery;
#[path = "security/mod.rs"]
mod security;
#[path = "serve/mod.rs"]
mod serve;
#[path = "stores/mod.rs"]
mod stores;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    manifest_dir().join("../..")
}

fn nomaly(args: &[&str]) -> Output {
    nomaly_env(args, &[])
}

/// Runs the binary from the repository root with `env` added. A developer's own cloud settings
/// (`AWS_*`, `AZURE_*`, `GOOGLE_*`) never leak into a test.
fn nomaly_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nomaly"));
    c.args(args).current_dir(root());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("AZURE_") || k.starts_with("GOOGLE_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run nomaly")
}

use nomaly_tests::free_port;

/// The part files directly in an output directory, by name, with their bytes.
fn part_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut parts: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), p))
        .filter(|(name, _)| name.starts_with("part-"))
        .map(|(name, p)| (name, std::fs::read(&p).unwrap()))
        .collect();
    parts.sort();
    parts
}

/// Two outputs' part files have the same names and the same bytes (the first that differs is
/// named; bytes are not printed).
fn assert_same_parts(what: &str, a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) {
    let names = |p: &[(String, Vec<u8>)]| p.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what}: part file names");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(x == y, "{what}: {name} differs");
    }
}

/// No temp file (`*.tmp`) is left anywhere under `dir`.
fn assert_no_temp_files(dir: &Path) {
    let files = tree(dir);
    let names: Vec<&String> = files.iter().map(|f| &f.0).collect();
    assert!(
        !names.iter().any(|f| f.ends_with(".tmp")),
        "temp files left in {}: {names:?}",
        dir.display()
    );
}

/// The run report a `--json` run prints on stdout.
fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json prints the report ({e}): {}", stderr(o)))
}

/// Every file under `dir` (relative path → bytes), hidden files included, sorted by path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The part files of every run output under `outputs` (one directory per run), read as one
/// table `o`: the first row `sql` returns, as CSV.
fn query_outputs(outputs: &Path, sql: &str) -> String {
    let all = outputs.with_extension("all");
    std::fs::create_dir_all(&all).unwrap();
    for (i, out) in std::fs::read_dir(outputs).unwrap().enumerate() {
        for (name, bytes) in part_files(&out.unwrap().path()) {
            std::fs::write(all.join(format!("{i}-{name}")), bytes).unwrap();
        }
    }
    let table = format!("o={}/", all.display());
    let o = nomaly(&["sql", "--format", "csv", "--table", &table, "-e", sql]);
    assert_eq!(o.status.code(), Some(0), "{sql}: {}", stderr(&o));
    stdout(&o).lines().nth(1).unwrap_or_default().to_string()
}

/// The relative paths of every file under `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    tree(dir).into_iter().map(|(name, _)| name).collect()
}

use nomaly_tests::data::write_tx_parquet;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const TX: &str = "tx=examples/data/tx.csv";

#[test]
fn csv_format_prints_a_header_then_rows() {
    let o = nomaly(&[
        "sql",
        "--table",
        TX,
        "--format",
        "csv",
        "-e",
        "SELECT id, round(detect_anomalies('zscore', amount)['score'], 6) AS s FROM tx ORDER BY id LIMIT 3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "id,s");
    assert!(lines[1].starts_with("1,"), "{out}");
}

#[test]
fn json_format_prints_one_object_per_row() {
    let o = nomaly(&[
        "sql",
        "--table",
        TX,
        "--format",
        "json",
        "-e",
        "SELECT id FROM tx ORDER BY id LIMIT 2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"id\":1}\n{\"id\":2}\n");
}

#[test]
fn quickstart_runs() {
    let o = nomaly(&["sql", "-f", "examples/quickstart.sql"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("| merchant | rows | flagged | labelled |"),
        "{out}"
    );
    assert!(out.contains("hbos on 2 features"), "{out}");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "sql",
                "--table",
                TX,
                "-e",
                "SELECT detect_anomalies('abod', amount) FROM tx",
            ],
            "unknown algorithm 'abod'; valid algorithms are",
        ),
        (
            vec!["sql", "--table", TX, "-e", "SELEC 1"],
            "cannot parse SQL",
        ),
        (
            vec!["sql", "--table", TX, "-e", "SELECT nope FROM tx"],
            "nope",
        ),
        (
            vec![
                "sql",
                "--table",
                "tx=examples/data/missing_file.csv",
                "-e",
                "SELECT 1",
            ],
            "no input matches this path",
        ),
        (
            vec![
                "sql",
                "--table",
                "tx=examples/data/tx.xlsx",
                "-e",
                "SELECT 1",
            ],
            "cannot tell the file format",
        ),
        (
            vec!["sql", "--table", "tx=model.pkl", "-e", "SELECT 1"],
            "Pickle files are refused",
        ),
        (
            vec!["sql", "--table", "nonsense", "-e", "SELECT 1"],
            "Expected NAME=PATH_OR_GLOB",
        ),
        (
            vec!["sql", "--memory-limit", "12XB", "-e", "SELECT 1"],
            "invalid size '12XB'",
        ),
        (
            vec![
                "sql",
                "-e",
                "SELECT 1",
                "--output",
                "/nonexistent-dir/x.parquet",
            ],
            "does not exist",
        ),
        (
            vec!["sql", "-e", "SELECT 1", "--output", "out.xlsx"],
            "unknown output extension",
        ),
    ];
    for (args, expected) in cases {
        let o = nomaly(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(expected),
            "{args:?}: stderr was {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}

#[test]
fn output_file_is_written_atomically_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["parquet", "csv", "json", "arrow"] {
        let out = dir.path().join(format!("scored.{ext}"));
        let o = nomaly(&[
            "sql",
            "--table",
            TX,
            "--output",
            out.to_str().unwrap(),
            "-e",
            "SELECT * FROM detect_anomalies('tx', 'hbos', 'amount, latency_ms')",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(out.is_file());
        // read it back through nomaly: every row is there
        let name = format!("r={}", out.display());
        let o = nomaly(&[
            "sql",
            "--table",
            &name,
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n, count(anomaly_score) AS s FROM r",
        ]);
        assert_eq!(stdout(&o), "n,s\n2000,2000\n", "{ext}: {}", stderr(&o));
    }
    // a failing query leaves nothing behind
    let out = dir.path().join("failed.parquet");
    let o = nomaly(&[
        "sql",
        "--table",
        TX,
        "--output",
        out.to_str().unwrap(),
        "-e",
        "SELECT anomaly_score(arrow_cast('junk', 'Binary'), amount) FROM tx",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        !Path::new(&out).exists() && leftovers.len() == 4,
        "{leftovers:?}"
    );
}

#[test]
fn standalone_engine_gives_the_same_answer() {
    let q = "SELECT id, detect_anomalies('ecod', amount, latency_ms)['score'] AS s FROM tx ORDER BY s DESC, id LIMIT 5";
    let local = nomaly(&["sql", "--table", TX, "--format", "csv", "-e", q]);
    let standalone = nomaly(&[
        "sql",
        "--engine",
        "standalone",
        "--table",
        TX,
        "--format",
        "csv",
        "-e",
        q,
    ]);
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    assert_eq!(standalone.status.code(), Some(0), "{}", stderr(&standalone));
    assert_eq!(stdout(&local), stdout(&standalone));
}

/// On a terminal a statement running over a second draws rows read / total, rate, ETA and memory
/// (`script` gives the command a pseudo-terminal); piped, nothing is drawn.
#[test]
fn long_statements_draw_progress_on_a_terminal_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("t.parquet");
    let o = nomaly(&[
        "sql",
        "-e",
        &format!(
            "COPY (SELECT value AS id, CAST(value % 977 AS DOUBLE) AS a, CAST(value % 101 AS DOUBLE) AS b \
             FROM generate_series(1, 2000000)) TO '{}' STORED AS PARQUET",
            data.display()
        ),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let query = "SELECT count(*) FROM (SELECT detect_anomalies('hbos', a, b)['score'] AS s FROM t) WHERE s > 0.5";
    let command = format!(
        "{} sql --table t={} -e \"{query}\"",
        env!("CARGO_BIN_EXE_nomaly"),
        data.display()
    );
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    // The table is read once: the local engine fits and scores in one pass (FitScoreExec), so the
    // work is 2M rows read (the fit) + 2M rows scored, and the bar moves on while scoring.
    assert!(scored_past_the_read(&shown), "{shown}");
    assert!(
        shown.contains("rows/s") && shown.contains("mem "),
        "{shown}"
    );
    let piped = nomaly(&[
        "sql",
        "--table",
        &format!("t={}", data.display()),
        "-e",
        query,
    ]);
    assert!(!stderr(&piped).contains("rows/s"), "{}", stderr(&piped));

    // The same bar while the last statement's rows go to --output.
    let out = tmp.path().join("scored.parquet");
    let command = format!(
        "{} sql --table t={} --output {} -e \"SELECT id, detect_anomalies('hbos', a, b)['score'] AS s FROM t\"",
        env!("CARGO_BIN_EXE_nomaly"),
        data.display(),
        out.display()
    );
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script runs the command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    assert!(scored_past_the_read(&shown), "{shown}");
    let rows = count_rows(&out);
    assert_eq!(rows, "2000000");
}

/// True when a drawn bar counts 4M rows of work (2M read + 2M scored) and was seen past the read,
/// i.e. while scoring (before: it reached 100% once the fit had read the input).
fn scored_past_the_read(shown: &str) -> bool {
    let positions: Vec<u64> = shown
        .split("/4,000,000 rows")
        .filter_map(|before| {
            let token = before.rsplit([' ', ']']).next()?;
            token.replace(',', "").parse().ok()
        })
        .collect();
    positions.iter().any(|&p| p > 2_000_000)
}

/// Rows in a Parquet file, counted by `nomaly sql`.
fn count_rows(path: &Path) -> String {
    let o = nomaly(&[
        "sql",
        "--format",
        "csv",
        "--table",
        &format!("o={}", path.display()),
        "-e",
        "SELECT count(*) AS n FROM o",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).lines().nth(1).unwrap_or_default().to_string()
}

/// HDF5 inputs (feature `hdf5`): both layouts read as tables equal to the CSV they came from
/// (benchmarks/reference/make_hdf5_fixtures.py), and a pipeline scores them like the CSV.
#[cfg(feature = "hdf5")]
#[test]
fn hdf5_inputs_read_like_the_csv_they_came_from() {
    let o = nomaly(&[
        "sql",
        "--format",
        "csv",
        "--table",
        "a=examples/data/tx_columns.h5",
        "--table",
        "b=examples/data/tx_pandas.h5",
        "--table",
        TX,
        "-e",
        "SELECT count(*) AS n, \
         sum(CASE WHEN a.amount = tx.amount AND a.latency_ms = tx.latency_ms AND a.merchant = tx.merchant \
             AND a.label = tx.label THEN 1 ELSE 0 END) AS same_a, \
         sum(CASE WHEN b.amount = tx.amount AND b.latency_ms = tx.latency_ms AND b.label = tx.label \
             THEN 1 ELSE 0 END) AS same_b \
         FROM tx JOIN a ON a.id = tx.id JOIN b ON b.id = tx.id",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n,same_a,same_b\n2000,2000,2000\n");

    let tmp = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for (name, input) in [("h5", "tx_pandas.h5"), ("csv", "tx.csv")] {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "input = \"{}\"\noutput = \"out_{name}/\"\n[detect]\nalgorithm = \"hbos\"\n\
                 columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 1000\n",
                root().join("examples/data").join(input).display()
            ),
        )
        .unwrap();
        let o = nomaly(&["run", file.to_str().unwrap(), "--json"]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["input_rows"], 2000, "{report}");
        outputs.push(tmp.path().join(format!("out_{name}")));
    }
    // The HDF5 file was converted to Parquet row groups of 1000 rows: 2 chunks; the work
    // directory is gone after the run.
    assert_eq!(part_files(&outputs[0]).len(), 2);
    assert!(!tmp.path().join(".out_h5.nomaly-hdf5").exists());
    let same = pipeline::query(
        &[("a", &outputs[0]), ("b", &outputs[1])],
        "SELECT count(*), sum(CASE WHEN a.anomaly_score = b.anomaly_score THEN 1 ELSE 0 END) \
         FROM a JOIN b ON a.id = b.id",
    );
    assert_eq!(same, vec!["2000,2000".to_string()]);

    // A glob of HDF5 files is refused: one table per file.
    std::fs::write(
        tmp.path().join("g.toml"),
        "input = \"data/*.h5\"\noutput = \"g/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n",
    )
    .unwrap();
    let o = nomaly(&["run", tmp.path().join("g.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("one local file"), "{}", stderr(&o));
}

/// Without the `hdf5` feature an HDF5 input is refused with how to get it or convert it.
#[cfg(not(feature = "hdf5"))]
#[test]
fn hdf5_inputs_say_how_to_build_or_convert() {
    let o = nomaly(&[
        "sql",
        "--table",
        "t=examples/data/tx_pandas.h5",
        "-e",
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for part in ["tx_pandas.h5", "--features hdf5", "libhdf5", "to_parquet"] {
        assert!(stderr(&o).contains(part), "missing {part}: {}", stderr(&o));
    }
}

/// Without -e or -f the statements come from stdin; on a terminal an interactive prompt opens:
/// statements span lines until `;`, an error is printed and the prompt comes back, history is kept.
#[test]
fn sql_reads_stdin_or_prompts_on_a_terminal() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(["sql", "--format", "csv"])
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 1 +\n  2 AS x;\nSELECT 'a;b' AS s;\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "x\n3\ns\na;b\n");
    let empty = nomaly(&["sql"]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(
        stderr(&empty).contains("stdin: no SQL statement found"),
        "{}",
        stderr(&empty)
    );

    // A terminal (`script` gives one); lines are typed with pauses, as a person would: the line
    // editor discards input that arrives before it has set the terminal up.
    let home = tempfile::tempdir().unwrap();
    let typed = "(sleep 1; printf 'SELECT 40 +\\n'; sleep 0.5; printf '2 AS answer;\\n'; sleep 1; \
                 printf 'SELECT nope;\\n'; sleep 1; printf '\\\\q\\n'; sleep 0.5)";
    let command = format!(
        "{typed} | script -qec '{} sql' /dev/null",
        env!("CARGO_BIN_EXE_nomaly")
    );
    let o = Command::new("sh")
        .args(["-c", &command])
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("script (util-linux) runs the prompt on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    assert!(shown.contains("| 42     |"), "{shown}");
    assert!(shown.contains("No field named nope"), "{shown}");
    let history = std::fs::read_to_string(home.path().join(".local/state/nomaly/history")).unwrap();
    assert!(history.contains("SELECT nope;"), "{history}");
}

/// The package's directory, read when the test runs: cargo sets `CARGO_MANIFEST_DIR` for test
/// processes. The compile-time `env!` would keep the path of whichever checkout first built the
/// binary, and cargo reuses test binaries across checkouts that share a target directory.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
