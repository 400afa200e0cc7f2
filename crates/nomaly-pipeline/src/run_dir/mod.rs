//! The run directory: what a killed run needs to resume and to prove nothing was lost.
//!
//! It lives at `_nomaly/` inside the first sink's staging directory while the run lasts, so it is
//! published with the output as `<output>/_nomaly/` (DataFusion's listing tables skip
//! subdirectories, so readers of the output never see it). It holds:
//!
//! - `pipeline.toml`: the pipeline as written, before `${VAR}` substitution (no value from the
//!   environment is written here); `run.json` holds the `--set` overrides, the run's interval
//!   and parameters, and a digest of the pipeline as run, so a resume still notices a changed
//!   value;
//! - `run.json`: the input fingerprint (files, sizes, modification times, schemas), the chunk list
//!   and the fit's counts — written once, atomically, after the fit; its presence makes the
//!   directory a resumable run;
//! - `models.ipc`: the fitted model(s) as an Arrow IPC file, so a resume does not refit;
//! - `manifest.jsonl`: append-only, one JSON line per event: `start` (a chunk began), `commit` (a
//!   chunk's part files are renamed into place; with rows, anomalies and each file's size and
//!   CRC-32), `resume`, `complete`. Commit lines are fsynced before the chunk counts as done.
//!
//! A crash can tear only the last manifest line (it is then ignored); every other file is written
//! to a temp name, fsynced and renamed, so at any instant the directory is consistent.

use crate::chunk_plan::Chunk;
use crate::error::{PipelineError, Result};
use crate::sink_writer::write_atomic;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader as IpcFileReader;
use datafusion::arrow::ipc::writer::FileWriter as IpcFileWriter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

mod fingerprint;

pub use fingerprint::{
    FileFingerprint, SourceFingerprint, fingerprint, fingerprint_change, pipeline_change,
    recorded_pipeline_change, spec_digest,
};

/// Name of the run directory inside an output (or its staging directory).
pub const RUN_DIR: &str = "_nomaly";
pub(crate) const RUN_FILE: &str = "run.json";
pub const MANIFEST_FILE: &str = "manifest.jsonl";
const MODELS_FILE: &str = "models.ipc";
const PIPELINE_FILE: &str = "pipeline.toml";
/// Bumped when the layout changes; an older run directory is refused, not misread. 2: the models
/// table has the plan builder's column names (`__nomaly_key_0_<i>`, `__nomaly_model_0`).
pub const FORMAT_VERSION: u32 = 2;

/// A models table as the bytes of an Arrow IPC file, in one batch (an IPC file allows one
/// dictionary per field, and segment keys may be dictionaries).
pub fn models_ipc(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
    let one = datafusion::arrow::compute::concat_batches(schema, batches)?;
    let mut buf = Vec::new();
    let mut w = IpcFileWriter::try_new(&mut buf, schema)?;
    w.write(&one)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// Reads a models table written by [`models_ipc`].
pub fn read_models_ipc(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let damaged = |e: String| PipelineError::Output {
        path: path.to_path_buf(),
        reason: format!("not a models table ({e}); the file is damaged"),
    };
    let file = File::open(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = IpcFileReader::try_new(file, None).map_err(|e| damaged(e.to_string()))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| damaged(e.to_string()))?;
    Ok((schema, batches))
}

/// Milliseconds since the epoch (u64: serde's tagged enums cannot hold u128).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A chunk as recorded in `run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub id: usize,
    pub range: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl ChunkEntry {
    pub fn of(c: &Chunk) -> Self {
        ChunkEntry {
            id: c.id,
            range: c.describe(),
            rows: c.rows,
        }
    }
}

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format_version: u32,
    pub pipeline: String,
    pub pipeline_file: String,
    pub started_at_unix_ms: u64,
    pub sources: Vec<SourceFingerprint>,
    pub chunking: crate::report::ChunkingMode,
    pub chunks: Vec<ChunkEntry>,
    /// The fit's counts (the model is in `models.ipc`).
    pub input_rows: u64,
    pub rows_with_missing_features: u64,
    pub models: usize,
    /// Bad lines set aside while materializing the detect input (not per chunk then).
    #[serde(default)]
    pub quarantined_rows: u64,
    /// SHA-256 of the pipeline as run ([`fingerprint::spec_digest`]). Absent in run
    /// directories written before `pipeline.toml` held the text as written (it then holds the
    /// substituted text).
    #[serde(default)]
    pub pipeline_digest: Option<String>,
    /// The `--set` overrides of the run.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The run's interval and parameters (absent in run directories written before runs had
    /// them: those expand `${run.…}` as a run asked for now would).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::run_context::RunContext>,
    /// The id an incremental run took its files under (its ledger entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where the model came from (a `train` query, the registry), for the resumed report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::report::ModelReport>,
}

