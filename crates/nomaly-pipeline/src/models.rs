//! The model registry: fitted models kept between runs, by name and version.
//!
//! A pipeline with `[detect] model = "fraud"` and a `train` query fits on that query and, when the
//! run succeeds, registers the fit as the next version of `fraud`; one without `train` scores with
//! the latest (or `version = N`) instead of fitting. A registry is a directory
//! (`.nomaly-state/models/` beside the pipeline file): `<name>/v<N>/model.ipc` (the models table
//! as the run directory keeps it) and `model.json` ([`ModelVersion`]). A version is written to a
//! temp directory and renamed into place, so it is there whole or not at all, and never
//! rewritten.
//!
//! A version also keeps the distribution of its training scores (deciles), so each run that
//! scores with it reports drift: the population-stability index of its scores over those bins.

use crate::error::{PipelineError, Result};
use crate::run_dir::now_ms;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where registries live, under the pipeline's state directory.
pub const REGISTRY_DIR: &str = "models";
const MODEL_FILE: &str = "model.ipc";
const META_FILE: &str = "model.json";
/// Longest model name.
pub const MAX_NAME: usize = 64;

/// One registered version: what it is, what it was trained on, and its training scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    pub algorithm: String,
    /// The detector options (`contamination=0.05, seed=7`).
    pub options: String,
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Rows the fit read, and models it made (one per segment).
    pub training_rows: u64,
    pub models: usize,
    /// The training run's interval (`${run.start}` .. `${run.end}`).
    pub interval_start_ms: i64,
    pub interval_end_ms: i64,
    /// The run that made it: its pipeline, file, and start.
    pub pipeline: String,
    pub pipeline_file: String,
    pub run_started_at_unix_ms: u64,
    pub created_at_unix_ms: u64,
    /// Size of `model.ipc`.
    pub size_bytes: u64,
    /// Inner edges of the training scores' deciles (up to 9), and the share of training scores
    /// in each of the bins they make (drift compares a run's shares with these).
    pub score_edges: Vec<f64>,
    pub score_shares: Vec<f64>,
}

/// A registry directory.
#[derive(Debug, Clone)]
pub struct Registry {
    pub root: PathBuf,
}

/// A model name: letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a model name; use letters, digits, - and _ (at most {MAX_NAME})"
        ))
    }
}

impl Registry {
    pub fn at(root: &Path) -> Registry {
        Registry {
            root: root.to_path_buf(),
        }
    }

    /// The registry of pipelines in `dir` (`dir/.nomaly-state/models`).
    pub fn beside(dir: &Path) -> Registry {
        Registry::at(&dir.join(crate::incremental::STATE_DIR).join(REGISTRY_DIR))
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> PipelineError + '_ {
        move |source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Every version of `name`, oldest first (none: empty).
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let dir = self.root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(Self::io(&dir))?.path();
            let numbered = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix('v'))
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if numbered && path.join(META_FILE).is_file() {
                out.push(read_meta(&path.join(META_FILE))?);
            }
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    /// Every version of every model, by name then version.
    pub fn list(&self) -> Result<Vec<ModelVersion>> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            out.extend(self.versions(&n)?);
        }
        Ok(out)
    }

    /// A version (the latest without one) with its models table.
    pub fn get(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(ModelVersion, SchemaRef, Vec<RecordBatch>)> {
        let versions = self.versions(name)?;
        let found = match version {
            Some(v) => versions.iter().find(|m| m.version == v),
            None => versions.last(),
        };
        let Some(meta) = found else {
            let have: Vec<String> = versions.iter().map(|m| format!("v{}", m.version)).collect();
            return Err(PipelineError::invalid(
                self.root.join(name).display().to_string(),
                match (version, have.is_empty()) {
                    (_, true) => format!(
                        "no model '{name}' is registered here; a run with [detect] train = \
                         \"SELECT ...\" and model = \"{name}\" registers one"
                    ),
                    (Some(v), false) => {
                        format!(
                            "model '{name}' has no version {v}; it has {}",
                            have.join(", ")
                        )
                    }
                    (None, false) => unreachable!("a latest version exists"),
                },
            ));
        };
        let path = self.version_dir(name, meta.version).join(MODEL_FILE);
        let (schema, batches) = crate::run_dir::read_models_ipc(&path)?;
        Ok((meta.clone(), schema, batches))
    }

    fn version_dir(&self, name: &str, version: u32) -> PathBuf {
        self.root.join(name).join(format!("v{version}"))
    }

    /// Registers the next version of `meta.name` with the models table in `model_ipc` (bytes
    /// of an Arrow IPC file). Returns the version as registered.
    pub fn register(&self, mut meta: ModelVersion, model_ipc: &[u8]) -> Result<ModelVersion> {
        check_name(&meta.name).map_err(|e| PipelineError::invalid("[detect] model", e))?;
        let dir = self.root.join(&meta.name);
        std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        let tmp = dir.join(format!(".v-{}-{}.tmp", std::process::id(), now_ms()));
        let _ = std::fs::remove_dir_all(&tmp);
        crate::sink_writer::write_atomic(&tmp.join(MODEL_FILE), model_ipc)?;
        meta.size_bytes = model_ipc.len() as u64;
        meta.created_at_unix_ms = now_ms();
        // The next free number: a rename onto an existing version fails, and the next is tried.
        let mut version = self
            .versions(&meta.name)?
            .last()
            .map_or(1, |m| m.version + 1);
        loop {
            meta.version = version;
            let body = serde_json::to_vec_pretty(&meta).expect("a model version is JSON");
            crate::sink_writer::write_atomic(&tmp.join(META_FILE), &body)?;
            let target = self.version_dir(&meta.name, version);
            if !target.exists() && std::fs::rename(&tmp, &target).is_ok() {
                return Ok(meta);
            }
            version += 1;
            if version > 1_000_000 {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(PipelineError::Output {
                    path: dir,
                    reason: "cannot number a new model version".into(),
                });
            }
        }
    }

    /// Removes one version, or every version of `name`; returns how many.
    pub fn remove(&self, name: &str, version: Option<u32>) -> Result<usize> {
        check_name(name).map_err(|e| PipelineError::invalid("model", e))?;
        let doomed: Vec<u32> = self
            .versions(name)?
            .iter()
            .map(|m| m.version)
            .filter(|v| version.is_none_or(|w| w == *v))
            .collect();
        for v in &doomed {
            let dir = self.version_dir(name, *v);
            std::fs::remove_dir_all(&dir).map_err(Self::io(&dir))?;
        }
        if version.is_none() {
            let _ = std::fs::remove_dir(self.root.join(name));
        }
        Ok(doomed.len())
    }
}

fn read_meta(path: &Path) -> Result<ModelVersion> {
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::Output {
        path: path.to_path_buf(),
        reason: format!("not a model version ({e}); remove the version with `nomaly models rm`"),
    })
}

/// The population-stability index of `actual` shares against `expected` ones (same bins):
/// Σ (a − e)·ln(a / e), each share floored at 1e-4 so an empty bin counts, not divides by zero.
/// Below 0.1 is usually read as stable, above 0.25 as a shift.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(1e-4), a.max(1e-4));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The bin of `score` among `edges` (inner edges, ascending): 0 ..= edges.len().
pub fn bin_of(edges: &[f64], score: f64) -> usize {
    edges.partition_point(|&e| e <= score)
}

#[cfg(test)]
#[path = "models_tests.rs"]
mod tests;
