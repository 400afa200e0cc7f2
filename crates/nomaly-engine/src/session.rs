//! Building sessions: local DataFusion, Ballista standalone or a Ballista cluster, with Nomaly's functions, the rewrite
//! rule, a bounded memory pool and a spill directory.

use crate::budget::{BudgetSplit, process_footprint};
use crate::error::{EngineError, Result};
use crate::memory::default_budget;
use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where queries run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    /// DataFusion in this process.
    Local,
    /// A Ballista scheduler and executor started in this process: the cluster code path, locally.
    Standalone,
    /// A Ballista cluster of `nomaly scheduler` / `nomaly executor` processes: the scheduler's
    /// `host:port` (written `ballista://host:port`; port 50050 when left out).
    Cluster(String),
}

impl EngineKind {
    /// The engine's kind as `--engine` takes it, without a cluster's address.
    pub fn name(&self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Standalone => "standalone",
            EngineKind::Cluster(_) => "ballista",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineKind::Cluster(address) => write!(f, "ballista://{address}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if ["ballista://", "df://"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return crate::ballista::scheduler_address(s).map(EngineKind::Cluster);
        }
        match lower.as_str() {
            "local" => Ok(EngineKind::Local),
            "standalone" => Ok(EngineKind::Standalone),
            other => Err(format!(
                "unknown engine '{other}'; valid engines are: local, standalone, ballista://HOST[:PORT] (a `nomaly scheduler`)"
            )),
        }
    }
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub engine: EngineKind,
    /// Partitions (parallelism); default: the number of cores.
    pub target_partitions: Option<usize>,
    /// The process's memory budget in bytes; default: 80% of available memory. The pool gets
    /// what is left after the process's footprint and `reader_buffers` (see `budget.rs`).
    pub memory_limit: Option<usize>,
    /// Parquet reader buffers this session's scans will hold outside the pool
    /// (`budget::parquet_read_buffers`); 0 when unknown.
    pub reader_buffers: usize,
    /// Spill directory; default: the OS temp directory.
    pub spill_dir: Option<PathBuf>,
    pub batch_size: usize,
    /// Local engine: fit and score `detect_anomalies` in one pass over the input (kept in memory
    /// up to half the budget). Off where plans are cut into chunks after planning (pipelines).
    pub one_pass: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::Local,
            target_partitions: None,
            memory_limit: None,
            reader_buffers: 0,
            spill_dir: None,
            batch_size: 8192,
            one_pass: true,
        }
    }
}

impl EngineConfig {
    pub fn memory_budget(&self) -> usize {
        self.memory_limit.unwrap_or_else(default_budget)
    }

    /// How the budget is shared between the process, reader buffers and the operators' pool.
    pub fn budget_split(&self) -> BudgetSplit {
        BudgetSplit::new(
            self.memory_budget(),
            process_footprint(),
            self.reader_buffers,
            self.partitions(),
        )
    }

    pub fn partitions(&self) -> usize {
        self.target_partitions
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }

    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        let pool = nomaly_physical::budget_pool(self.budget_split().pool);
        let mut builder = RuntimeEnvBuilder::new().with_memory_pool(pool);
        if let Some(dir) = &self.spill_dir {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
                path: dir.clone(),
                source,
            })?;
            builder = builder.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        Ok(builder.build_arc()?)
    }

    fn session_config(&self, base: SessionConfig) -> SessionConfig {
        let mut config = tune_session_config(
            base.with_target_partitions(self.partitions())
                .with_batch_size(self.batch_size)
                .with_information_schema(true),
        );
        // Each sort partition sets aside this much for its merge before it spills (DataFusion's
        // default, 10 MB, is per partition and per sort: a plan with two sorts on 2 cores kept
        // 40 MB of a 24 MB budget and failed). A sixteenth of the budget per partition, 10 MB at
        // most: a small budget still sorts, spilling sooner.
        let share = self.budget_split().pool / 16 / self.partitions();
        config.options_mut().execution.sort_spill_reservation_bytes =
            share.clamp(256 << 10, 10 << 20);
        config
    }
}

