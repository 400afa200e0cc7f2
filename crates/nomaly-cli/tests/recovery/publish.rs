//! A run killed between two sinks' publishes: the sink published first is new, the other still
//! old. `nomaly resume` finishes the publish (the run directory, in the first sink's staging
//! directory, is published last and says the run completed), so no run is ever reported
//! complete with a sink left old.

use crate::{nomaly_env, part_files, stderr, write_tx_parquet};
use std::path::Path;

fn pipeline(dir: &Path, algorithm: &str) -> String {
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "input = \"tx.parquet\"\n[detect]\nalgorithm = \"{algorithm}\"\ncolumns = [\"amount\"]\n\
             [run]\nchunk_rows = 1000\n\
             [[sink]]\npath = \"all/\"\n\
             [[sink]]\npath = \"flagged/\"\nformat = \"csv\"\nwhere = \"is_anomaly\"\n"
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn a_crash_between_two_sinks_publishes_is_finished_by_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (work, alone) = (tmp.path().join("work"), tmp.path().join("alone"));
    for d in [&work, &alone] {
        std::fs::create_dir_all(d).unwrap();
        write_tx_parquet(&d.join("tx.parquet"), 0, 4_000, 1_000);
    }
    let o = nomaly_env(&["run", &pipeline(&alone, "zscore")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // An earlier run's outputs, then the new run killed after its first publish.
    let o = nomaly_env(&["run", &pipeline(&work, "robust_zscore")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let old_all = part_files(&work.join("all"));
    let p = pipeline(&work, "zscore");
    let o = nomaly_env(&["run", &p], &[("NOMALY_FAULTS", "exit_after_publish=1")]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(
        part_files(&work.join("flagged")),
        part_files(&alone.join("flagged")),
        "the second sink is published first"
    );
    assert_eq!(
        part_files(&work.join("all")),
        old_all,
        "the first is still old"
    );
    assert!(
        work.join(".all.nomaly-staging/_nomaly/manifest.jsonl")
            .exists()
    );

    // The resume publishes what is left and reports the run complete.
    let o = nomaly_env(&["resume", &p, "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report}");
    for sink in ["all", "flagged"] {
        crate::assert_same_parts(
            sink,
            &part_files(&work.join(sink)),
            &part_files(&alone.join(sink)),
        );
        assert!(!work.join(format!(".{sink}.nomaly-staging")).exists());
    }
}