/// One written part file, relative to its sink's staging directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub sink: usize,
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// A committed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEntry {
    pub chunk: usize,
    pub range: String,
    pub rows: u64,
    pub anomalies: u64,
    pub missing: u64,
    pub retries: u32,
    pub seconds: f64,
    pub committed_at_unix_ms: u64,
    pub parts: Vec<PartEntry>,
    /// Lines set aside under `on_bad_rows = "quarantine"` (in `quarantine/part-<chunk>.ndjson`).
    #[serde(default)]
    pub quarantined: u64,
    /// Lines the chunk held, when read line by line (quarantine): = rows + quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_lines: Option<u64>,
}

/// A manifest line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ManifestEvent {
    Start {
        chunk: usize,
        at_unix_ms: u64,
    },
    Commit(CommitEntry),
    Resume {
        at_unix_ms: u64,
        committed: usize,
        redone: Vec<usize>,
    },
    Complete {
        at_unix_ms: u64,
    },
    /// The run stopped before completing: cancelled, timed out or failed. `resume` continues it.
    Stopped {
        at_unix_ms: u64,
        /// "cancelled", "timed_out" or "failed" (a [`crate::RunStatus`] name).
        status: String,
        error: String,
    },
}

/// What a manifest says, read back.
#[derive(Debug, Clone, Default)]
pub struct ManifestState {
    pub commits: BTreeMap<usize, CommitEntry>,
    /// Chunks that started but did not commit: in flight when the run stopped.
    pub in_flight: BTreeSet<usize>,
    pub resumes: usize,
    pub complete: bool,
    /// How the last attempt stopped ("cancelled", "timed_out", "failed"), unless resumed since.
    pub stopped: Option<String>,
    /// Lines read; a torn last line is not counted.
    pub lines: usize,
}

/// The run directory of one run.
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    manifest: Mutex<Manifest>,
}

/// The manifest file while a run appends to it.
#[derive(Debug, Default)]
enum Manifest {
    #[default]
    Closed,
    Open(File),
    /// An append failed and the torn line could not be cut off: no line may follow it.
    Torn(String),
}

impl RunDir {
    /// The run directory inside a (staging or published) output directory.
    pub fn at(output_dir: &Path) -> RunDir {
        RunDir {
            path: output_dir.join(RUN_DIR),
            manifest: Mutex::new(Manifest::Closed),
        }
    }

    /// True when a run was recorded here (`run.json` exists).
    pub fn exists(&self) -> bool {
        self.path.join(RUN_FILE).is_file()
    }

    fn io(&self, file: &str) -> impl Fn(std::io::Error) -> PipelineError {
        let path = self.path.join(file);
        move |source| PipelineError::Io {
            path: path.clone(),
            source,
        }
    }

    fn corrupt(&self, file: &str, what: String) -> PipelineError {
        PipelineError::Output {
            path: self.path.join(file),
            reason: format!(
                "{what}; the run directory is damaged — start over with `nomaly run --restart`"
            ),
        }
    }

    /// Records a new run: the pipeline text, the models, then `run.json` (last, so its presence
    /// means the rest is there), and an empty manifest.
    pub fn create(
        &self,
        record: &RunRecord,
        pipeline_text: &str,
        models: &[RecordBatch],
        models_schema: &SchemaRef,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(self.io(""))?;
        write_atomic(&self.path.join(PIPELINE_FILE), pipeline_text.as_bytes())?;
        let buf = models_ipc(models_schema, models).map_err(|e| PipelineError::Output {
            path: self.path.join(MODELS_FILE),
            reason: format!("cannot save the fitted models: {e}"),
        })?;
        write_atomic(&self.path.join(MODELS_FILE), &buf)?;
        write_atomic(&self.path.join(MANIFEST_FILE), b"")?;
        let body = serde_json::to_vec_pretty(record).expect("a run record is JSON");
        write_atomic(&self.path.join(RUN_FILE), &body)
    }

