//! The model registries a server's runs write (`nomaly_pipeline::models`), read through the
//! API: the registry beside every allowed root and beside every registered pipeline's file.

use crate::error::{Result, ServerError};
use crate::server::Server;
use nomaly_pipeline::models::{ModelVersion, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use utoipa::ToSchema;

/// One registered model version (`GET /api/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    pub version: u32,
    pub algorithm: String,
    pub options: String,
    pub columns: Vec<String>,
    pub partition_by: Vec<String>,
    pub training_rows: u64,
    pub models: u64,
    /// The training run's interval.
    pub interval_start_ms: i64,
    pub interval_end_ms: i64,
    pub pipeline: String,
    pub created_at_unix_ms: u64,
    pub size_bytes: u64,
    /// The deciles of its training scores, and the share of them in each bin.
    pub score_edges: Vec<f64>,
    pub score_shares: Vec<f64>,
    /// The registry directory it is in.
    pub registry: String,
}

/// `GET /api/models`, `GET /api/models/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// By registry, name, then version.
    pub models: Vec<ModelView>,
}

impl ModelView {
    fn of(m: ModelVersion, registry: &Registry) -> ModelView {
        ModelView {
            name: m.name,
            version: m.version,
            algorithm: m.algorithm,
            options: m.options,
            columns: m.columns,
            partition_by: m.partition_by,
            training_rows: m.training_rows,
            models: m.models as u64,
            interval_start_ms: m.interval_start_ms,
            interval_end_ms: m.interval_end_ms,
            pipeline: m.pipeline,
            created_at_unix_ms: m.created_at_unix_ms,
            size_bytes: m.size_bytes,
            score_edges: m.score_edges,
            score_shares: m.score_shares,
            registry: registry.root.display().to_string(),
        }
    }
}

impl Server {
    /// The registries runs of this server write: beside each root and each registered file.
    fn registries(&self) -> Result<Vec<Registry>> {
        let mut dirs: BTreeSet<PathBuf> = self.inner.config.roots.roots().iter().cloned().collect();
        for p in self.inner.store.pipelines()? {
            if let Some(dir) = PathBuf::from(&p.file).parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        Ok(dirs
            .iter()
            .map(|d| Registry::beside(d))
            .filter(|r| r.root.is_dir())
            .collect())
    }

    /// Every version of every model (of `name` only, when given).
    pub fn models(&self, name: Option<&str>) -> Result<ModelList> {
        if let Some(n) = name {
            nomaly_pipeline::models::check_name(n).map_err(ServerError::BadRequest)?;
        }
        let mut models = Vec::new();
        for r in self.registries()? {
            let versions = match name {
                Some(n) => r.versions(n),
                None => r.list(),
            }
            .map_err(|e| ServerError::BadRequest(e.user_message()))?;
            models.extend(versions.into_iter().map(|m| ModelView::of(m, &r)));
        }
        if let (Some(n), true) = (name, models.is_empty()) {
            return Err(ServerError::NotFound(format!(
                "no model '{n}' is registered"
            )));
        }
        Ok(ModelList { models })
    }
}
