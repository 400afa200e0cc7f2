//! A run directory records the pipeline as written, not as substituted (SECURITY.md: nothing
//! expanded from the environment is written there), and a resume still notices when a variable
//! the pipeline reads has another value.

use crate::{nomaly_env, stderr, write_tx_parquet};

#[test]
fn the_run_directory_holds_no_value_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_tx_parquet(&dir.join("tx.parquet"), 0, 4_000, 1_000);
    let secret = "zscore-threshold-from-a-vault-7731";
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        "name = \"${NOMALY_TEST_RUN_NAME}\"\ninput = \"tx.parquet\"\noutput = \"out/\"\n\
         [detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n\
         [[validate]]\nname = \"tagged\"\ncheck = \"sql\"\n\
         sql = \"SELECT * FROM output WHERE length('${NOMALY_TEST_VALUE}') < 0\"\n\
         [run]\nchunk_rows = 1000\n[retry]\ninitial_delay = \"5ms\"\nmax_delay = \"20ms\"\nmax_retries = 2\n",
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let env = |value: &'static str| {
        vec![
            ("NOMALY_TEST_VALUE", value),
            ("NOMALY_TEST_RUN_NAME", "env-test"),
        ]
    };
    // Chunk 2 can never be written: the run stops with its run directory kept for a resume.
    let mut failing = env(secret);
    failing.push(("NOMALY_FAULTS", "fail_chunk=2"));
    let o = nomaly_env(&["run", p, "--no-progress"], &failing);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let run_dir = dir.join(".out.nomaly-staging/_nomaly");
    let recorded = std::fs::read_to_string(run_dir.join("pipeline.toml")).unwrap();
    assert!(recorded.contains("${NOMALY_TEST_VALUE}"), "{recorded}");
    for entry in std::fs::read_dir(&run_dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the variable's value",
            path.display()
        );
    }

    // Another value: the resume refuses, saying a variable changed (and not its value).
    let o = nomaly_env(&["resume", p, "--no-progress"], &env("another-value"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("an environment variable it reads has another value"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(secret));
    // A changed file is still named as such.
    let edited = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("zscore", "robust_zscore");
    std::fs::write(&pipeline, &edited).unwrap();
    let o = nomaly_env(&["resume", p, "--no-progress"], &env(secret));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("robust_zscore"), "{}", stderr(&o));
    // The same file and value: the resume finishes the run.
    std::fs::write(&pipeline, edited.replace("robust_zscore", "zscore")).unwrap();
    let o = nomaly_env(&["resume", p, "--no-progress"], &env(secret));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let published = dir.join("out/_nomaly/pipeline.toml");
    assert!(!std::fs::read_to_string(published).unwrap().contains(secret));
}
