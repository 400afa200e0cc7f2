//! Incremental sources: a run reads only the files of its first source that no earlier run of
//! the pipeline read *and published*, so each file is scored once, whatever crashes.
//!
//! The ledger (`.nomaly-state/<pipeline>/consumed.json` beside the pipeline file) holds the
//! files consumed so far and at most one *pending* run: the files a run took, its run id and its
//! output. It is written (atomically, fsynced) before the run reads anything, and settled when
//! the next run starts (or right after a publish):
//! - the pending run's output was published with its run id → its files are consumed;
//! - its output holds it unfinished → the files stay pending, for `resume` to continue with
//!   exactly those files (a plain run is refused until it is resumed or discarded with
//!   `--restart`);
//! - neither (it failed before committing anything, or was discarded) → its files are free again.
//!
//! A crash between the publish and the settle is settled by the next run, from the published
//! run directory; so a file is never lost (it stays free until a publish holds it) nor read twice
//! (a published run's files are consumed before any other run lists). One run at a time holds the
//! ledger (a lock beside it). A file is known by its path in its store: a consumed file that is
//! rewritten in place is not read again; new data belongs in new files.

use crate::chunk_plan::SourceReader;
use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result};
use crate::output_lock::{Holder, OutputLocks};
use crate::run::RunMode;
use crate::run_dir::{RunDir, now_ms};
use crate::sink_writer::{staging_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory, beside the pipeline file, that holds pipelines' ledgers.
pub const STATE_DIR: &str = ".nomaly-state";
const LEDGER_FILE: &str = "consumed.json";
const FORMAT_VERSION: u32 = 1;

/// The files a run took, and the run id its run directory records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenFiles {
    pub run_id: String,
    pub files: BTreeSet<String>,
}

/// `consumed.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub format_version: u32,
    /// Files read by runs that published: path in the store → what consumed it.
    pub consumed: BTreeMap<String, ConsumedFile>,
    /// The files a run took, until it is known whether it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumedFile {
    pub size: u64,
    pub run_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub run_id: String,
    /// The first sink's output directory.
    pub output: PathBuf,
    /// Path → size.
    pub files: BTreeMap<String, u64>,
    pub taken_at_unix_ms: u64,
}

/// What settling found of the pending run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Nothing,
    Published,
    Unfinished,
    Dropped,
}

/// A pipeline's ledger file.
pub fn ledger_path(p: &CompiledPipeline) -> PathBuf {
    let name: String = p
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    p.file
        .base_dir()
        .join(STATE_DIR)
        .join(name)
        .join(LEDGER_FILE)
}

impl Ledger {
    /// Reads a ledger; a missing one is empty (nothing consumed yet).
    pub fn load(path: &Path) -> Result<Ledger> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
            Err(source) => {
                return Err(PipelineError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let ledger: Ledger = serde_json::from_slice(&bytes).map_err(|e| PipelineError::Output {
            path: path.to_path_buf(),
            reason: format!(
                "not a ledger of consumed files ({e}); restore it, or delete it to read every \
                 file again"
            ),
        })?;
        if ledger.format_version != FORMAT_VERSION {
            return Err(PipelineError::Output {
                path: path.to_path_buf(),
                reason: format!(
                    "written by another Nomaly version (ledger format {}, this one reads \
                     {FORMAT_VERSION})",
                    ledger.format_version
                ),
            });
        }
        Ok(ledger)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let ledger = Ledger {
            format_version: FORMAT_VERSION,
            ..self.clone()
        };
        write_atomic(
            path,
            &serde_json::to_vec_pretty(&ledger).expect("a ledger is JSON"),
        )
    }

    /// Settles the pending run from what its output holds (see the module).
    pub fn settle(&mut self) -> Settled {
        let Some(pending) = self.pending.take() else {
            return Settled::Nothing;
        };
        let run_id = |dir: &Path| RunDir::at(dir).read_record().ok().and_then(|r| r.run_id);
        let published = RunDir::at(&pending.output)
            .read_manifest()
            .is_ok_and(|m| m.complete)
            && run_id(&pending.output).as_deref() == Some(pending.run_id.as_str());
        if published {
            for (path, size) in &pending.files {
                let file = ConsumedFile {
                    size: *size,
                    run_id: pending.run_id.clone(),
                };
                self.consumed.insert(path.clone(), file);
            }
            return Settled::Published;
        }
        let staged = staging_dir(&pending.output);
        if run_id(&staged).as_deref() == Some(pending.run_id.as_str()) {
            self.pending = Some(pending);
            return Settled::Unfinished;
        }
        Settled::Dropped
    }
}

/// What a run starts with: its pipeline with the files it may read, the ledger held.
pub struct Take {
    pub pipeline: Arc<CompiledPipeline>,
    /// Files it took, and files earlier runs had consumed.
    pub new_files: u64,
    pub consumed_before: u64,
    pub ledger: PathBuf,
    /// Held until the run ends (dry runs hold nothing).
    _lock: Option<OutputLocks>,
}

/// A fresh run id: milliseconds and 64 random bits.
fn new_run_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}-{random:016x}", now_ms())
}

