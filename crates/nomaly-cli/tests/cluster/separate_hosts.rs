//! The cluster as separate hosts ([`SeparateHosts`]): no disk shared, the S3 emulator the only
//! shared service. SQL and the example pipelines give what the local engine gives (part files
//! byte-identical after download); a client killed mid-run is resumed to the same bytes with no
//! partial run visible; an executor joins mid-run and takes work, one is SIGKILLed and another
//! cut off the network while they hold chunks, and the output is still the local engine's.

use super::hosts::{IN_BUCKET, SeparateHosts};
use crate::stderr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Executors hold each chunk this long, so that one can be lost while it holds one.
const PART_DELAY: (&str, &str) = ("NOMALY_FAULTS", "part_delay_ms=700");

#[test]
fn separate_hosts_share_only_the_object_store() {
    if !crate::stores::services_installed() {
        return;
    }
    let Some(mut hosts) = SeparateHosts::start(&[PART_DELAY]) else {
        return;
    };
    let dir = hosts.client_dir.path().to_path_buf();
    // The inputs, in the store: two Parquet files (80,000 rows) and the bundled example data.
    let up = dir.join("upload");
    nomaly_tests::data::write_tx_parquet(&up.join("tx/a.parquet"), 0, 40_000, 5_000);
    nomaly_tests::data::write_tx_parquet(&up.join("tx/b.parquet"), 40_000, 40_000, 5_000);
    std::fs::create_dir_all(up.join("data")).unwrap();
    for f in ["tx.csv", "merchants.csv"] {
        std::fs::copy(
            crate::root().join("examples/data").join(f),
            up.join("data").join(f),
        )
        .unwrap();
    }
    hosts.upload(IN_BUCKET, &up);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("README"), b"outputs").unwrap();
    hosts.upload(super::hosts::OUT_BUCKET, &seed);

    sql_equals_local(&hosts);
    examples_equal_local(&hosts, &dir);
    a_killed_client_resumes(&hosts, &dir);
    executors_come_and_go(&mut hosts, &dir);
    hosts.stop_and_check_gone();
}

/// `nomaly sql` on the cluster prints what it prints locally: one model over the table, and
/// one per segment.
fn sql_equals_local(hosts: &SeparateHosts) {
    let table = format!("tx=s3://{IN_BUCKET}/tx/*.parquet");
    let engine = hosts.engine();
    for query in [
        "SELECT id, detect_anomalies('iforest', amount, latency_ms)['score'] AS s FROM tx ORDER BY id",
        "SELECT id, a['score'] AS s FROM (SELECT id, detect_anomalies('ecod', amount, latency_ms) \
         OVER (PARTITION BY id % 40) AS a FROM tx) ORDER BY id",
    ] {
        let run = |engine: &str| {
            let args = [
                "sql",
                "--engine",
                engine,
                "--table",
                &table,
                "--format",
                "csv",
                "--no-progress",
                "-e",
                query,
            ];
            let o = hosts.client(&args, &[]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{engine}: {}\n{}",
                stderr(&o),
                hosts.logs()
            );
            o.stdout
        };
        let local = run("local");
        assert_eq!(
            local.iter().filter(|b| **b == b'\n').count(),
            80_001,
            "{query}"
        );
        assert!(local == run(&engine), "{query}: the cluster's rows differ");
    }
}

