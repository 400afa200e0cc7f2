//! Sinks: one part file per chunk, written under a staging directory and published at the end.
//!
//! A part is written to a hidden temp name, fsynced and renamed, so a part file that exists is
//! complete. The whole run writes into `.<name>.nomaly-staging/` beside the output directory; only a
//! run that finished (and passed its checks) renames it into place, so readers never see a
//! half-written output, and a previous output stays until the new one is complete.

use crate::error::{PipelineError, Result};
use crate::spec::{FileFormat, WriteMode};
use datafusion::physical_plan::PhysicalExpr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod chunk_summary;
mod part;
mod remote;
mod write_exec;

pub use chunk_summary::{ChunkCounter, ChunkCounts, ChunkSummary};
pub use part::{
    ChunkWriter, StagedPart, WrittenPart, remove_attempt_files, remove_attempt_files_in,
};
pub use remote::{MARKER, Marker, MarkerFile, RemoteOutput};
pub(crate) use remote::{list_under, mirror_files as files_under, open_prefix, put_file};
pub use write_exec::{PartWriteExec, SinkOnExecutor};

/// Name of the run report inside an output directory.
pub const REPORT_FILE: &str = "_nomaly_report.json";

/// A resolved sink.
#[derive(Debug, Clone)]
pub struct SinkTarget {
    /// For messages: "[[sink]] 1 (out/anomalies/)".
    pub label: String,
    /// The published directory (a remote output's local mirror).
    pub path: PathBuf,
    /// Where the published directory is uploaded, for an output in an object store.
    pub remote: Option<RemoteOutput>,
    pub format: FileFormat,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    /// The `where` predicate, compiled against the scored schema.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub filter_text: Option<String>,
}

/// A hidden directory beside `output`: `.<name>.nomaly-<role>` (staging, work, old).
pub fn sibling_dir(output: &Path, role: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.nomaly-{role}"))
}

/// Where a run writes an output before publishing it.
pub fn staging_dir(output: &Path) -> PathBuf {
    sibling_dir(output, "staging")
}

impl SinkTarget {
    /// The staging directory beside the output.
    pub fn staging(&self) -> PathBuf {
        staging_dir(&self.path)
    }

    /// Checks, before any work, that the output can be written under its mode.
    pub fn check_writable(&self) -> Result<()> {
        let out = |reason: String| PipelineError::Output {
            path: self.path.clone(),
            reason,
        };
        if matches!(self.format, FileFormat::Avro | FileFormat::Hdf5) {
            return Err(out(format!(
                "{} output is not supported; use format = \"parquet\", \"csv\", \"ndjson\" or \"arrow\"",
                if self.format == FileFormat::Avro {
                    "Avro"
                } else {
                    "HDF5"
                }
            )));
        }
        // A remote output's mirror is Nomaly's own; what the prefix holds is checked against the
        // mode before the run (`RemoteOutput::check_writable`).
        if self.path.exists() && self.remote.is_none() {
            if !self.path.is_dir() {
                return Err(out(
                    "exists and is a file; the output is a directory of part files — choose a directory path".into(),
                ));
            }
            let entries = list_dir(&self.path)?;
            if !entries.is_empty() {
                match self.mode {
                    WriteMode::ErrorIfExists => {
                        return Err(out(format!(
                            "already exists and holds {} entries, and mode = \"error_if_exists\"; remove it, choose another path, or set mode = \"overwrite\"",
                            entries.len()
                        )));
                    }
                    WriteMode::Overwrite => {
                        if !self.path.join(REPORT_FILE).exists() {
                            return Err(out(format!(
                                "already exists and holds files Nomaly did not write (no {REPORT_FILE}); overwrite only replaces earlier Nomaly outputs — choose an empty or new directory"
                            )));
                        }
                    }
                }
            }
        }
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The nearest existing ancestor must be writable: probe it with a real file.
        let existing = parent
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("."));
        if !existing.is_dir() {
            return Err(out(format!("{} is not a directory", existing.display())));
        }
        let probe = existing.join(format!(".nomaly-write-probe-{}", std::process::id()));
        match File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) => Err(out(format!(
                "cannot write into {}: {e}; choose a writable location",
                existing.display()
            ))),
        }
    }

    /// Creates an empty staging directory (removing leftovers of an earlier failed run).
    pub fn prepare_staging(&self) -> Result<PathBuf> {
        let staging = self.staging();
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|source| PipelineError::Io {
                path: staging.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&staging).map_err(|source| PipelineError::Io {
            path: staging.clone(),
            source,
        })?;
        Ok(staging)
    }

    /// Replaces the output with the staging directory.
    pub fn publish(&self) -> Result<()> {
        let staging = self.staging();
        // A Ballista task attempt that outlived its chunk's commit may have written since.
        part::remove_attempt_files(&staging, None);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PipelineError::Io { path, source }
        };
        let old = sibling_dir(&self.path, "old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if self.path.exists() {
            std::fs::rename(&self.path, &old).map_err(io(&self.path))?;
        }
        std::fs::rename(&staging, &self.path).map_err(io(&self.path))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        sync_dir(self.path.parent().unwrap_or(Path::new(".")));
        Ok(())
    }

    /// Removes the staging directory of a failed run.
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(self.staging());
    }
}