    pub fn read_record(&self) -> Result<RunRecord> {
        let text = std::fs::read(self.path.join(RUN_FILE)).map_err(self.io(RUN_FILE))?;
        let record: RunRecord = serde_json::from_slice(&text)
            .map_err(|e| self.corrupt(RUN_FILE, format!("not a run record: {e}")))?;
        if record.format_version != FORMAT_VERSION {
            return Err(self.corrupt(
                RUN_FILE,
                format!(
                    "written by another Nomaly version (run directory format {}, this one reads {FORMAT_VERSION})",
                    record.format_version
                ),
            ));
        }
        Ok(record)
    }

    pub fn read_pipeline_text(&self) -> Result<String> {
        std::fs::read_to_string(self.path.join(PIPELINE_FILE)).map_err(self.io(PIPELINE_FILE))
    }

    pub fn read_models(&self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        read_models_ipc(&self.path.join(MODELS_FILE))
    }

    /// The bytes of `models.ipc`.
    pub fn read_models_bytes(&self) -> Result<Vec<u8>> {
        std::fs::read(self.path.join(MODELS_FILE)).map_err(self.io(MODELS_FILE))
    }

    /// Reads the manifest. A torn last line (a crash during an append) is cut off; a bad line
    /// before the last is damage and an error.
    pub fn read_manifest(&self) -> Result<ManifestState> {
        let path = self.path.join(MANIFEST_FILE);
        let file = File::open(&path).map_err(self.io(MANIFEST_FILE))?;
        let mut state = ManifestState::default();
        let mut good_bytes = 0u64;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(self.io(MANIFEST_FILE))?;
            if n == 0 {
                break;
            }
            let complete_line = line.ends_with('\n');
            let event: Option<ManifestEvent> = serde_json::from_str(line.trim_end()).ok();
            match (event, complete_line) {
                (Some(event), true) => {
                    good_bytes += n as u64;
                    state.lines += 1;
                    match event {
                        ManifestEvent::Start { chunk, .. } => {
                            if !state.commits.contains_key(&chunk) {
                                state.in_flight.insert(chunk);
                            }
                        }
                        ManifestEvent::Commit(c) => {
                            state.in_flight.remove(&c.chunk);
                            state.commits.insert(c.chunk, c);
                        }
                        ManifestEvent::Stopped { status, .. } => state.stopped = Some(status),
                        ManifestEvent::Resume { .. } => {
                            state.resumes += 1;
                            state.stopped = None;
                            // Whatever was in flight before this resume was redone or is again.
                            state.in_flight.clear();
                        }
                        ManifestEvent::Complete { .. } => state.complete = true,
                    }
                }
                _ => {
                    // Only the last line may be torn; anything after it is damage.
                    let mut rest = String::new();
                    reader
                        .read_to_string(&mut rest)
                        .map_err(self.io(MANIFEST_FILE))?;
                    if !rest.trim().is_empty() {
                        return Err(self.corrupt(
                            MANIFEST_FILE,
                            format!("line {} is not a manifest event", state.lines + 1),
                        ));
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(self.io(MANIFEST_FILE))?;
                    f.set_len(good_bytes).map_err(self.io(MANIFEST_FILE))?;
                    f.sync_all().map_err(self.io(MANIFEST_FILE))?;
                    break;
                }
            }
        }
        Ok(state)
    }

    /// Appends one event; `durable` events (commits, completion) are fsynced before returning.
    pub fn append(&self, event: &ManifestEvent, durable: bool) -> Result<()> {
        self.append_then(event, durable, || {})
    }

