//! Chunks smaller than a row group: a file written with 1M-row row groups (as Spark or pyarrow
//! write them) runs as slices of `chunk_rows` rows, and its output is the output of the
//! whole-row-group chunking, row for row, locally and on Ballista.

use crate::report::RunStatus;
use crate::run_dir::{RUN_DIR, RUN_FILE, RunRecord};
use crate::{CompiledPipeline, PipelineFile, RunOptions, compile};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::path::Path;
use std::sync::Arc;

/// Row groups of 1,000,000, 5,000, 5,000 and 30,000 rows (one file; each row group flushed by
/// hand, as a writer with large row groups would leave them).
const ROW_GROUPS: [u64; 4] = [1_000_000, 5_000, 5_000, 30_000];

/// `page_index`: write offset indexes (where each page starts), as arrow-rs and Spark do;
/// pyarrow writes none by default.
fn write_input(path: &Path, page_index: bool) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("latency_ms", DataType::Float64, true),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(2_000_000))
        .set_offset_index_disabled(!page_index)
        .set_statistics_enabled(if page_index {
            EnabledStatistics::Page
        } else {
            EnabledStatistics::Chunk
        })
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
    let mut id = 0i64;
    for rows in ROW_GROUPS {
        let ids: Vec<i64> = (id..id + rows as i64).collect();
        id += rows as i64;
        let amount = Float64Array::from_iter_values(
            ids.iter()
                .map(|i| 100.0 + ((i * 7919) % 1000) as f64 / 50.0),
        );
        // Some missing values, so the null pages are sliced too.
        let latency = Float64Array::from_iter(
            ids.iter()
                .map(|i| (i % 97 != 0).then(|| ((i * 104729) % 977) as f64)),
        );
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(amount),
                Arc::new(latency),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
}

