//! Schedules in real time, and `after` chains.

use super::{Fixture, Served, now_ms};
use crate::{nomaly_env, stderr, stdout};
use std::time::Duration;

/// A schedule firing every minute runs exactly once per minute over 3 minutes, and the pipelines
/// that run `after` it follow each of its runs in order. A cycle of `after` is refused.
#[test]
fn a_minutely_schedule_runs_once_a_minute_and_its_dependents_follow() {
    let f = Fixture::new();
    let server = Served::start(f.path(), &["--max-runs", "1"], &[]);
    let url = server.url();
    let tick = f.pipeline(
        "tick",
        "out_tick",
        "zscore",
        "schedule = \"* * * * *\"\ncatch_up = \"none\"",
    );
    let down = f.pipeline("down", "out_down", "hbos", "after = [\"tick\"]");
    let down2 = f.pipeline("down2", "out_down2", "zscore", "after = [\"down\"]");
    for p in [&tick, &down, &down2] {
        let o = nomaly_env(
            &["schedule", "add", p.to_str().unwrap(), "--server", &url],
            &[("NOMALY_TOKEN", server.token.as_deref().unwrap())],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // The first fire follows the time the server registered the schedule (its clock, not the
    // test's: a minute boundary between the two would shift every expected fire).
    let registered = server.json("GET", "/api/schedules/tick", None).1["added_ms"]
        .as_i64()
        .expect("added_ms");
    let o = nomaly_env(
        &["schedule", "list", "--server", &url],
        &[("NOMALY_TOKEN", server.token.as_deref().unwrap())],
    );
    assert!(
        stdout(&o).contains("tick") && stdout(&o).contains("* * * * *"),
        "{}",
        stdout(&o)
    );

    cycles_and_bad_expressions_are_refused(&server, &f);

    // Three minute boundaries after registering, plus time for the last chain to finish.
    let first_fire = (registered / 60_000 + 1) * 60_000;
    let until = first_fire + 2 * 60_000 + 25_000;
    while now_ms() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, v) = server.json("DELETE", "/api/schedules/tick", None);
    let _ = v;
    let runs = server.json("GET", "/api/runs?limit=100", None).1["runs"]
        .as_array()
        .unwrap()
        .clone();
    let of = |name: &str| {
        let mut r: Vec<serde_json::Value> = runs
            .iter()
            .filter(|r| r["pipeline"] == name)
            .cloned()
            .collect();
        r.sort_by_key(|r| r["id"].as_i64());
        r
    };
    let ticks = of("tick");
    let fires: Vec<i64> = ticks
        .iter()
        .map(|r| {
            r["trigger"]
                .as_str()
                .unwrap()
                .strip_prefix("schedule:")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        fires,
        vec![first_fire, first_fire + 60_000, first_fire + 120_000],
        "{ticks:?}"
    );
    for r in &ticks {
        let queued = r["submitted_ms"].as_i64().unwrap();
        let fire: i64 = r["trigger"].as_str().unwrap()[9..].parse().unwrap();
        // Queued at its fire time, before the next one (how soon is measured by benchmarks).
        assert!(
            queued >= fire && queued < fire + 60_000,
            "queued {} ms after its fire time",
            queued - fire
        );
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    let (downs, downs2) = (of("down"), of("down2"));
    assert_eq!(downs.len(), 3, "{downs:?}");
    assert_eq!(downs2.len(), 3, "{downs2:?}");
    for i in 0..3 {
        let t_end = ticks[i]["finished_ms"].as_i64().unwrap();
        let d_start = downs[i]["started_ms"].as_i64().unwrap();
        let d_end = downs[i]["finished_ms"].as_i64().unwrap();
        let d2_start = downs2[i]["started_ms"].as_i64().unwrap();
        assert!(
            t_end <= d_start && d_end <= d2_start,
            "chain {i} out of order"
        );
        assert_eq!(downs[i]["trigger"], format!("after:{}", ticks[i]["id"]));
    }
    let (_, s) = server.json("GET", "/api/schedules/down", None);
    assert_eq!(s["after"], serde_json::json!(["tick"]));
}

/// A cycle of `after` is refused naming it; a bad cron expression is found with its place.
fn cycles_and_bad_expressions_are_refused(server: &Served, f: &Fixture) {
    // A cycle is refused, naming it.
    let c1 = f.pipeline("c1", "out_c1", "zscore", "after = [\"c2\"]");
    let c2 = f.pipeline("c2", "out_c2", "zscore", "after = [\"c1\"]");
    let (status, _) = server.json(
        "POST",
        "/api/schedules",
        Some(serde_json::json!({"path": c1.to_str().unwrap()})),
    );
    assert_eq!(status, 201);
    let (status, v) = server.json(
        "POST",
        "/api/schedules",
        Some(serde_json::json!({"path": c2.to_str().unwrap()})),
    );
    assert_eq!(status, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("cycle") && e.contains("c1 -> c2 -> c1"), "{e}");
    // A bad expression is found with its place.
    let bad = f.pipeline("bad", "out_bad", "zscore", "schedule = \"every minute\"");
    let (status, v) = server.json(
        "POST",
        "/api/schedules",
        Some(serde_json::json!({"path": bad.to_str().unwrap()})),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("bad.toml:2:1 schedule"),
        "{v}"
    );
}
