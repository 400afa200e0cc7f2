//! The rows a [`PartWriteExec`](super::PartWriteExec) yields: one per part file it wrote and one
//! of chunk totals, and how the client reads them back (refusing any path outside staging).

use super::part::{StagedPart, WrittenPart};
use super::write_exec::SinkOnExecutor;
use datafusion::arrow::array::{
    Array, AsArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::error::{DataFusionError, Result as DfResult};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A chunk's scored rows counted: all, flagged (`is_anomaly`), scored null (`anomaly_score`: a
/// missing feature).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCounts {
    pub rows: u64,
    pub anomalies: u64,
    pub missing: u64,
}

/// Counts batches of scored rows (the same on every engine: in the chunk job locally, in
/// [`PartWriteExec`] on Ballista).
pub struct ChunkCounter {
    pub counts: ChunkCounts,
    score: Option<usize>,
    flag: Option<usize>,
}

impl ChunkCounter {
    pub fn new(schema: &Schema) -> ChunkCounter {
        ChunkCounter {
            counts: ChunkCounts::default(),
            score: schema.index_of("anomaly_score").ok(),
            flag: schema.index_of("is_anomaly").ok(),
        }
    }

    pub fn add(&mut self, batch: &RecordBatch) {
        self.counts.rows += batch.num_rows() as u64;
        if let Some(i) = self.flag {
            self.counts.anomalies += batch.column(i).as_boolean().true_count() as u64;
        }
        if let Some(i) = self.score {
            self.counts.missing += batch.column(i).null_count() as u64;
        }
    }
}

/// The rows a [`PartWriteExec`] yields: one per part file (`sink` set), then the chunk's totals
/// (`sink` null). Paths are relative to the sink's staging directory.
pub(super) fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sink", DataType::UInt32, true),
        Field::new("temp", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("crc32", DataType::UInt32, false),
        Field::new("anomalies", DataType::UInt64, false),
        Field::new("missing", DataType::UInt64, false),
    ]))
}

fn relative(path: &Path, staging: &Path) -> DfResult<String> {
    path.strip_prefix(staging)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| {
            DataFusionError::Internal(format!(
                "part {} is outside its staging directory {}",
                path.display(),
                staging.display()
            ))
        })
}

pub(super) fn summary_batch(
    totals: &ChunkCounts,
    parts: &[(usize, StagedPart)],
    sinks: &[SinkOnExecutor],
) -> DfResult<RecordBatch> {
    let mut sink = Vec::new();
    let mut temp = Vec::new();
    let mut path = Vec::new();
    let (mut rows, mut bytes, mut crc) = (Vec::new(), Vec::new(), Vec::new());
    for (s, p) in parts {
        let staging = &sinks[*s].staging;
        sink.push(Some(*s as u32));
        // An executor that put the part in an object store leaves no temp file: null.
        temp.push(if p.in_place {
            None
        } else {
            Some(relative(&p.temp, staging)?)
        });
        path.push(Some(relative(&p.part.path, staging)?));
        rows.push(p.part.rows);
        bytes.push(p.part.bytes);
        crc.push(p.part.crc32);
    }
    sink.push(None);
    temp.push(None);
    path.push(None);
    rows.push(totals.rows);
    bytes.push(0);
    crc.push(0);
    let n = rows.len();
    let mut anomalies = vec![0; n];
    let mut missing = vec![0; n];
    anomalies[n - 1] = totals.anomalies;
    missing[n - 1] = totals.missing;
    Ok(RecordBatch::try_new(
        summary_schema(),
        vec![
            Arc::new(UInt32Array::from(sink)),
            Arc::new(StringArray::from(temp)),
            Arc::new(StringArray::from(path)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(UInt32Array::from(crc)),
            Arc::new(UInt64Array::from(anomalies)),
            Arc::new(UInt64Array::from(missing)),
        ],
    )?)
}

/// What an executor wrote for one chunk, as the client reads it from [`PartWriteExec`]'s rows.
#[derive(Debug, Default)]
pub struct ChunkSummary {
    pub counts: ChunkCounts,
    /// (sink, part) with paths under the client's staging directories.
    pub parts: Vec<(usize, StagedPart)>,
}

impl ChunkSummary {
    /// Reads the summary rows; `stagings[s]` is sink `s`'s staging directory. Fails unless the
    /// totals row is there exactly once (a job that returned nothing did not write the chunk).
    pub fn from_batches(
        batches: &[RecordBatch],
        stagings: &[PathBuf],
    ) -> Result<ChunkSummary, String> {
        let mut out = ChunkSummary::default();
        let mut totals_rows = 0;
        for b in batches {
            let col = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| format!("the chunk summary has no column '{name}'"))
            };
            let not =
                |name: &str, kind: &str| format!("the chunk summary's '{name}' is not {kind}");
            let sink = col("sink")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| not("sink", "UInt32"))?;
            let temp = col("temp")?
                .as_string_opt::<i32>()
                .ok_or_else(|| not("temp", "Utf8"))?;
            let path = col("path")?
                .as_string_opt::<i32>()
                .ok_or_else(|| not("path", "Utf8"))?;
            let u64s = |name: &str| -> Result<&UInt64Array, String> {
                col(name)?
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| not(name, "UInt64"))
            };
            let (rows, bytes) = (u64s("rows")?, u64s("bytes")?);
            let (anomalies, missing) = (u64s("anomalies")?, u64s("missing")?);
            let crc = col("crc32")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| not("crc32", "UInt32"))?;
            for i in 0..b.num_rows() {
                if sink.is_null(i) {
                    totals_rows += 1;
                    out.counts.rows += rows.value(i);
                    out.counts.anomalies += anomalies.value(i);
                    out.counts.missing += missing.value(i);
                    continue;
                }
                let s = sink.value(i) as usize;
                let staging = stagings
                    .get(s)
                    .ok_or_else(|| format!("the chunk summary names sink {s}"))?;
                let part_path = within(staging, path.value(i))?;
                let in_place = temp.is_null(i);
                out.parts.push((
                    s,
                    StagedPart {
                        temp: if in_place {
                            part_path.clone()
                        } else {
                            within(staging, temp.value(i))?
                        },
                        in_place,
                        part: WrittenPart {
                            path: part_path,
                            rows: rows.value(i),
                            bytes: bytes.value(i),
                            crc32: crc.value(i),
                        },
                    },
                ));
            }
        }
        if totals_rows != 1 {
            return Err(format!(
                "the chunk's job returned {totals_rows} summaries instead of 1"
            ));
        }
        Ok(out)
    }
}

/// `staging/relative`, for a path a cluster returned: only plain names, so nothing a scheduler
/// or executor says can make this process rename or remove a file elsewhere (SECURITY.md).
fn within(staging: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    let plain = !relative.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(staging.join(rel))
    } else {
        Err(format!(
            "the cluster returned the part path '{relative}', which is absolute or leaves the \
             staging directory {}; refused",
            staging.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::within;
    use std::path::Path;

    #[test]
    fn part_paths_from_a_cluster_stay_in_the_staging_directory() {
        let staging = Path::new("/data/.out.nomaly-staging");
        assert_eq!(
            within(staging, "seg=a/part-00003.parquet").unwrap(),
            staging.join("seg=a/part-00003.parquet")
        );
        for rogue in [
            "/etc/passwd",
            "../x.parquet",
            "a/../../b",
            "",
            "./a",
            "a/./../b",
        ] {
            let e = within(staging, rogue).unwrap_err();
            assert!(e.contains("refused"), "{rogue}: {e}");
        }
    }
}