/// The example pipelines, their inputs read from the store and their outputs written there,
/// on the local engine and on the cluster: the same part files.
fn examples_equal_local(hosts: &SeparateHosts, dir: &Path) {
    let examples = dir.join("examples");
    std::fs::create_dir_all(examples.join("sql")).unwrap();
    let source = crate::root().join("examples/pipelines");
    for e in std::fs::read_dir(&source).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("\"../data/", &format!("\"s3://{IN_BUCKET}/data/"));
            std::fs::write(examples.join(e.file_name()), text).unwrap();
        }
    }
    for e in std::fs::read_dir(source.join("sql")).unwrap().flatten() {
        std::fs::copy(e.path(), examples.join("sql").join(e.file_name())).unwrap();
    }
    let pipelines = [
        ("minimal", "minimal"),
        ("multi_source_join", "enriched"),
        ("per_segment", "per_merchant"),
        ("validate_notify", "checked/all"),
        ("daily", "daily/date=2026-01-02"),
    ];
    for (file, output) in pipelines {
        let file = examples.join(format!("{file}.toml"));
        for (engine, out) in [("local", "local"), (hosts.engine().as_str(), "cluster")] {
            let prefix = format!("s3://{}/{out}", super::hosts::OUT_BUCKET);
            let args = [
                "run",
                file.to_str().unwrap(),
                "--engine",
                engine,
                "--no-progress",
                "--date",
                "2026-01-02",
            ];
            let o = hosts.client(&args, &[("NOMALY_OUT", &prefix)]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}: {}\n{}",
                file.display(),
                stderr(&o),
                hosts.logs()
            );
        }
        let local = parts(
            &hosts.download(&format!("local/{output}"), &dir.join("got_local")),
            &dir.join("got_local"),
        );
        let cluster = parts(
            &hosts.download(&format!("cluster/{output}"), &dir.join("got_cluster")),
            &dir.join("got_cluster"),
        );
        assert!(!local.is_empty(), "{output}: no part files");
        crate::assert_same_parts(output, &local, &cluster);
    }
    // The notification file of validate_notify went into the store too.
    let names = hosts.download("cluster/checked", &dir.join("got_checked"));
    assert!(names.iter().any(|n| n == "notification.json"), "{names:?}");
}

