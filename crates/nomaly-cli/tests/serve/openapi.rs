//! The API's real answers against its generated OpenAPI document: schemathesis (from PyPI,
//! installed by scripts/test-services.sh) sends generated requests to every documented route of
//! a real server holding a finished run and a schedule, and checks each answer's status, content
//! type and body against the document, within a time budget.

use super::{Fixture, Served};
use std::path::PathBuf;
use std::process::Command;

/// schemathesis, or `None` (with a message) on a machine where scripts/test-services.sh never
/// ran and scripts/test.sh did not name it; under scripts/test.sh a missing one fails.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NOMALY_TEST_SCHEMATHESIS") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "{} is missing: run scripts/test-services.sh",
            path.display()
        );
        return Some(path);
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let path = home.join(".cache/nomaly-py/bin/schemathesis");
    if path.exists() {
        return Some(path);
    }
    eprintln!(
        "skipped: schemathesis is not installed; ./scripts/test.sh installs it \
         (scripts/test-services.sh) and runs this test"
    );
    None
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let f = Fixture::new();
    let token = "openapi-token";
    let server = Served::start(f.path(), &[], &[("NOMALY_TOKEN", token)]);
    // Data for the routes that read it: a finished run (id 1) and a registered pipeline.
    let id = server.submit(serde_json::json!({"path": f.pipeline("first", "out_first", "zscore", "").to_str().unwrap()}));
    assert_eq!(id, 1);
    server.wait_ended(id);
    let scheduled = f.pipeline("nightly", "out_nightly", "hbos", "schedule = \"0 3 * * *\"");
    let (status, v) = server.json(
        "POST",
        "/api/schedules",
        Some(serde_json::json!({"path": scheduled.to_str().unwrap()})),
    );
    assert_eq!(status, 201, "{v}");

    let o = Command::new(&schemathesis)
        .args([
            "run",
            &format!("{}/api/openapi.json", server.url()),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            // Event streams never end on their own; the Cluster routes need a scheduler.
            "--exclude-path-regex",
            "/events$|^/api/cluster",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "40",
            "--seed",
            "7",
            "--workers",
            "1",
        ])
        .current_dir(f.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let out = String::from_utf8_lossy(&o.stdout);
    let summary = out.rsplit("SUMMARY").next().unwrap_or(&out);
    eprintln!("{summary}");
    assert!(
        o.status.success(),
        "schemathesis found answers that disagree with the document:\n{out}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        server.log()
    );
    assert!(out.contains("passed"), "{out}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