fn list_dir(path: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(path)
        .map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

pub(crate) fn sync_dir(path: &Path) {
    // Best effort: makes the renames durable on filesystems that support directory fsync.
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

/// Writes a small file atomically (temp, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::part::{PartFile, escape_path_value};
    use super::*;

    /// The same rows in differently sized batches (a local scan vs Ballista's shuffle reads) give
    /// byte-identical part files, in every format.
    #[test]
    fn part_bytes_do_not_depend_on_batch_sizes() {
        use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
        ]));
        let rows = 50_000;
        let all = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| ((i * 7919) % 10007) as f64 / 3.0),
                )),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for format in [FileFormat::Parquet, FileFormat::Arrow, FileFormat::Csv] {
            let mut files = Vec::new();
            for (k, sizes) in [vec![8192usize], vec![1000, 7000, 333], vec![50_000]]
                .iter()
                .enumerate()
            {
                let path = dir.path().join(format!("{k}.{}", format.extension()));
                let mut part = PartFile::create(path.clone(), format, &schema, None, None).unwrap();
                let (mut at, mut i) = (0, 0);
                while at < rows {
                    let n = sizes[i % sizes.len()].min(rows - at);
                    part.write(&all.slice(at, n)).unwrap();
                    at += n;
                    i += 1;
                }
                let written = part.finish().unwrap().publish().unwrap();
                assert_eq!(written.rows, rows as u64);
                files.push(std::fs::read(&path).unwrap());
            }
            assert!(files[0] == files[1] && files[1] == files[2], "{format:?}");
        }
    }

    /// A part an executor wrote where this process cannot see it, or not whole, is not published,
    /// and the error says why.
    #[test]
    fn a_staged_part_publishes_only_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let staged = |bytes: u64| StagedPart {
            temp: dir.path().join(".part-00000.a1.tmp"),
            in_place: false,
            part: WrittenPart {
                path: dir.path().join("part-00000.csv"),
                rows: 1,
                bytes,
                crc32: 0,
            },
        };
        let missing = staged(4).publish().unwrap_err().user_message();
        assert!(
            missing.contains("storage this process and every executor share"),
            "{missing}"
        );
        std::fs::write(dir.path().join(".part-00000.a1.tmp"), b"a\n1\n").unwrap();
        let short = staged(9).publish().unwrap_err().user_message();
        assert!(
            short.contains("holds 4 bytes, but 9 were written"),
            "{short}"
        );
        assert!(!dir.path().join("part-00000.csv").exists());
        let done = staged(4).publish().unwrap();
        assert_eq!(std::fs::read(&done.path).unwrap(), b"a\n1\n");
        assert!(!dir.path().join(".part-00000.a1.tmp").exists());
    }

    /// Attempt files of a chunk go, in partition directories too; parts and the run directory stay.
    #[test]
    fn attempt_files_are_removed_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("k=v")).unwrap();
        std::fs::create_dir_all(d.join("_nomaly")).unwrap();
        for f in [
            ".part-00003.a.tmp",
            ".part-00004.b.tmp",
            "k=v/.part-00003.c.tmp",
            "part-00003.csv",
            "_nomaly/.part-00003.d.tmp",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        assert_eq!(remove_attempt_files(d, Some(3)), 2);
        assert_eq!(remove_attempt_files(d, None), 1);
        assert!(d.join("part-00003.csv").exists());
        assert!(d.join("_nomaly/.part-00003.d.tmp").exists());
    }

    #[test]
    fn partition_values_are_escaped() {
        assert_eq!(escape_path_value("a/b"), "a%2Fb");
        assert_eq!(escape_path_value("ok-1.5"), "ok-1.5");
        assert_eq!(escape_path_value(".."), "%2E.");
    }
}
