//! Outputs in an object store: `output = "s3://bucket/prefix/"` through moto, read back with
//! boto3 (scripts/store_fixture.py s3-get) and compared with the same run's local output.

use super::{cli, moto, python, run, services_installed, upload_into, write_fixtures};
use crate::{part_files, stderr};
use std::path::Path;
use std::process::Command;

pub(super) const OUT_BUCKET: &str = "nomaly-out";

/// Downloads everything under `prefix` into `dir`; returns the object names (relative, sorted).
pub(super) fn download(endpoint: &str, prefix: &str, dir: &Path) -> Vec<String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let o = Command::new(python())
        .arg(crate::root().join("scripts/store_fixture.py"))
        .args([
            "s3-get",
            endpoint,
            OUT_BUCKET,
            prefix,
            dir.to_str().unwrap(),
        ])
        .output()
        .expect("run store_fixture.py");
    assert!(o.status.success(), "download: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The pipeline of [`run`], writing to `output`, with `extra` lines.
pub(super) fn pipeline(dir: &Path, input: &Path, output: &str, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "input = \"{}/tx/*.parquet\"\n{output}\n[detect]\nalgorithm = \"hbos\"\n\
             columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = 2500\n{extra}",
            input.display()
        ),
    )
    .unwrap();
    path
}

