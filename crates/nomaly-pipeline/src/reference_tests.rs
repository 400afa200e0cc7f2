//! The pipeline file reference (`docs/pipelines.md`) is checked against the JSON Schema the
//! parser is derived from: every key a pipeline file may hold is named there in backticks.

use std::collections::BTreeSet;

/// Every property name anywhere in the schema (top level, tables, arrays of tables).
fn keys(schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            map.values().for_each(|v| keys(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn the_reference_names_every_key_of_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/pipelines.md");
    let reference = std::fs::read_to_string(path).expect(path);
    let mut all = BTreeSet::new();
    keys(&crate::json_schema(), &mut all);
    assert!(all.len() > 30, "{all:?}");
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| {
            !(reference.contains(&format!("`{k}`"))
                || reference.contains(&format!("`{k} "))
                || reference.contains(&format!("`{k}=")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/pipelines.md does not name these pipeline keys: {missing:?}"
    );
}