/// The settings every Nomaly session needs, on clients and on a cluster's scheduler alike.
pub fn tune_session_config(mut config: SessionConfig) -> SessionConfig {
    // Leaf-expression pushdown moves `get_field(d, 'score')` below the projection that computes
    // `d = anomaly_detect(...)` and substitutes it there, once per field read: a query reading
    // both fields of a detection would score every row twice. Struct-field pushdown into scans is
    // worth less here than scoring once.
    config
        .options_mut()
        .optimizer
        .enable_leaf_expression_pushdown = false;
    config
}

/// Builds a session with every Nomaly function and the `detect_anomalies` rewrite installed.
pub async fn build_context(config: &EngineConfig) -> Result<SessionContext> {
    match &config.engine {
        EngineKind::Local => {
            let mut builder = nomaly_udfs::with_nomaly(
                SessionStateBuilder::new()
                    .with_config(config.session_config(SessionConfig::new()))
                    .with_runtime_env(config.runtime()?)
                    .with_default_features(),
            );
            if config.one_pass {
                builder = builder.with_physical_optimizer_rules(nomaly_physical::optimizer_rules());
            }
            Ok(SessionContext::new_with_state(builder.build()))
        }
        EngineKind::Standalone => {
            // The in-process scheduler plans with the static planner, which runs the session's
            // physical rules (the per-segment fusion; see `ballista::processes::session_state`).
            // Its codec carries the per-segment operator between them.
            let session_config = config
                .session_config(
                    SessionConfig::new_with_ballista()
                        .with_ballista_adaptive_query_planner(false)
                        .with_ballista_physical_extension_codec(Arc::new(
                            crate::ballista::codec::OperatorCodec::default(),
                        ))
                        .with_ballista_logical_extension_codec(Arc::new(
                            crate::ballista::codec::LogicalCodec::default(),
                        )),
                )
                .set_usize("ballista.standalone.parallelism", config.partitions());
            // The in-process scheduler and executor are built from this state, so the functions
            // must be in it; Ballista then replaces the client's function lists, so they are
            // registered once more on the returned context.
            let state = nomaly_udfs::with_nomaly(
                SessionStateBuilder::new()
                    .with_config(session_config)
                    .with_runtime_env(config.runtime()?)
                    .with_default_features()
                    // The in-process scheduler plans with these: segments one at a time.
                    .with_physical_optimizer_rules(nomaly_physical::cluster_optimizer_rules()),
            )
            .build();
            let ctx = SessionContext::standalone_with_state(state)
                .await
                .map_err(|e| EngineError::Ballista(e.to_string()))?;
            nomaly_udfs::register_functions(&ctx);
            Ok(ctx)
        }
        EngineKind::Cluster(address) => {
            crate::ballista::client::check_scheduler(address).await?;
            // The client plans (its analyzer rules and functions); the scheduler plans again
            // with its own session builder, which has the same functions and rules.
            let state = nomaly_udfs::with_nomaly(
                SessionStateBuilder::new()
                    .with_config(crate::ballista::auth::with_client_credentials(
                        config.session_config(
                            SessionConfig::new_with_ballista()
                                .with_ballista_logical_extension_codec(Arc::new(
                                    crate::ballista::codec::LogicalCodec::default(),
                                )),
                        ),
                        true,
                    ))
                    .with_runtime_env(config.runtime()?)
                    .with_default_features(),
            )
            .build();
            let ctx = SessionContext::remote_with_state(&format!("df://{address}"), state)
                .await
                .map_err(|e| EngineError::Ballista(format!("ballista://{address}: {e}")))?;
            nomaly_udfs::register_functions(&ctx);
            Ok(ctx)
        }
    }
}