    /// Appends one event, then calls `after` before another append can start: whatever `after`
    /// sends (a run's `ChunkCommitted` event) goes out in the manifest's order.
    pub fn append_then(
        &self,
        event: &ManifestEvent,
        durable: bool,
        after: impl FnOnce(),
    ) -> Result<()> {
        let mut line = serde_json::to_string(event).expect("an event is JSON");
        line.push('\n');
        let mut guard = self.manifest.lock().expect("not poisoned");
        if let Manifest::Torn(why) = &*guard {
            return Err(PipelineError::Io {
                path: self.path.join(MANIFEST_FILE),
                source: std::io::Error::other(format!(
                    "an earlier append failed and its torn line could not be cut off ({why}); \
                     the run stops here, and a resume reads the manifest up to its last whole line"
                )),
            });
        }
        if matches!(*guard, Manifest::Closed) {
            *guard = Manifest::Open(
                OpenOptions::new()
                    .append(true)
                    .open(self.path.join(MANIFEST_FILE))
                    .map_err(self.io(MANIFEST_FILE))?,
            );
        }
        let Manifest::Open(f) = &mut *guard else {
            unreachable!("opened above");
        };
        // One write call per line: an append either lands whole or tears only this last line,
        // which a failed append cuts off again so the manifest stays whole lines.
        let before = f.metadata().map_err(self.io(MANIFEST_FILE))?.len();
        let written = f.write_all(line.as_bytes()).and_then(|()| match durable {
            true => f.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            if let Err(cut) = f.set_len(before).and_then(|()| f.sync_data()) {
                *guard = Manifest::Torn(cut.to_string());
            }
            return Err(self.io(MANIFEST_FILE)(e));
        }
        after();
        Ok(())
    }
}

/// Where quarantined lines go: `quarantine/` in the run directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Writes a chunk's bad lines as NDJSON (atomically); returns how many.
pub fn write_quarantine(
    run_dir: &Path,
    chunk: usize,
    rows: &[crate::quarantine::BadRow],
) -> Result<u64> {
    let mut body = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut body, r).expect("a bad row is JSON");
        body.push(b'\n');
    }
    let path = run_dir
        .join(QUARANTINE_DIR)
        .join(format!("part-{chunk:05}.ndjson"));
    if rows.is_empty() {
        // No file for a clean chunk, and none left from an earlier attempt.
        let _ = std::fs::remove_file(&path);
        return Ok(0);
    }
    write_atomic(&path, &body)?;
    Ok(rows.len() as u64)
}

