//! The scheduler's port with `--auth-token-file` (SECURITY.md, "The cluster"), against real
//! `nomaly scheduler` and `nomaly executor` processes: without the token a client can neither
//! read the REST API nor run a plan (a `COPY … TO` among them); with it, both work.

use crate::cluster::Cluster;
use crate::{nomaly_env, stderr, stdout};

/// The status of one REST call to the scheduler, with or without a token.
fn rest_status(port: u16, method: &str, path: &str, token: Option<&str>) -> u16 {
    crate::serve::raw_request(port, method, path, None, token)
        .unwrap()
        .0
}

#[test]
fn the_scheduler_port_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "cluster-secret-for-tests";
    let file = dir.path().join("cluster.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let env = [("NOMALY_CLUSTER_TOKEN".to_string(), token.to_string())];
    let cluster =
        Cluster::start_with_env(1, &["--auth-token-file", file.to_str().unwrap()], &[], &env);
    let port = cluster.port;
    for path in ["/api/jobs", "/api/executors", "/api/state"] {
        assert_eq!(rest_status(port, "GET", path, None), 401, "{path}");
        assert_eq!(rest_status(port, "GET", path, Some("wrong")), 401, "{path}");
        assert_eq!(rest_status(port, "GET", path, Some(token)), 200, "{path}");
    }
    assert_eq!(rest_status(port, "PATCH", "/api/job/nosuchjob", None), 401);
    assert_eq!(rest_status(port, "GET", "/healthz", None), 200);
    // A client without the token cannot run a plan: here one that would write a file.
    let target = dir.path().join("copied.csv");
    let copy = format!(
        "COPY (SELECT 1 AS x) TO '{}' STORED AS CSV",
        target.display()
    );
    let engine = cluster.engine();
    let o = nomaly_env(&["sql", "--engine", &engine, "-e", &copy], &[]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stderr(&o).contains("token"), "{}", stderr(&o));
    assert!(!target.exists(), "a plan ran without the token");
    // With the token it runs.
    let o = nomaly_env(
        &["sql", "--engine", &engine, "-e", "SELECT 40 + 2 AS answer"],
        &[("NOMALY_CLUSTER_TOKEN", token)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("42"), "{}", stdout(&o));
}