/// The part files among `names` (at any depth under `dir`), with their bytes.
fn parts(names: &[String], dir: &Path) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .filter(|n| n.rsplit('/').next().is_some_and(|f| f.starts_with("part-")))
        .map(|n| (n.clone(), std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

/// The pipeline the fault tests run over the store's 80,000 rows, into `output`: 16 chunks of
/// the input, or (`segmented`) 16 buckets of 64 segments, which the client writes and the
/// executors read from the store.
fn faults_pipeline(dir: &Path, name: &str, output: &str, segmented: bool) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let segments = match segmented {
        true => "[[step]]\nname = \"keyed\"\nsql = \"SELECT *, id % 64 AS seg FROM input\"\n",
        false => "",
    };
    let key = match segmented {
        true => "partition_by = [\"seg\"]\n",
        false => "",
    };
    let text = format!(
        "input = \"s3://{IN_BUCKET}/tx/*.parquet\"\noutput = \"s3://{}/{output}/\"\n{segments}\
         [detect]\nalgorithm = \"iforest\"\ncolumns = [\"amount\", \"latency_ms\"]\n{key}\
         [run]\nchunk_rows = 5000\n",
        super::hosts::OUT_BUCKET
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The pipeline's output run locally (the reference), downloaded: its part files (16).
fn local_reference(
    hosts: &SeparateHosts,
    dir: &Path,
    name: &str,
    segmented: bool,
) -> Vec<(String, Vec<u8>)> {
    let file = faults_pipeline(
        dir,
        &format!("{name}_local"),
        &format!("{name}_local"),
        segmented,
    );
    let o = hosts.client(&["run", file.to_str().unwrap(), "--no-progress"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = dir.join(format!("got_{name}_local"));
    let local = parts(&hosts.download(&format!("{name}_local"), &got), &got);
    assert_eq!(local.len(), 16, "{name}");
    local
}

/// A segmented run's client is SIGKILLed after two chunks are committed: the output prefix holds
/// nothing a reader would take (no marker, no part); `resume` reads the buckets the client had
/// put into the store and finishes with the local engine's bytes (buckets are written in the
/// input's order, so a segmented output's bytes are the same on every run and engine).
fn a_killed_client_resumes(hosts: &SeparateHosts, dir: &Path) {
    let local = local_reference(hosts, dir, "resumed", true);
    let file = faults_pipeline(dir, "resumed", "resumed", true);
    let manifest = dir.join(format!(
        ".nomaly-outputs/s3/{}/.resumed.nomaly-staging/_nomaly/manifest.jsonl",
        super::hosts::OUT_BUCKET
    ));
    let mut run = run_on_cluster(hosts, &file, &dir.join("resumed.err"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits(&manifest) < 2 {
        assert!(run.try_wait().unwrap().is_none(), "the run ended first");
        assert!(
            Instant::now() < deadline,
            "no two commits:\n{}",
            hosts.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let seen = hosts.download("resumed", &dir.join("got_killed"));
    assert!(
        seen.is_empty(),
        "a reader sees objects of the killed run: {seen:?}"
    );
    let buckets = hosts.download(".resumed.nomaly-work", &dir.join("got_work"));
    assert_eq!(buckets.len(), 16, "the buckets, in the store: {buckets:?}");
    let args = [
        "resume",
        file.to_str().unwrap(),
        "--engine",
        &hosts.engine(),
        "--no-progress",
    ];
    let o = hosts.client(&args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), hosts.logs());
    let got = dir.join("got_resumed");
    let names = hosts.download("resumed", &got);
    assert!(names.iter().any(|n| n == "_SUCCESS"), "{names:?}");
    crate::assert_same_parts("resumed on separate hosts", &local, &parts(&names, &got));
    let left = hosts.download(".resumed.nomaly-work", &dir.join("got_work"));
    assert!(
        left.is_empty(),
        "the published run's work prefix is removed: {left:?}"
    );
}

fn commits(manifest: &Path) -> usize {
    std::fs::read_to_string(manifest)
        .unwrap_or_default()
        .matches("\"event\":\"commit\"")
        .count()
}

/// Executor `e2` joins a running job and receives tasks; `e0` is SIGKILLed and `e1` cut off the
/// network, each while it holds a chunk; the run ends with the local engine's bytes.
fn executors_come_and_go(hosts: &mut SeparateHosts, dir: &Path) {
    let local = local_reference(hosts, dir, "come_and_go", false);
    let file = faults_pipeline(dir, "come_and_go", "come_and_go", false);
    let mut run = run_on_cluster(hosts, &file, &dir.join("come_and_go.err"));
    let e0 = hosts.tasks_received("e0");
    hosts.wait_until("e0 received a task of the run", |h| {
        h.tasks_received("e0") > e0
    });
    hosts.start_executor("e2");
    hosts.wait_until("the joined executor e2 received a task", |h| {
        h.tasks_received("e2") > 0
    });
    let e0 = hosts.tasks_received("e0");
    hosts.wait_until("e0 received another task", |h| h.tasks_received("e0") > e0);
    hosts.kill("e0");
    let e1 = hosts.tasks_received("e1");
    hosts.wait_until("e1 received another task", |h| h.tasks_received("e1") > e1);
    hosts.cut("e1");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end:\n{}",
            hosts.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = std::fs::read_to_string(dir.join("come_and_go.err")).unwrap_or_default();
    assert!(
        status.success(),
        "the run failed: {status}\n{said}\n{}",
        hosts.logs()
    );
    eprintln!(
        "tasks received: e0 {} (SIGKILLed), e1 {} (cut off), e2 {} (joined mid-run)",
        hosts.tasks_received("e0"),
        hosts.tasks_received("e1"),
        hosts.tasks_received("e2")
    );
    let got = dir.join("got_come_and_go");
    let names = hosts.download("come_and_go", &got);
    crate::assert_same_parts("executors come and go", &local, &parts(&names, &got));
}

/// `nomaly run file` on the cluster from the client, in the background, its output in `log`.
fn run_on_cluster(hosts: &SeparateHosts, file: &Path, log: &Path) -> std::process::Child {
    let engine = hosts.engine();
    let args = [
        "run",
        file.to_str().unwrap(),
        "--engine",
        &engine,
        "--no-progress",
    ];
    hosts
        .client_command(&args, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}
