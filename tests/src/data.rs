//! Seeded test data written as real Parquet files.

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use nomaly_detectors::hashing::DeterministicRng;
use std::path::Path;
use std::sync::Arc;

/// Writes `rows` rows (id, segment, f1, f2, f3, label) into `files` Parquet files of row groups of
/// `row_group` rows. Every 50th row is an injected anomaly (label 1).
pub fn write_parquet_dataset(dir: &Path, rows: usize, files: usize, row_group: usize, seed: u64) {
    std::fs::create_dir_all(dir).expect("create data dir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("f1", DataType::Float64, true),
        Field::new("f2", DataType::Float64, true),
        Field::new("f3", DataType::Float64, true),
        Field::new("label", DataType::Int64, false),
    ]));
    let mut rng = DeterministicRng::new(seed);
    let per_file = rows.div_ceil(files);
    for file in 0..files {
        let start = file * per_file;
        let end = ((file + 1) * per_file).min(rows);
        let mut id = Vec::new();
        let mut seg = Vec::new();
        let mut f = [Vec::new(), Vec::new(), Vec::new()];
        let mut label = Vec::new();
        for i in start..end {
            let anomalous = i % 50 == 0;
            id.push(i as i64);
            seg.push(["a", "b", "c"][i % 3]);
            for (j, col) in f.iter_mut().enumerate() {
                let noise: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
                let v = if anomalous {
                    noise * 6.0 + 9.0
                } else {
                    noise * (j + 1) as f64 + 3.0 * j as f64
                };
                // a few missing values exercise the null policy
                col.push(if i % 997 == 1 { None } else { Some(v) });
            }
            label.push(i64::from(anomalous));
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(id)) as ArrayRef,
                Arc::new(StringArray::from(seg)),
                Arc::new(Float64Array::from(f[0].clone())),
                Arc::new(Float64Array::from(f[1].clone())),
                Arc::new(Float64Array::from(f[2].clone())),
                Arc::new(Int64Array::from(label)),
            ],
        )
        .expect("batch");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group))
            .build();
        let out = std::fs::File::create(dir.join(format!("part-{file:03}.parquet")))
            .expect("create parquet");
        let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props)).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }
}

/// Writes ids `first..first + rows` with deterministic `amount` and `latency_ms` to a Parquet file
/// in row groups of `row_group_rows` (so chunks of that many rows), with DataFusion's `COPY`: the
/// same writer, and so the same file, as `nomaly sql -e "COPY ..."` writes.
pub fn write_tx_parquet(path: &Path, first: u64, rows: u64, row_group_rows: u64) {
    let copy = format!(
        "COPY (SELECT value AS id, 100.0 + ((value * 7919) % 1000) / 50.0 AS amount, \
         CAST((value * 104729) % 977 AS DOUBLE) AS latency_ms \
         FROM generate_series({first}, {})) TO '{}' STORED AS PARQUET \
         OPTIONS ('format.max_row_group_size' '{row_group_rows}')",
        first + rows - 1,
        path.display()
    );
    // Its own thread and runtime: callers may be inside a runtime already.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.sql(&copy).await?.collect().await
        })
    })
    .join()
    .expect("the writer thread")
    .expect("COPY to Parquet");
}