/// Takes the files a run of `p` reads, when its first source is incremental (else `None`):
/// settles and updates the ledger under its lock. A dry run only looks.
pub async fn take(
    p: &CompiledPipeline,
    mode: &RunMode,
    dry_run: bool,
    holder: &Holder,
) -> Result<Option<Take>> {
    let Some(source) = p.sources.first().filter(|s| s.incremental) else {
        return Ok(None);
    };
    let path = ledger_path(p);
    let lock = if dry_run {
        None
    } else {
        let dir = path.parent().expect("a ledger has a directory");
        Some(OutputLocks::acquire(&[dir], holder)?)
    };
    let mut ledger = Ledger::load(&path)?;
    let settled = ledger.settle();
    let output = &p.sinks[0].path;
    let taken = match (&ledger.pending, mode) {
        (Some(pending), RunMode::Resume { .. }) if pending.output == *output => {
            Some((pending.run_id.clone(), pending.files.clone()))
        }
        (Some(pending), RunMode::Restart) => {
            tracing::warn!(run = %pending.run_id, "--restart: the unfinished incremental run's files are free again");
            ledger.pending = None;
            None
        }
        (Some(pending), _) => {
            return Err(PipelineError::invalid(
                p.file.path.display().to_string(),
                format!(
                    "an unfinished run of this incremental pipeline took {} file(s) and wrote \
                     {}; continue it with `nomaly resume {}`, or discard it with `nomaly run \
                     --restart` (its files are then read again)",
                    pending.files.len(),
                    pending.output.display(),
                    pending.output.display()
                ),
            ));
        }
        (None, _) => None,
    };
    let (run_id, files) = match taken {
        Some(t) => t,
        None => {
            let new: BTreeMap<String, u64> = list(p, source)
                .await?
                .into_iter()
                .map(|m| (m.location.to_string(), m.size))
                .filter(|(f, _)| !ledger.consumed.contains_key(f))
                .collect();
            (new_run_id(), new)
        }
    };
    if !dry_run && !files.is_empty() {
        ledger.pending = Some(Pending {
            run_id: run_id.clone(),
            output: output.clone(),
            files: files.clone(),
            taken_at_unix_ms: now_ms(),
        });
    }
    if !dry_run && (settled != Settled::Nothing || ledger.pending.is_some()) {
        ledger.save(&path)?;
    }
    let mut pipeline = p.clone();
    pipeline.sources[0].only = Some(Arc::new(TakenFiles {
        run_id,
        files: files.keys().cloned().collect(),
    }));
    Ok(Some(Take {
        pipeline: Arc::new(pipeline),
        new_files: files.len() as u64,
        consumed_before: ledger.consumed.len() as u64,
        ledger: path,
        _lock: lock,
    }))
}

/// Marks a published run's files consumed at once (the next run would, too).
pub fn settle_after_publish(take: &Take) -> Result<()> {
    let mut ledger = Ledger::load(&take.ledger)?;
    if ledger.settle() != Settled::Nothing {
        ledger.save(&take.ledger)?;
    }
    Ok(())
}

/// Every file of the source now, as its store describes it (the run's own set left aside).
async fn list(
    p: &CompiledPipeline,
    source: &SourceReader,
) -> Result<Vec<datafusion::object_store::ObjectMeta>> {
    let ctx = datafusion::prelude::SessionContext::new();
    crate::run::register_stores(&ctx, p)?;
    let all = SourceReader {
        only: None,
        ..source.clone()
    };
    all.list_objects(&ctx).await
}

/// The files of an incremental pipeline's first source that no run has consumed or taken
/// (for a file-arrival trigger), with the newest modification time among them (ms).
pub async fn unread_files(p: &CompiledPipeline) -> Result<(Vec<String>, Option<i64>)> {
    let Some(source) = p.sources.first().filter(|s| s.incremental) else {
        return Ok((Vec::new(), None));
    };
    let ledger = Ledger::load(&ledger_path(p))?;
    let pending: BTreeSet<&String> = ledger.pending.iter().flat_map(|p| p.files.keys()).collect();
    let mut newest = None;
    let mut files = Vec::new();
    for meta in list(p, source).await? {
        let path = meta.location.to_string();
        if ledger.consumed.contains_key(&path) || pending.contains(&path) {
            continue;
        }
        let modified = meta.last_modified.timestamp_millis();
        newest = Some(newest.map_or(modified, |n: i64| n.max(modified)));
        files.push(path);
    }
    Ok((files, newest))
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
