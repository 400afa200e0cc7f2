//! A run's log (`nomaly logs`, `/api/runs/{id}/logs`) and the runs list's filters and pages.

use super::{Fixture, Served, submit_path};
use crate::{nomaly_env, stderr, stdout};

#[test]
fn logs_follow_a_run_to_its_end_and_the_runs_list_filters_and_pages() {
    let f = Fixture::new();
    // 20 chunks of 150 ms: `--follow` starts while the run goes on.
    let server = Served::start(f.path(), &[], &[("NOMALY_FAULTS", "chunk_delay_ms=150")]);
    let token = server.token.clone().unwrap();
    let env = [("NOMALY_TOKEN", token.as_str())];
    let a = f.pipeline("a", "out_a", "zscore", "");
    let b = f.pipeline("b", "out_b", "hbos", "");
    let first = server.submit(submit_path(&a));
    server.wait_run(first, "running", |r| r["state"] == "running");
    let o = nomaly_env(
        &[
            "logs",
            &first.to_string(),
            "--follow",
            "--server",
            &server.url(),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = stdout(&o);
    for line in [
        "info  queued a (priority 0",
        "info  started a",
        "info  phase: fit",
        "info  fitted 1 model(s) on 20000 rows",
        "info  chunk 19 committed: 1000 rows",
        "info  finished succeeded",
    ] {
        assert!(log.contains(line), "missing '{line}' in:\n{log}");
    }
    assert!(log.trim_end().ends_with("finished succeeded"), "{log}");
    assert_eq!(
        server.run(first)["state"],
        "succeeded",
        "--follow ended with the run"
    );

    // ?after= gives the lines after a sequence number; a run that does not exist is a 404.
    let (_, all) = server.json("GET", &format!("/api/runs/{first}/logs"), None);
    let n = all["lines"].as_array().unwrap().len();
    let (_, tail) = server.json("GET", &format!("/api/runs/{first}/logs?after=3"), None);
    assert_eq!(tail["lines"].as_array().unwrap().len(), n - 3);
    assert_eq!(tail["lines"][0]["seq"], 4);
    assert_eq!(tail["finished"], true);
    assert_eq!(server.json("GET", "/api/runs/999/logs", None).0, 404);

    // Three runs: filter by pipeline, page through them.
    let second = server.submit(submit_path(&b));
    let third = server.submit(submit_path(&a));
    server.wait_ended(third);
    server.wait_ended(second);
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let (_, of_a) = server.json("GET", "/api/runs?pipeline=a", None);
    assert_eq!(
        (ids(&of_a), of_a["total"].as_u64()),
        (vec![third, first], Some(2))
    );
    let (_, page) = server.json("GET", "/api/runs?limit=1&offset=1", None);
    assert_eq!(
        (ids(&page), page["total"].as_u64()),
        (vec![second], Some(3))
    );
    let (_, later) = server.json(
        "GET",
        &format!("/api/runs?since_ms={}", server.run(third)["submitted_ms"]),
        None,
    );
    assert_eq!(ids(&later), vec![third]);
    let o = nomaly_env(&["runs", "--limit", "2", "--server", &server.url()], &env);
    assert!(
        stdout(&o).contains("(2 of 3; the next page: --offset 2)"),
        "{}",
        stdout(&o)
    );
}
