//! The model registry through a server: a served training run registers a version, which
//! `GET /api/models` lists.

use super::Served;
use crate::pipeline::models::training_pipeline;

#[test]
fn a_served_training_run_registers_a_version_the_api_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = training_pipeline(dir);
    let server = Served::start(dir, &[], &[]);
    let (status, none) = server.json("GET", "/api/models/fraud", None);
    assert_eq!(status, 404, "{none}");
    let id = server.submit(serde_json::json!({"path": train, "date": "2026-01-31"}));
    let run = server.wait_ended(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let (status, list) = server.json("GET", "/api/models", None);
    assert_eq!(status, 200, "{list}");
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{list}");
    let m = &models[0];
    assert_eq!(
        (
            m["name"].as_str(),
            m["version"].as_u64(),
            m["training_rows"].as_u64()
        ),
        (Some("fraud"), Some(1), Some(6000))
    );
    assert_eq!(m["score_edges"].as_array().unwrap().len(), 9);
    assert!(
        m["registry"]
            .as_str()
            .unwrap()
            .ends_with(".nomaly-state/models")
    );
    let (status, bad) = server.json("GET", "/api/models/..%2Fetc", None);
    assert_eq!(status, 400, "{bad}");
}