fn pipeline(
    dir: &Path,
    input: &Path,
    out: &str,
    chunk_rows: Option<u64>,
    engine: &str,
) -> CompiledPipeline {
    let file = dir.join(format!("{out}.toml"));
    let chunk_rows = chunk_rows
        .map(|n| format!("chunk_rows = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        "input = \"{}\"\noutput = \"{}\"\n[run]\n{chunk_rows}engine = \"{engine}\"\n\
         [resources]\ncpus = 2\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\", \"latency_ms\"]\n",
        input.display(),
        dir.join(out).display()
    );
    std::fs::write(&file, text).unwrap();
    compile(PipelineFile::load(&file, &[], &crate::RunRequest::default()).unwrap()).unwrap()
}

/// The output's rows in part order (parts are named by chunk, so this is the input's order), each
/// part read in file order.
fn output_rows(dir: &Path) -> Vec<RecordBatch> {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    parts.sort();
    let mut out = Vec::new();
    for p in parts {
        let file = std::fs::File::open(&p).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// Fails naming the first row and column where `got` differs from `expected`.
fn same_rows(got: &RecordBatch, expected: &RecordBatch, what: &str) {
    assert_eq!(got.schema(), expected.schema(), "{what}");
    assert_eq!(got.num_rows(), expected.num_rows(), "{what}");
    for (c, field) in expected.schema().fields().iter().enumerate() {
        let (g, e) = (got.column(c), expected.column(c));
        if g != e {
            let row = (0..e.len())
                .find(|&i| g.slice(i, 1) != e.slice(i, 1))
                .unwrap_or(0);
            panic!(
                "{what}: column {} differs first at row {row}: {:?} vs {:?} (whole row groups)",
                field.name(),
                g.slice(row, 1),
                e.slice(row, 1)
            );
        }
    }
}

async fn run(p: &CompiledPipeline) -> RunRecord {
    let report = crate::run(p, &RunOptions::default())
        .await
        .map_err(|f| f.error.to_string())
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.output_rows, ROW_GROUPS.iter().sum::<u64>());
    let record = p.sinks[0].path.join(RUN_DIR).join(RUN_FILE);
    serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_groups_larger_than_chunk_rows_split_into_slices_with_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big_groups.parquet");
    write_input(&input, true);

    let whole = run(&pipeline(
        dir.path(),
        &input,
        "whole",
        Some(1_000_000),
        "local",
    ))
    .await;
    // 1M rows, then the three small row groups together.
    assert_eq!(whole.chunks.len(), 2, "{:?}", whole.chunks);

    let sliced = run(&pipeline(
        dir.path(),
        &input,
        "sliced",
        Some(20_000),
        "local",
    ))
    .await;
    // 50 slices of the 1M-row group; 5,000 + 5,000 together; 30,000 as two slices of 15,000.
    assert_eq!(sliced.chunks.len(), 53);
    let file = input.display().to_string();
    let name = |i: usize| sliced.chunks[i].range.clone();
    assert_eq!(name(0), format!("{file} rows 0..20000"));
    assert_eq!(name(49), format!("{file} rows 980000..1000000"));
    assert!(
        name(50).starts_with(&format!("{file} bytes ")),
        "{}",
        name(50)
    );
    assert_eq!(name(51), format!("{file} rows 1010000..1025000"));
    assert_eq!(name(52), format!("{file} rows 1025000..1040000"));
    for c in &sliced.chunks[..50] {
        assert_eq!(c.rows, Some(20_000));
    }

    let expected = concat(&output_rows(&dir.path().join("whole")));
    let got = concat(&output_rows(&dir.path().join("sliced")));
    assert_eq!(got.num_rows(), 1_040_000);
    same_rows(&got, &expected, "sliced locally");

    // On Ballista (standalone) each chunk is a job on an executor: the slice must travel with
    // the plan, or every chunk would read its whole row group.
    let on_ballista = run(&pipeline(
        dir.path(),
        &input,
        "ballista",
        Some(20_000),
        "standalone",
    ))
    .await;
    assert_eq!(on_ballista.chunks.len(), 53);
    let got = concat(&output_rows(&dir.path().join("ballista")));
    same_rows(&got, &expected, "sliced on Ballista");
}

/// Without a page index a slice reads and decompresses its whole row group, so at the default
/// `chunk_rows` such row groups stay whole; with one, or with `chunk_rows` set, they are sliced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_groups_without_a_page_index_are_sliced_only_when_chunk_rows_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let indexed = dir.path().join("indexed.parquet");
    write_input(&indexed, true);
    let unindexed = dir.path().join("unindexed.parquet");
    write_input(&unindexed, false);

    // the default 100,000: ten slices of the 1M-row group, then the three small groups together
    let sliced = run(&pipeline(dir.path(), &indexed, "indexed", None, "local")).await;
    assert_eq!(sliced.chunks.len(), 11, "{:?}", sliced.chunks);
    let whole = run(&pipeline(
        dir.path(),
        &unindexed,
        "unindexed",
        None,
        "local",
    ))
    .await;
    assert_eq!(whole.chunks.len(), 2, "{:?}", whole.chunks);
    assert_eq!(whole.chunks[0].rows, Some(1_000_000));
    let set = run(&pipeline(
        dir.path(),
        &unindexed,
        "set",
        Some(100_000),
        "local",
    ))
    .await;
    assert_eq!(set.chunks.len(), 11, "{:?}", set.chunks);
    // `explain` names the files whose row groups were kept whole, and only those.
    let ctx = datafusion::prelude::SessionContext::new();
    for (input, chunk_rows, kept_whole) in [
        (&unindexed, None, true),
        (&indexed, None, false),
        (&unindexed, Some(100_000), false),
    ] {
        let p = pipeline(dir.path(), input, "plan", chunk_rows, "local");
        let plan =
            crate::chunk_plan::plan_chunks(&ctx, &p.sources[0], p.chunk_rows, p.chunk_rows_set())
                .await
                .unwrap();
        let expected: Vec<String> = if kept_whole {
            vec![input.display().to_string()]
        } else {
            vec![]
        };
        assert_eq!(
            plan.unsliced,
            expected,
            "{} at {chunk_rows:?}",
            input.display()
        );
    }

    let expected = concat(&output_rows(&dir.path().join("indexed")));
    for out in ["unindexed", "set"] {
        let got = concat(&output_rows(&dir.path().join(out)));
        same_rows(&got, &expected, out);
    }
}
