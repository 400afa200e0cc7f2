//! Run dates and backfills on a real server: a backfill is one item whose runs (one per day, at
//! a low priority, one at a time) write what local runs of each day write.

use super::Served;
use crate::pipeline::backfill::DAYS;
use crate::{assert_same_parts, nomaly_env, part_files, root, stderr, stdout};
use std::path::Path;
use std::time::{Duration, Instant};

/// The bundled daily example under `dir` (its data beside it), writing to `dir/out`.
pub(super) fn daily_example(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::copy(root().join("examples/data/tx.csv"), dir.join("data/tx.csv")).unwrap();
    let text = std::fs::read_to_string(root().join("examples/pipelines/daily.toml"))
        .unwrap()
        .replace("${NOMALY_OUT:-out}", "../out");
    let file = dir.join("pipelines/daily.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_backfill_queues_a_run_per_day_one_at_a_time_equal_to_local_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = daily_example(tmp.path());
    let server = Served::start(tmp.path(), &["--max-runs", "2"], &[]);
    let url = server.url();
    let token = server.token.clone().unwrap();
    let env = [("NOMALY_TOKEN", token.as_str())];
    let o = nomaly_env(
        &[
            "backfill",
            file.to_str().unwrap(),
            "--from",
            DAYS[0],
            "--to",
            DAYS[6],
            "--submit",
            "--server",
            &url,
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("of daily: 2026-01-01 to 2026-01-07, running — 7 run(s)"),
        "{}",
        stdout(&o)
    );
    let id = server.json("GET", "/api/backfills", None).1["backfills"][0]["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let view = loop {
        let (status, v) = server.json("GET", &format!("/api/backfills/{id}"), None);
        assert_eq!(status, 200, "{v}");
        if v["state"] != "running" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(view["state"], "succeeded", "{view}\n{}", server.log());
    assert_eq!(view["counts"], serde_json::json!({"succeeded": 7}));
    let dates: Vec<&str> = view["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    assert_eq!(dates, DAYS);

    // Low priority, each for its own day, and one at a time (the pipeline does not allow
    // overlap) although the server runs two at once.
    let mut spans = Vec::new();
    for r in view["runs"].as_array().unwrap() {
        let run = server.run(r["run"].as_i64().unwrap());
        assert_eq!(
            (run["priority"].as_i64(), run["trigger"].as_str()),
            (Some(-10), Some("backfill"))
        );
        assert_eq!(run["backfill"].as_i64(), Some(id));
        assert_eq!(run["interval"]["date"], r["date"]);
        spans.push((
            run["started_ms"].as_i64().unwrap(),
            run["finished_ms"].as_i64().unwrap(),
        ));
    }
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "runs overlapped: {spans:?}"
    );

    // Each day's output equals a local run of that day.
    let alone = tmp.path().join("alone");
    for day in DAYS {
        let o = nomaly_env(
            &["run", "examples/pipelines/daily.toml", "--date", day],
            &[("NOMALY_OUT", alone.to_str().unwrap())],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let served = part_files(&tmp.path().join(format!("out/daily/date={day}")));
        let local = part_files(&alone.join(format!("daily/date={day}")));
        assert!(!served.is_empty());
        assert_same_parts(day, &served, &local);
    }
    let o = nomaly_env(&["backfills", "--server", &url], &env);
    assert!(
        stdout(&o).contains("succeeded — 7 run(s): 7 succeeded"),
        "{}",
        stdout(&o)
    );

    submitted_runs_take_a_date_and_bounded_params(&server, &file);
}

/// `POST /api/runs` with a date runs that day; bad dates, params and ranges are 400s.
fn submitted_runs_take_a_date_and_bounded_params(server: &Served, file: &Path) {
    let path = file.to_str().unwrap();
    let id = server.submit(serde_json::json!({"path": path, "date": "2026-01-03"}));
    let run = server.wait_ended(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["interval"]["date"], "2026-01-03");
    assert_eq!(run["interval"]["start_ms"], 1_767_398_400_000i64);
    assert_eq!(run["interval"]["timezone"], "UTC");
    for (route, body, needle) in [
        (
            "/api/runs",
            serde_json::json!({"path": path, "date": "3 Jan"}),
            "date: '3 Jan' is not a day",
        ),
        (
            "/api/runs",
            serde_json::json!({"path": path, "params": {"x": "a'b"}}),
            "params: parameter x",
        ),
        (
            "/api/runs",
            serde_json::json!({"path": path, "date": "2026-01-03", "params": {"x": "1"}}),
            "is not read by this pipeline",
        ),
        (
            "/api/backfills",
            serde_json::json!({"path": path, "from": "2026-01-05", "to": "2026-01-01"}),
            "is before the first day",
        ),
        (
            "/api/backfills",
            serde_json::json!({"path": path, "from": "2026-01-01"}),
            "missing field `to`",
        ),
    ] {
        let (status, v) = server.json("POST", route, Some(body));
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
}