/// The marker lists exactly the other objects, with their sizes.
fn assert_marker_lists(dir: &Path, names: &[String]) {
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_SUCCESS")).expect("_SUCCESS")).unwrap();
    let listed: Vec<(String, u64)> = marker["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let others: Vec<(String, u64)> = names
        .iter()
        .filter(|n| *n != "_SUCCESS")
        .map(|n| (n.clone(), std::fs::metadata(dir.join(n)).unwrap().len()))
        .collect();
    assert_eq!(
        listed, others,
        "the marker lists every object and only them"
    );
}

#[test]
fn an_s3_output_equals_the_local_one_and_an_interrupted_upload_is_finished_by_resume() {
    if !services_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = write_fixtures(work.path());
    let s3 = moto();
    // The output bucket, created with one unrelated object beside the output prefix.
    let seed = work.path().join("seed");
    std::fs::create_dir_all(seed.join("elsewhere")).unwrap();
    std::fs::write(seed.join("elsewhere/keep.txt"), b"not ours").unwrap();
    upload_into("s3", &s3.endpoint(), OUT_BUCKET, &seed);
    let env = s3.s3_env();
    let local = run(
        work.path(),
        "local",
        &format!("{}/tx/*.parquet", root.display()),
        &[],
    );
    assert_eq!(local.1.len(), 8, "{}", local.0);

    // One run to s3://nomaly-out/scored/: the same part files, a marker listing them, the run
    // directory beside them, and the local mirror without its parts.
    let dir = work.path().join("remote");
    let p = pipeline(
        &dir,
        &root,
        &format!("output = \"s3://{OUT_BUCKET}/scored/\""),
        "",
    );
    let o = cli(&["run", p.to_str().unwrap(), "--no-progress"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = work.path().join("got");
    let names = download(&s3.endpoint(), "scored", &got);
    crate::assert_same_parts("s3 output", &local.1, &part_files(&got));
    assert_marker_lists(&got, &names);
    for kept in [
        "_nomaly_report.json",
        "_nomaly/run.json",
        "_nomaly/manifest.jsonl",
    ] {
        assert!(names.iter().any(|n| n == kept), "{kept} in {names:?}");
    }
    let mirror = dir
        .join(".nomaly-outputs/s3")
        .join(OUT_BUCKET)
        .join("scored");
    assert!(
        part_files(&mirror).is_empty(),
        "the mirror's parts are gone"
    );
    assert!(mirror.join("_nomaly/run.json").is_file());

    // An object of an older run, then a second run killed after 3 objects are up: the marker is
    // gone (nothing is published), and `resume` finishes the upload and removes the stray part.
    let stray = work.path().join("stray");
    std::fs::create_dir_all(stray.join("scored")).unwrap();
    std::fs::write(stray.join("scored/part-00099.parquet"), b"old").unwrap();
    upload_into("s3", &s3.endpoint(), OUT_BUCKET, &stray);
    let mut killed_env = env.clone();
    killed_env.push(("NOMALY_FAULTS", "exit_after_upload=3".to_string()));
    let o = cli(&["run", p.to_str().unwrap(), "--no-progress"], &killed_env);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let names = download(&s3.endpoint(), "scored", &got);
    assert!(!names.iter().any(|n| n == "_SUCCESS"), "{names:?}");
    let o = cli(&["resume", p.to_str().unwrap(), "--no-progress"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let names = download(&s3.endpoint(), "scored", &got);
    crate::assert_same_parts("s3 output after resume", &local.1, &part_files(&got));
    assert_marker_lists(&got, &names);
    assert!(
        !names.iter().any(|n| n == "part-00099.parquet"),
        "{names:?}"
    );
    assert_eq!(
        download(&s3.endpoint(), "elsewhere", &work.path().join("else")),
        ["keep.txt"],
        "nothing outside the prefix is touched"
    );

    standalone_writes_the_same(work.path(), &root, &env, &s3.endpoint(), &local.1);
    on_a_cluster_executors_put_the_parts(work.path(), &root, &env, &s3.endpoint(), &local.1);
    refusals(work.path(), &root, &env, &s3.endpoint());
}

/// Ballista standalone writes the same objects.
fn standalone_writes_the_same(
    work: &Path,
    root: &Path,
    env: &[(&str, String)],
    endpoint: &str,
    local: &[(String, Vec<u8>)],
) {
    let dir = work.join("standalone");
    let p = pipeline(
        &dir,
        root,
        &format!("output = \"s3://{OUT_BUCKET}/standalone/\""),
        "",
    );
    let o = cli(
        &[
            "run",
            p.to_str().unwrap(),
            "--engine",
            "standalone",
            "--no-progress",
        ],
        env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = work.join("got_standalone");
    let names = download(endpoint, "standalone", &got);
    crate::assert_same_parts("s3 output, standalone", local, &part_files(&got));
    assert_marker_lists(&got, &names);
}

/// Every `part-*` file under `dir`, at any depth.
fn local_parts(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if e.file_name().to_string_lossy().starts_with("part-") {
                found.push(path);
            }
        }
    }
    found
}

/// On a cluster the executors put each part into the output's staging prefix themselves: a run
/// SIGKILLed after two commits is resumed keeping them (checked in the prefix); stopped after the
/// first object of the upload, the staging prefix holds all 8 parts and the client's directories
/// none; `resume` finishes the upload (copies inside the store) and empties the staging prefix.
fn on_a_cluster_executors_put_the_parts(
    work: &Path,
    root: &Path,
    env: &[(&str, String)],
    endpoint: &str,
    local: &[(String, Vec<u8>)],
) {
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cluster = crate::cluster::Cluster::start_with_env(2, &[], &[], &owned);
    let dir = work.join("cluster");
    let p = pipeline(
        &dir,
        root,
        &format!("output = \"s3://{OUT_BUCKET}/on_cluster/\""),
        "",
    );
    let engine = cluster.engine();
    // SIGKILLed once two chunks are committed...
    let manifest = dir
        .join(".nomaly-outputs/s3")
        .join(OUT_BUCKET)
        .join(".on_cluster.nomaly-staging/_nomaly/manifest.jsonl");
    let commits = || {
        std::fs::read_to_string(&manifest)
            .unwrap_or_default()
            .matches("\"event\":\"commit\"")
            .count()
    };
    let mut run = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args([
            "run",
            p.to_str().unwrap(),
            "--engine",
            &engine,
            "--no-progress",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NOMALY_FAULTS", "chunk_delay_ms=400")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while commits() < 2 {
        assert!(run.try_wait().unwrap().is_none(), "the run ended first");
        assert!(std::time::Instant::now() < deadline, "no two commits");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    // ...then resumed, and stopped after the first object of the upload.
    let mut killed = env.to_vec();
    killed.push(("NOMALY_FAULTS", "exit_after_upload=1".to_string()));
    let args = [
        "resume",
        p.to_str().unwrap(),
        "--engine",
        &engine,
        "--no-progress",
    ];
    let o = cli(&args, &killed);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let staged = download(endpoint, ".on_cluster.nomaly-staging", &work.join("staged"));
    let parts = staged.iter().filter(|n| n.starts_with("part-")).count();
    assert_eq!(parts, 8, "the executors' parts: {staged:?}");
    assert_eq!(local_parts(&dir), Vec::<std::path::PathBuf>::new());
    let o = cli(&["resume", p.to_str().unwrap(), "--no-progress"], env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = work.join("got_cluster");
    let names = download(endpoint, "on_cluster", &got);
    crate::assert_same_parts("s3 output on a cluster", local, &part_files(&got));
    assert_marker_lists(&got, &names);
    let left = download(endpoint, ".on_cluster.nomaly-staging", &work.join("staged"));
    assert!(left.is_empty(), "the staging prefix is emptied: {left:?}");
    // The resume kept the chunks committed before the kill: their parts were checked in the
    // staging prefix, not redone.
    let record = std::fs::read_to_string(got.join("_nomaly/manifest.jsonl")).unwrap();
    let resumed = record
        .lines()
        .find(|l| l.contains("\"event\":\"resume\""))
        .expect("a resume line");
    let kept: serde_json::Value = serde_json::from_str(resumed).unwrap();
    assert!(kept["committed"].as_u64() >= Some(2), "{resumed}");
}

/// `error_if_exists` on a prefix that holds objects, `overwrite` on objects Nomaly did not
/// write, a URL without a prefix, an http:// output: `run` and `validate` exit 2 naming the URL
/// and the fix.
fn refusals(work: &Path, root: &Path, env: &[(&str, String)], endpoint: &str) {
    let dir = work.join("refused");
    let cases = [
        (
            format!("[[sink]]\npath = \"s3://{OUT_BUCKET}/scored/\"\nmode = \"error_if_exists\""),
            "error_if_exists",
        ),
        (
            format!("output = \"s3://{OUT_BUCKET}/elsewhere/\""),
            "objects Nomaly did not write",
        ),
        (
            format!("output = \"s3://{OUT_BUCKET}/\""),
            "name a prefix below the bucket",
        ),
        (
            "output = \"https://example.com/out/\"".to_string(),
            "read-only",
        ),
    ];
    for (output, says) in cases {
        let p = pipeline(&dir, root, &output, "");
        for command in ["run", "validate"] {
            let o = cli(&[command, p.to_str().unwrap()], env);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{command} {output}: {err}");
            assert!(
                err.contains(says),
                "{command} {output}: no '{says}' in {err}"
            );
        }
    }
    assert_eq!(
        download(endpoint, "elsewhere", &work.join("else")),
        ["keep.txt"]
    );
}
