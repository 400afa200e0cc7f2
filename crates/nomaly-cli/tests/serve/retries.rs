//! Automatic retries of served runs (`[retry] run_retries`): a failed run waits its delay in the
//! queue, resumes, and alerts only when its last attempt fails.

use super::Served;
use crate::write_tx_parquet;
use std::path::Path;
use std::time::{Duration, Instant};

/// A pipeline over `inbox/*.parquet` (empty at first, so a run fails) that appends a line to
/// `alerts.log` on failure.
fn pipeline(dir: &Path, name: &str, retries: u32) -> String {
    std::fs::create_dir_all(dir.join(format!("{name}_inbox"))).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\ninput = \"{name}_inbox/*.parquet\"\noutput = \"{name}_out/\"\n\
             [detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n\
             [retry]\nrun_retries = {retries}\nrun_retry_delay = \"1s\"\n\
             [[notify]]\ntype = \"command\"\ncommand = \"echo {name} >> alerts.log\"\non = \"failure\"\n"
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

fn alerts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("alerts.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_failed_run_is_retried_after_its_delay_and_alerts_only_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Served::start(dir, &["--allow-notify-commands"], &[]);

    // Fails once (no input yet), waits in the queue as a retry, then finds its input.
    let healed = server.submit(serde_json::json!({"path": pipeline(dir, "healed", 2)}));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = server.run(healed);
        if run["attempts"] == 1 && run["state"] == "queued" {
            assert!(run["not_before_ms"].as_i64().is_some(), "{run}");
            assert_eq!(run["queue"]["waiting_for"], "retry", "{run}");
            break;
        }
        assert!(Instant::now() < deadline, "{run}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    write_tx_parquet(&dir.join("healed_inbox/a.parquet"), 0, 2_000, 1_000);
    let run = server.wait_ended(healed);
    assert_eq!(
        (run["state"].as_str(), run["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{run}"
    );
    let history = server
        .json("GET", &format!("/api/runs/{healed}/history"), None)
        .1;
    assert!(
        history.to_string().contains("attempt 1 failed"),
        "{history}"
    );
    assert!(
        alerts(dir).is_empty(),
        "an attempt that is retried does not alert"
    );

    // Fails every time: one alert, after the last of its 1 + 2 attempts.
    let doomed = server.submit(serde_json::json!({"path": pipeline(dir, "doomed", 2)}));
    let run = server.wait_run(doomed, "failed for good", |r| {
        r["state"] == "failed" && r["attempts"] == 3
    });
    assert!(
        run["error"].as_str().unwrap().contains("files match"),
        "{run}"
    );
    assert!(run["not_before_ms"].is_null(), "{run}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(alerts(dir), ["doomed"]);
}
