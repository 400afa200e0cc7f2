//! The API's guard rails: the token off loopback, malformed requests, the allowed roots.

use super::{Fixture, Served, raw_request};
use crate::{nomaly_env, stderr};
use nomaly_tests::http::Request;
use std::time::Duration;

/// Only the status line (event streams never end by themselves).
fn status_of_stream(port: u16, path: &str, token: Option<&str>) -> u16 {
    let request = Request {
        token,
        host: Some("x"),
        timeout: Some(Duration::from_secs(10)),
        ..Request::get(path)
    };
    request.status_only(port).expect("a status line")
}

/// Every operation in the OpenAPI file, as (method, path template).
fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn off_loopback_the_token_is_required_and_bad_requests_never_fail_the_server() {
    let f = Fixture::new();
    // Off loopback without a token: refused at start.
    let o = nomaly_env(
        &[
            "serve",
            "--bind",
            "0.0.0.0",
            "--port",
            "1",
            "--db",
            f.path().join("x.db").to_str().unwrap(),
        ],
        &[("NOMALY_TOKEN", "")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs a token"), "{}", stderr(&o));

    let token = "t0ken-for-tests";
    let server = Served::start(
        f.path(),
        &["--bind", "0.0.0.0", "--max-body", "64KB"],
        &[("NOMALY_TOKEN", token)],
    );
    let port = server.port;
    let (status, doc) = server.json("GET", "/api/openapi.json", None);
    assert_eq!(status, 200);
    let ops = operations(&doc);
    assert!(ops.len() >= 16, "{ops:?}");
    let first = server.submit(
        serde_json::json!({"path": f.pipeline("ok", "out_ok", "zscore", "").to_str().unwrap()}),
    );
    server.wait_ended(first);
    let concrete = |p: &str, id: &str| p.replace("{id}", id).replace("{name}", id);

    // Without the token: 401 everywhere but /health.
    for (method, path) in &ops {
        let path = concrete(path, "1");
        let status = if path.ends_with("/events") {
            status_of_stream(port, &path, None)
        } else {
            raw_request(port, method, &path, Some(b"{}"), None)
                .unwrap()
                .0
        };
        let expected = if path == "/health" { 200 } else { 401 };
        assert_eq!(status, expected, "{method} {path} without the token");
    }
    let (status, _) = raw_request(port, "GET", "/api/runs", None, Some("wrong")).unwrap();
    assert_eq!(status, 401);

    // With it: malformed bodies and path parameters never give a 5xx.
    let bodies = malformed_bodies();
    let ids = [
        "1",
        "0",
        "-1",
        "abc",
        "99999999999999999999",
        "%00",
        "..%2F..",
        "1.5",
        "%F0%9F%92%A9",
    ];
    let mut requests = 0;
    for (method, template) in &ops {
        for id in ids {
            let path = concrete(template, id);
            if path.ends_with("/events") {
                let s = status_of_stream(port, &path, Some(token));
                assert!(s < 500, "GET {path}: {s}");
                requests += 1;
                continue;
            }
            for body in &bodies {
                let (status, text) = raw_request(port, method, &path, Some(body), Some(token))
                    .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", server.log()));
                assert!(
                    status < 500,
                    "{method} {path} body {:?}: {status} {text}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                );
                requests += 1;
            }
        }
    }
    let (status, _) = raw_request(
        port,
        "POST",
        "/api/runs",
        Some(&vec![b' '; 200_000]),
        Some(token),
    )
    .unwrap();
    assert_eq!(status, 413, "a body over --max-body");
    eprintln!("{requests} malformed requests, none answered 5xx");
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert_eq!(server.request("GET", "/health", None).unwrap().0, 200);

    outside_the_roots_is_refused(&server, &f);
}

/// Bodies a careless or hostile client sends: JSON of the wrong shape, hostile paths, random
/// bytes (from a fixed seed), and one over `--max-body`.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect()
    };
    let mut bodies: Vec<Vec<u8>> = [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"0",
        b"\"x\"",
        b"{\"path\": 5}",
        b"{\"toml\": \"[[[\"}",
        b"{\"path\": \"a\", \"toml\": \"b\"}",
        b"{\"unknown\": 1}",
        b"{\"path\": \"/etc/passwd\"}",
        b"{\"path\": \"../../etc/passwd\"}",
        b"{\"toml\": \"input = 1\"}",
        b"{\"priority\": \"high\"}",
        b"{\"toml\": \"x\", \"memory_limit\": \"lots\"}",
        b"{\"toml\": \"x\", \"cpus\": -1}",
        b"{\"path\": \"\\u0000\"}",
        b"{\"toml\": \"\", \"timeout\": \"-5s\"}",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    for n in [1, 17, 300, 4096] {
        bodies.push(random(n));
    }
    bodies.push(vec![b'{'; 200_000]); // over --max-body
    bodies
}

/// Outside the allowed roots: refused, for the file and for the data it names; command
/// notifications are off unless allowed.
fn outside_the_roots_is_refused(server: &Served, f: &Fixture) {
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("p.toml");
    std::fs::write(
        &elsewhere,
        "input = \"x.csv\"\noutput = \"o/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"a\"]\n",
    )
    .unwrap();
    let (status, v) = server.json(
        "POST",
        "/api/runs",
        Some(serde_json::json!({"path": elsewhere.to_str().unwrap()})),
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("outside the server's allowed roots"),
        "{v}"
    );
    let sneaky = format!(
        "{}/../{}",
        f.path().display(),
        elsewhere.strip_prefix("/").unwrap().display()
    );
    let (status, _) = server.json(
        "POST",
        "/api/runs",
        Some(serde_json::json!({"path": sneaky})),
    );
    assert_eq!(status, 403);
    let toml = format!(
        "input = \"tx.parquet\"\noutput = \"{}/o/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n",
        outside.path().display()
    );
    let (status, v) = server.json("POST", "/api/runs", Some(serde_json::json!({"toml": toml})));
    assert_eq!(status, 403, "{v}");
    // Command notifications are off on a server unless allowed.
    let toml = "input = \"tx.parquet\"\noutput = \"o/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n[[notify]]\ntype = \"command\"\ncommand = \"touch pwned\"\n";
    let (status, v) = server.json("POST", "/api/runs", Some(serde_json::json!({"toml": toml})));
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("--allow-notify-commands"),
        "{v}"
    );
}