/// CRC-32 and length of a file, read back from disk.
pub fn file_crc32(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

/// Why a committed chunk's files no longer match the manifest.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommitMismatch(String);

/// Checks a committed chunk's files against the manifest: each exists with its size and CRC-32.
/// `remote[s]` lists sink `s`'s staging prefix (name → bytes) when executors put its parts in an
/// object store: a part missing here is checked there, by size (its bytes were counted as put).
pub fn verify_commit(
    commit: &CommitEntry,
    staging: &[PathBuf],
    remote: &[Option<BTreeMap<String, u64>>],
) -> std::result::Result<(), CommitMismatch> {
    for p in &commit.parts {
        let Some(dir) = staging.get(p.sink) else {
            return Err(CommitMismatch(format!(
                "names sink {} which the pipeline no longer has",
                p.sink
            )));
        };
        let path = dir.join(&p.path);
        let put = remote.get(p.sink).and_then(|r| r.as_ref()?.get(&p.path));
        if let (false, Some(&bytes)) = (path.exists(), put) {
            if bytes != p.bytes {
                return Err(CommitMismatch(format!(
                    "{} in the staging prefix is {bytes} bytes, the manifest says {}",
                    p.path, p.bytes
                )));
            }
            continue;
        }
        match file_crc32(&path) {
            Ok((len, crc)) if len == p.bytes && crc == p.crc32 => {}
            Ok((len, crc)) => {
                return Err(CommitMismatch(format!(
                    "{} is {len} bytes with CRC-32 {crc:08x}, the manifest says {} bytes, {:08x}",
                    path.display(),
                    p.bytes,
                    p.crc32
                )));
            }
            Err(e) => return Err(CommitMismatch(format!("{}: {e}", path.display()))),
        }
    }
    Ok(())
}

/// Removes what a killed run left that the manifest does not vouch for: temp files and part files
/// of chunks not committed. Returns how many files were removed.
pub fn remove_orphans(staging: &Path, keep: &BTreeSet<PathBuf>) -> Result<usize> {
    let mut removed = 0;
    let mut stack = vec![staging.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PipelineError::Io { path: dir, source }),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if name != RUN_DIR {
                    stack.push(path);
                }
                continue;
            }
            let is_temp = name.starts_with('.') && name.ends_with(".tmp");
            let is_part = name.starts_with("part-");
            if is_temp || (is_part && !keep.contains(&path)) {
                std::fs::remove_file(&path).map_err(|source| PipelineError::Io {
                    path: path.clone(),
                    source,
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(chunk: usize) -> ManifestEvent {
        ManifestEvent::Commit(CommitEntry {
            chunk,
            range: format!("/f bytes {chunk}..{}", chunk + 1),
            rows: 10,
            anomalies: 1,
            missing: 0,
            retries: 0,
            seconds: 0.1,
            committed_at_unix_ms: 3,
            parts: vec![],
            quarantined: 0,
            source_lines: None,
        })
    }

    #[test]
    fn a_torn_last_line_is_cut_and_earlier_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        std::fs::create_dir_all(&run.path).unwrap();
        std::fs::write(run.path.join(MANIFEST_FILE), b"").unwrap();
        run.append(
            &ManifestEvent::Start {
                chunk: 0,
                at_unix_ms: 1,
            },
            false,
        )
        .unwrap();
        run.append(&commit(0), true).unwrap();
        run.append(
            &ManifestEvent::Start {
                chunk: 1,
                at_unix_ms: 2,
            },
            false,
        )
        .unwrap();
        let whole = std::fs::read(run.path.join(MANIFEST_FILE)).unwrap();
        // A crash in the middle of appending chunk 1's commit.
        let torn = serde_json::to_string(&commit(1)).unwrap();
        let mut damaged = whole.clone();
        damaged.extend_from_slice(&torn.as_bytes()[..torn.len() / 2]);
        std::fs::write(run.path.join(MANIFEST_FILE), &damaged).unwrap();
        let state = RunDir::at(dir.path()).read_manifest().unwrap();
        assert_eq!(state.commits.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(state.in_flight.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(std::fs::read(run.path.join(MANIFEST_FILE)).unwrap(), whole);

        let mut middle = b"{not json}\n".to_vec();
        middle.extend_from_slice(&whole);
        std::fs::write(run.path.join(MANIFEST_FILE), &middle).unwrap();
        let err = RunDir::at(dir.path()).read_manifest().unwrap_err();
        assert!(
            err.to_string().contains("line 1 is not a manifest event"),
            "{err}"
        );
    }

    #[test]
    fn changes_are_named() {
        let f = |size, m| FileFingerprint {
            path: "d/a.parquet".into(),
            size,
            modified_unix_ms: m,
            e_tag: None,
        };
        let src = |files| SourceFingerprint {
            name: "tx".into(),
            location: "/d/".into(),
            schema: "id: Int64".into(),
            files,
        };
        assert_eq!(
            fingerprint_change(&[src(vec![f(1, 1)])], &[src(vec![f(1, 1)])]),
            None
        );
        assert_eq!(
            fingerprint_change(&[src(vec![f(1, 1)])], &[src(vec![f(2, 1)])]).unwrap(),
            "input file /d/a.parquet changed size: 2 bytes, was 1"
        );
        assert!(
            fingerprint_change(&[src(vec![f(1, 1)])], &[src(vec![f(1, 5)])])
                .unwrap()
                .contains("was modified")
        );
        let spec = |t: &str| toml::from_str::<crate::spec::PipelineSpec>(t).unwrap();
        let base = "input = \"a.csv\"\noutput = \"out/\"\n[run]\nchunk_rows = 5000\n";
        // Memory and retries may change between a run and its resume; chunking may not.
        let patient =
            format!("{base}[retry]\nmax_retries = 9\n[resources]\nmemory_limit = \"1GB\"\n");
        assert_eq!(pipeline_change(base, &spec(&patient)), None);
        assert_eq!(
            pipeline_change(base, &spec(&base.replace("5000", "6000"))).unwrap(),
            "`run` is now {\"chunk_rows\":6000}, was {\"chunk_rows\":5000}"
        );
    }

    #[test]
    fn a_failed_append_leaves_no_line_after_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        std::fs::create_dir_all(&run.path).unwrap();
        // Every write to /dev/full fails (ENOSPC) and it cannot be truncated: the torn case.
        std::os::unix::fs::symlink("/dev/full", run.path.join(MANIFEST_FILE)).unwrap();
        let event = ManifestEvent::Start {
            chunk: 0,
            at_unix_ms: 1,
        };
        let first = run.append(&event, true).unwrap_err().to_string();
        assert!(first.contains("manifest"), "{first}");
        let second = run.append(&event, true).unwrap_err().to_string();
        assert!(
            second.contains("torn line could not be cut off"),
            "{second}"
        );
    }
}
