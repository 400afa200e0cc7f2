//! The cluster token (SECURITY.md, "The cluster"), against real `nomaly scheduler` and `nomaly
//! executor` processes started with `--auth-token-file`: without the token a client can neither
//! read the REST API, nor run a plan (a `COPY … TO` among them), nor join as an executor, nor
//! fetch from an executor's Flight port; with it, a query that shuffles between two executors
//! runs. Off loopback, neither process starts without a token.

use crate::cluster::{Cluster, SHUFFLED_ANSWER};
use crate::{nomaly_env, stderr, stdout};
use std::process::Command;

/// The status of one REST call to the scheduler, with or without a token.
fn rest_status(port: u16, method: &str, path: &str, token: Option<&str>) -> u16 {
    crate::serve::raw_request(port, method, path, None, token)
        .unwrap()
        .0
}

/// The `grpc-status` a gRPC call to `port`'s `method` answers (HTTP/2 without TLS, by curl),
/// with the extra `headers`.
fn grpc_status(port: u16, method: &str, headers: &[&str]) -> String {
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--http2-prior-knowledge",
    ])
    .args(["--max-time", "10", "-X", "POST"])
    .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
    .arg("--data-binary")
    .arg("");
    for h in headers {
        curl.args(["-H", h]);
    }
    let o = curl
        .arg(format!("http://127.0.0.1:{port}{method}"))
        .output()
        .expect("curl runs (scripts/test-services.sh installs it)");
    let head = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("grpc-status:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| format!("no grpc-status in {head:?}"))
}

#[test]
fn every_cluster_port_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "cluster-secret-for-tests";
    let file = dir.path().join("cluster.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let token_flag = ["--auth-token-file", file.to_str().unwrap()];
    let env = [("NOMALY_CLUSTER_TOKEN".to_string(), token.to_string())];
    let cluster = Cluster::start_with_env(2, &token_flag, &token_flag, &env);
    let port = cluster.port;
    for path in ["/api/jobs", "/api/executors", "/api/state"] {
        assert_eq!(rest_status(port, "GET", path, None), 401, "{path}");
        assert_eq!(rest_status(port, "GET", path, Some("wrong")), 401, "{path}");
        assert_eq!(rest_status(port, "GET", path, Some(token)), 200, "{path}");
    }
    assert_eq!(rest_status(port, "PATCH", "/api/job/nosuchjob", None), 401);
    assert_eq!(rest_status(port, "GET", "/healthz", None), 200);

    // gRPC on the scheduler's port: the client's methods and the executors' alike.
    for method in [
        "ExecuteQuery",
        "RegisterExecutor",
        "PollWork",
        "HeartBeatFromExecutor",
    ] {
        let path = format!("/ballista.protobuf.SchedulerGrpc/{method}");
        assert_eq!(
            grpc_status(port, &path, &[]),
            "16",
            "{method} without a token"
        );
        let agent = "user-agent: nomaly-cluster-token/wrong";
        assert_eq!(
            grpc_status(port, &path, &[agent]),
            "16",
            "{method}, wrong token"
        );
    }
    // Ballista's Flight proxy on the scheduler's port (no Flight SQL here).
    let do_get = "/arrow.flight.protocol.FlightService/DoGet";
    assert_eq!(grpc_status(port, do_get, &[]), "16");

    // Each executor's Flight port: refused without the token, answered with it.
    let executors = cluster.json("/api/executors").expect("executors");
    let flight_ports: Vec<u16> = executors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(flight_ports.len(), 2);
    for p in &flight_ports {
        assert_eq!(grpc_status(*p, do_get, &[]), "16", "executor Flight {p}");
        let bearer = format!("authorization: Bearer {token}");
        let answered = grpc_status(*p, do_get, &[&bearer]);
        assert_ne!(answered, "16", "executor Flight {p} with the token");
    }

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

    // An executor without the token cannot join.
    let work = dir.path().join("rogue-work");
    std::fs::create_dir_all(&work).unwrap();
    let rogue = nomaly_env(
        &[
            "executor",
            "--scheduler-port",
            &port.to_string(),
            "--bind-port",
            &crate::free_port().to_string(),
            "--bind-grpc-port",
            &crate::free_port().to_string(),
            "--bind-health-port",
            &crate::free_port().to_string(),
            "--work-dir",
            work.to_str().unwrap(),
            "--scheduler-connect-timeout-seconds",
            "5",
        ],
        &[],
    );
    assert_ne!(rogue.status.code(), Some(0), "a rogue executor ran");
    assert_eq!(cluster.executors(), 2, "{}", stderr(&rogue));

    // With the token, a query whose stages shuffle between the executors runs.
    let o = cluster.shuffled_query(dir.path(), &[("NOMALY_CLUSTER_TOKEN", token)]);
    cluster.assert_succeeded(&o);
    assert_eq!(stdout(&o), SHUFFLED_ANSWER);
}

#[test]
fn off_loopback_the_cluster_processes_need_a_token() {
    for args in [
        vec!["scheduler", "--bind-host", "0.0.0.0", "--bind-port", "1"],
        vec!["executor", "--bind-host", "0.0.0.0", "--bind-port", "1"],
    ] {
        let o = nomaly_env(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--auth-token-file"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Ballista's --log-dir is not silently ignored.
    for process in ["scheduler", "executor"] {
        let o = nomaly_env(&[process, "--log-dir", "/tmp/x"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("log to standard error"),
            "{}",
            stderr(&o)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.token");
    std::fs::write(&file, "two words\n").unwrap();
    let o = nomaly_env(
        &["scheduler", "--auth-token-file", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("visible ASCII"), "{}", stderr(&o));
}
