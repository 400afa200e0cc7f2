//! One writer per remote output across machines: two pipeline files in two directories (two
//! mirrors, two local locks, as on two machines) writing one prefix through moto. The lock is
//! the object `.<name>.nomaly-lock` beside the prefix, created by a conditional put.

use super::outputs::{OUT_BUCKET, download, pipeline};
use super::{cli, moto, services_installed, upload_into, write_fixtures};
use crate::stderr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LOCK: &str = ".shared.nomaly-lock";

/// Puts a lock object as another machine's run would have left it, last rewritten `age` ago.
fn foreign_lock(endpoint: &str, dir: &Path, age: Duration) {
    let refreshed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - age;
    let text = format!(
        "pid=4242\nhost=elsewhere\nrun=nomaly run other.toml\nstarted_unix_ms={0}\nrefreshed_unix_ms={0}\n",
        refreshed.as_millis()
    );
    let seed = dir.join("lock_seed");
    let _ = std::fs::remove_dir_all(&seed);
    std::fs::create_dir_all(seed.join("team")).unwrap();
    std::fs::write(seed.join("team").join(LOCK), text).unwrap();
    upload_into("s3", endpoint, OUT_BUCKET, &seed);
}

fn has_lock(endpoint: &str, dir: &Path) -> bool {
    download(endpoint, "team", &dir.join("team_now"))
        .iter()
        .any(|n| n == LOCK)
}

#[test]
fn a_remote_output_takes_one_writer_across_machines() {
    if !services_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let root = write_fixtures(dir);
    let s3 = moto();
    let env = s3.s3_env();
    let output = format!("output = \"s3://{OUT_BUCKET}/team/shared/\"");
    let a = pipeline(&dir.join("machine_a"), &root, &output, "");
    let b = pipeline(&dir.join("machine_b"), &root, &output, "");
    let endpoint = s3.endpoint();

    // A fresh lock of another machine's run: refused, naming it.
    foreign_lock(&endpoint, dir, Duration::from_secs(5));
    let o = cli(&["run", b.to_str().unwrap(), "--no-progress"], &env);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is being written by another run"), "{err}");
    assert!(
        err.contains("pid 4242 on host elsewhere (nomaly run other.toml)"),
        "{err}"
    );
    // A lock not rewritten for 10 minutes: its run is gone; the next run takes it over, and
    // deletes it when it ends.
    foreign_lock(&endpoint, dir, Duration::from_secs(600));
    let o = cli(&["run", b.to_str().unwrap(), "--no-progress"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!has_lock(&endpoint, dir), "released");

    // Machine A's run holds the prefix while it runs: machine B's run is refused.
    let mut run_a = std::process::Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(["run", a.to_str().unwrap(), "--no-progress"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NOMALY_FAULTS", "chunk_delay_ms=500")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_lock(&endpoint, dir) {
        assert!(run_a.try_wait().unwrap().is_none(), "run A ended first");
        assert!(Instant::now() < deadline, "run A never locked the output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = cli(&["run", b.to_str().unwrap(), "--no-progress"], &env);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is being written by another run"), "{err}");
    assert!(err.contains(&format!("pid {}", run_a.id())), "{err}");
    let a_done = run_a.wait_with_output().unwrap();
    assert!(a_done.status.success(), "{}", stderr(&a_done));
    assert!(!has_lock(&endpoint, dir), "released");
}
