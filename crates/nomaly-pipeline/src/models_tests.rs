use super::*;
use datafusion::arrow::array::{BinaryArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use std::sync::Arc;

fn meta(name: &str) -> ModelVersion {
    ModelVersion {
        name: name.into(),
        version: 0,
        algorithm: "zscore".into(),
        options: String::new(),
        columns: vec!["amount".into()],
        partition_by: vec![],
        training_rows: 100,
        models: 1,
        interval_start_ms: 0,
        interval_end_ms: 86_400_000,
        pipeline: "p".into(),
        pipeline_file: "p.toml".into(),
        run_started_at_unix_ms: 1,
        created_at_unix_ms: 0,
        size_bytes: 0,
        score_edges: vec![0.5, 1.0],
        score_shares: vec![0.3, 0.4, 0.3],
    }
}

fn table(rows: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("m", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![rows])),
            Arc::new(BinaryArray::from(vec![Some(&b"model"[..])])),
        ],
    )
    .unwrap();
    crate::run_dir::models_ipc(&schema, &[batch]).unwrap()
}

#[test]
fn versions_number_up_and_are_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::at(dir.path());
    assert!(registry.list().unwrap().is_empty());
    let e = registry.get("fraud", None).unwrap_err().to_string();
    assert!(e.contains("no model 'fraud' is registered"), "{e}");
    let v1 = registry.register(meta("fraud"), &table(1)).unwrap();
    let v2 = registry.register(meta("fraud"), &table(2)).unwrap();
    registry.register(meta("churn"), &table(3)).unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v2.size_bytes, table(2).len() as u64);
    let (latest, _, batches) = registry.get("fraud", None).unwrap();
    assert_eq!(latest.version, 2);
    let keys = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(keys.value(0), 2);
    let (pinned, _, _) = registry.get("fraud", Some(1)).unwrap();
    assert_eq!(pinned.version, 1);
    let e = registry.get("fraud", Some(7)).unwrap_err().to_string();
    assert!(e.contains("has no version 7; it has v1, v2"), "{e}");
    let names: Vec<(String, u32)> = registry
        .list()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.version))
        .collect();
    assert_eq!(
        names,
        [
            ("churn".into(), 1),
            ("fraud".into(), 1),
            ("fraud".into(), 2)
        ]
    );
    assert_eq!(registry.remove("fraud", Some(1)).unwrap(), 1);
    assert_eq!(
        registry.register(meta("fraud"), &table(4)).unwrap().version,
        3
    );
    assert_eq!(registry.remove("fraud", None).unwrap(), 2);
    assert!(registry.versions("fraud").unwrap().is_empty());
    assert!(registry.register(meta("../x"), &table(1)).is_err());
}

#[test]
fn psi_is_zero_for_the_same_shares_and_grows_with_a_shift() {
    let deciles = vec![0.1; 10];
    assert!(psi(&deciles, &deciles).abs() < 1e-12);
    let shifted = [0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.4];
    assert!(psi(&deciles, &shifted) > 1.0, "{}", psi(&deciles, &shifted));
    let slight = [0.09, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
    assert!(psi(&deciles, &slight) < 0.01);
    assert_eq!(bin_of(&[0.5, 1.0], 0.2), 0);
    assert_eq!(bin_of(&[0.5, 1.0], 0.5), 1);
    assert_eq!(bin_of(&[0.5, 1.0], 7.0), 2);
}
