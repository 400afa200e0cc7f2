//! Malformed pipelines and inputs, one `rstest` case each: exit code 2, a message naming the
//! place and the fix, no panic, and no file left behind.

use super::*;
use rstest::rstest;

/// A malformed pipeline or input: the file (with `{tx}` for the bundled data), extra files, and
/// the fragments the message must contain.
struct Case {
    name: &'static str,
    pipeline: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    /// Environment for the run (e.g. an object store's endpoint).
    env: &'static [(&'static str, &'static str)],
    expect: &'static [&'static str],
}

const OUT: &str = "output = \"out/\"\n";
const DETECT: &str = "[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n";

fn ragged_csv() -> String {
    let mut s = String::from("id,amount\n");
    for i in 1..=50 {
        s.push_str(&format!("{i},{}.5\n", i % 7));
    }
    s.push_str("51,3.5,999\n");
    s
}

fn late_text_csv() -> String {
    let mut s = String::from("id,amount\n");
    for i in 1..=1500 {
        s.push_str(&format!("{i},{}.25\n", i % 11));
    }
    s.push_str("1501,abc\n");
    s
}

/// Each malformed pipeline or input is its own test case: exit code 2, a message with the place
/// and the fix, no panic, and no file left behind.
#[rstest]
#[case::unknown_key(Case {
        name: "unknown key",
        pipeline: "input = \"{tx}\"\noutptu = \"out/\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:2:1", "unknown field `outptu`", "output"],
})]
#[case::wrong_type(Case {
        name: "wrong type",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[run]\nchunk_rows = \"big\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:7:14", "invalid type"],
})]
#[case::toml_syntax(Case {
        name: "toml syntax",
        pipeline: "input = \"{tx}\n{OUT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:"],
})]
#[case::missing_column(Case {
        name: "missing column",
        pipeline: "input = \"{tx}\"\n{OUT}[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amnt\"]\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &[
            "p.toml:5:1 [detect] columns",
            "column 'amnt' is not in 'input'",
            "amount, latency_ms",
        ],
})]
#[case::glob_matches_nothing(Case {
        name: "glob matches nothing",
        pipeline: "input = \"data/*.parquet\"\n{OUT}{DETECT}",
        files: &[("data/readme.txt", "x")],
        args: &[],
        env: &[],
        expect: &["no parquet files match", "relative to the pipeline file"],
})]
#[case::missing_directory(Case {
        name: "missing directory",
        pipeline: "input = \"nope/*.csv\"\n{OUT}{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:1", "does not exist"],
})]
#[case::empty_input(Case {
        name: "empty input",
        pipeline: "input = \"empty.csv\"\n{OUT}{DETECT}",
        files: &[("empty.csv", "")],
        args: &[],
        env: &[],
        expect: &["has no rows", "empty.csv"],
})]
#[case::header_only_csv(Case {
        name: "header-only csv",
        pipeline: "input = \"h.csv\"\n{OUT}{DETECT}",
        files: &[("h.csv", "id,amount\n")],
        args: &[],
        env: &[],
        expect: &["has no rows", "header-only", "h.csv"],
})]
#[case::ragged_csv_row(Case {
        name: "ragged csv row",
        pipeline: "input = \"r.csv\"\n{OUT}{DETECT}",
        files: &[("r.csv", "RAGGED")],
        args: &[],
        env: &[],
        expect: &["r.csv", "found 3 records at line 52"],
})]
#[case::type_mismatch_late_in_the_file(Case {
        name: "type mismatch late in the file",
        pipeline: "input = \"t.csv\"\n{OUT}{DETECT}",
        files: &[("t.csv", "LATE")],
        args: &[],
        env: &[],
        expect: &["t.csv", "'abc'", "line 1501"],
})]
#[case::non_numeric_column(Case {
        name: "non-numeric column",
        pipeline: "input = \"{tx}\"\n{OUT}[detect]\nalgorithm = \"zscore\"\ncolumns = [\"merchant\"]\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &[
            "column 'merchant'",
            "not numeric",
            "CAST(merchant AS DOUBLE)",
        ],
})]
#[case::unknown_algorithm(Case {
        name: "unknown algorithm",
        pipeline: "input = \"{tx}\"\n{OUT}[detect]\nalgorithm = \"isoforest\"\ncolumns = [\"amount\"]\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:4:1 [detect] algorithm", "iforest", "ecod"],
})]
#[case::bad_option(Case {
        name: "bad option",
        pipeline: "input = \"{tx}\"\n{OUT}[detect]\nalgorithm = \"iforest\"\ncolumns = [\"amount\"]\noptions = { n_tres = 5 }\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[detect] options", "n_tres", "n_trees"],
})]
#[case::chunk_rows_out_of_range(Case {
        name: "chunk_rows out of range",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[run]\nchunk_rows = 10\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:7:1 [run] chunk_rows", "1000 to 1000000"],
})]
#[case::quarantine_on_a_typed_format(Case {
        name: "quarantine on a typed format",
        pipeline: "input = \"in.arrow\"\n{OUT}{DETECT}[run]\non_bad_rows = \"quarantine\"\n",
        files: &[("in.arrow", "x")],
        args: &[],
        env: &[],
        expect: &["[run] on_bad_rows", "CSV or NDJSON"],
})]
#[case::unknown_on_bad_rows(Case {
        name: "unknown on_bad_rows",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[run]\non_bad_rows = \"skip\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:7:", "unknown variant `skip`", "quarantine"],
})]
#[case::retry_out_of_range(Case {
        name: "retry out of range",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[retry]\nmax_retries = 1000\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[retry] max_retries", "0 (never retry) to 100"],
})]
#[case::bad_retry_delay(Case {
        name: "bad retry delay",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[retry]\ninitial_delay = \"soon\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[retry] initial_delay", "not a duration"],
})]
#[case::unwritable_output(Case {
        name: "unwritable output",
        pipeline: "input = \"{tx}\"\noutput = \"/proc/nomaly-out/\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["/proc/nomaly-out", "writ"],
})]
#[case::output_under_a_file(Case {
        name: "output under a file",
        pipeline: "input = \"{tx}\"\noutput = \"f.txt/out/\"\n{DETECT}",
        files: &[("f.txt", "x")],
        args: &[],
        env: &[],
        expect: &["f.txt", "not a directory"],
})]
#[case::output_exists_under_error_if_exists(Case {
        name: "output exists under error_if_exists",
        pipeline: "input = \"{tx}\"\n{DETECT}[[sink]]\npath = \"taken/\"\nmode = \"error_if_exists\"\n",
        files: &[("taken/x.parquet", "x")],
        args: &[],
        env: &[],
        expect: &["taken", "error_if_exists", "overwrite"],
})]
#[case::overwrite_of_a_foreign_directory(Case {
        name: "overwrite of a foreign directory",
        pipeline: "input = \"{tx}\"\noutput = \"mine/\"\n{DETECT}",
        files: &[("mine/thesis.docx", "x")],
        args: &[],
        env: &[],
        expect: &["mine", "did not write"],
})]
#[case::unset_variable(Case {
        name: "unset variable",
        pipeline: "input = \"${NOMALY_TEST_UNSET_VAR}/tx.csv\"\n{OUT}{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:10", "NOMALY_TEST_UNSET_VAR is not set", ":-"],
})]
#[case::malformed_variable(Case {
        name: "malformed variable",
        pipeline: "input = \"${1BAD}\"\n{OUT}{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:10", "not a variable reference"],
})]
#[case::unreachable_object_store(Case {
        name: "unreachable object store",
        pipeline: "input = \"s3://bucket/tx.parquet\"\n{OUT}{DETECT}",
        files: &[],
        args: &[],
        env: &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_REGION", "us-east-1"),
        ],
        expect: &[
            "s3://bucket/tx.parquet",
            "Connection refused",
            "AWS_ENDPOINT_URL",
        ],
})]
#[case::a_scheme_no_store_reads(Case {
        name: "a scheme no store reads",
        pipeline: "input = \"ftp://host/tx.parquet\"\n{OUT}{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:1", "'ftp://' is not a store", "s3://"],
})]
#[case::pickle_refused(Case {
        name: "pickle refused",
        pipeline: "input = \"d.pkl\"\n{OUT}{DETECT}",
        files: &[("d.pkl", "x")],
        args: &[],
        env: &[],
        expect: &["Pickle", "arbitrary code", "to_parquet"],
})]
#[case::input_and_sources_both(Case {
        name: "input and sources both",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[source]]\nname = \"a\"\npath = \"{tx}\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:1:1", "not both"],
})]
#[case::no_output(Case {
        name: "no output",
        pipeline: "input = \"{tx}\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["no output", "[[sink]]"],
})]
#[case::step_sql_error(Case {
        name: "step sql error",
        pipeline: "{OUT}[[source]]\nname = \"tx\"\npath = \"{tx}\"\n[[step]]\nname = \"s\"\nsql = \"SELEC * FROM tx\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:7:1 [[step]] #1 sql", "step 's'", "SELEC"],
})]
#[case::step_reads_an_unknown_table(Case {
        name: "step reads an unknown table",
        pipeline: "{OUT}[[source]]\nname = \"tx\"\npath = \"{tx}\"\n[[step]]\nname = \"s\"\nsql = \"SELECT * FROM txx\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["step 's'", "txx"],
})]
#[case::step_without_sql(Case {
        name: "step without sql",
        pipeline: "{OUT}[[source]]\nname = \"tx\"\npath = \"{tx}\"\n[[step]]\nname = \"s\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:6:1 [[step]] #1 name", "sql_file"],
})]
#[case::detect_input_unknown(Case {
        name: "detect input unknown",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}input = \"nothere\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[detect] input", "'nothere'", "defined are: input"],
})]
#[case::rate_bounds_reversed(Case {
        name: "rate bounds reversed",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[validate]]\ncheck = \"anomaly_rate\"\nmin = 0.5\nmax = 0.1\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[validate]] #1 check", "min <= max"],
})]
#[case::alert_rate_out_of_range(Case {
        name: "alert rate out of range",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[notify]]\ntype = \"webhook\"\nurl = \"https://hooks.example/x\"\nformat = \"slack\"\nanomaly_rate_above = 5\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[notify]] #1 anomaly_rate_above", "from 0 to 1"],
})]
#[case::unknown_chat_format(Case {
        name: "unknown chat format",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[notify]]\ntype = \"webhook\"\nurl = \"https://hooks.example/x\"\nformat = \"discord\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["discord", "report", "slack", "teams"],
})]
#[case::bad_memory_limit(Case {
        name: "bad memory limit",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[resources]\nmemory_limit = \"lots\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[resources] memory_limit", "lots", "512MB"],
})]
#[case::bad_timeout(Case {
        name: "bad timeout",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[resources]\ntimeout = \"5 minutes\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[resources] timeout", "30m"],
})]
#[case::ftp_webhook(Case {
        name: "ftp webhook",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[notify]]\ntype = \"webhook\"\nurl = \"ftp://hooks.example/x\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[notify]] #1 url", "http:// or https://"],
})]
#[case::webhook_without_host(Case {
        name: "webhook without host",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[[notify]]\ntype = \"webhook\"\nurl = \"https://:80/x\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[notify]] #1 url", "not a URL"],
})]
#[case::duplicate_source(Case {
        name: "duplicate source",
        pipeline: "{OUT}[[source]]\nname = \"a\"\npath = \"{tx}\"\n[[source]]\nname = \"a\"\npath = \"{tx}\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["defined twice"],
})]
#[case::sink_partition_column_missing(Case {
        name: "sink partition column missing",
        pipeline: "input = \"{tx}\"\n{DETECT}[[sink]]\npath = \"o/\"\npartition_by = [\"shop\"]\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[sink]] #1 path", "'shop'", "merchant"],
})]
#[case::sink_where_on_unknown_column(Case {
        name: "sink where on unknown column",
        pipeline: "input = \"{tx}\"\n{DETECT}[[sink]]\npath = \"o/\"\nwhere = \"is_anomalous\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[[sink]] #1 path where", "is_anomalous"],
})]
#[case::bad_set(Case {
        name: "bad --set",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}",
        files: &[],
        args: &["--set", "run.chunk_rows"],
        env: &[],
        expect: &["--set run.chunk_rows", "KEY=VALUE"],
})]
#[case::delimiter_too_long(Case {
        name: "delimiter too long",
        pipeline: "{OUT}[[source]]\nname = \"tx\"\npath = \"{tx}\"\ndelimiter = \";;\"\n{DETECT}",
        files: &[],
        args: &[],
        env: &[],
        expect: &["p.toml:5:1 [[source]] #1 delimiter", "one character"],
})]
#[case::reserved_output_column(Case {
        name: "reserved output column",
        pipeline: "input = \"s.csv\"\n{OUT}[detect]\nalgorithm = \"zscore\"\ncolumns = [\"x\"]\n",
        files: &[("s.csv", "x,anomaly_score\n1,2\n3,4\n")],
        args: &[],
        env: &[],
        expect: &["anomaly_score", "rename it"],
})]
#[case::unknown_engine(Case {
        name: "unknown engine",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[run]\nengine = \"spark\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[run] engine", "\"local\"", "\"standalone\""],
})]
#[case::quarantine_on_ballista(Case {
        name: "quarantine on Ballista",
        pipeline: "input = \"{tx}\"\n{OUT}{DETECT}[run]\nengine = \"standalone\"\non_bad_rows = \"quarantine\"\n",
        files: &[],
        args: &[],
        env: &[],
        expect: &["[run] on_bad_rows", "engine = \"local\""],
})]
fn malformed_pipelines_and_inputs_fail_clearly_with_no_output(#[case] case: Case) {
    let tx = root().join("examples/data/tx.csv");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, content) in case.files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let body = match *content {
            "RAGGED" => ragged_csv(),
            "LATE" => late_text_csv(),
            other => other.to_string(),
        };
        std::fs::write(p, body).unwrap();
    }
    let text = case
        .pipeline
        .replace("{OUT}", OUT)
        .replace("{DETECT}", DETECT)
        .replace("{tx}", tx.to_str().unwrap());
    let file = dir.join("p.toml");
    std::fs::write(&file, text).unwrap();
    let before = files_in(dir);
    let mut args = vec!["run", file.to_str().unwrap()];
    args.extend(case.args);
    let o = nomaly_env(&args, case.env);
    let err = stderr(&o);
    let mut problems = Vec::new();
    if o.status.code() != Some(2) {
        problems.push(format!("exit code {:?}", o.status.code()));
    }
    for e in case.expect {
        if !err.contains(e) {
            problems.push(format!("message lacks {e:?}"));
        }
    }
    if err.contains("panicked") {
        problems.push("panicked".into());
    }
    if files_in(dir) != before {
        problems.push(format!("left files: {:?}", files_in(dir)));
    }
    assert!(
        problems.is_empty(),
        "{}: {} — stderr: {err}",
        case.name,
        problems.join("; ")
    );
}
