//! Running a pipeline: register → steps → fit once → score chunk by chunk → check → publish → notify.
//!
//! The detect step is the same plan the SQL functions build: `fit_detector` as an aggregate over
//! the detect input, then `anomaly_detect(model, ...)` with the one-row model table as the build
//! side of a cross join (a join on the segment keys with `partition_by`). The chunked source's scan
//! has one partition per chunk; when the steps keep rows within their partition (filters,
//! projections, joins against broadcast lookups) partition `i` of the scoring plan *is* chunk `i`
//! and is executed and written on its own. Otherwise the detect input is written once to a work
//! directory and that is chunked ("materialized").

use crate::checkpoint::{
    ChunkEntry, CommitEntry, ManifestEvent, ManifestState, PartEntry, QUARANTINE_DIR, RUN_DIR,
    RunDir, RunRecord, fingerprint, fingerprint_change, now_ms, pipeline_change, remove_orphans,
    verify_commit, write_quarantine,
};
use crate::chunks::{ChunkPlan, ChunkTable, SourceReader, plan_chunks};
use crate::compile::{CompiledPipeline, Detect, RetryPolicy};
use crate::error::{PipelineError, Result};
use crate::faults::FaultPlan;
use crate::notify::notify_all;
use crate::progress::{ProgressEvent, ProgressObserver};
use crate::quarantine::{ChunkBadRows, QuarantineLog, QuarantineScanExec};
use crate::report::{CheckResult, RunReport, RunStatus, SinkReport, StepTiming, peak_rss_bytes};
use crate::sink::{
    ChunkWriter, REPORT_FILE, SinkTarget, WrittenPart, sibling_dir, staging_dir, write_atomic,
};
use crate::spec::{FileFormat, ValidateSpec};
use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use nomaly_engine::{
    EngineConfig, EngineError, EngineKind, StandaloneCluster, build_context, narrow_to_partition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// Name of the fitted-models table in a run's session.
const MODELS: &str = "__nomaly_models";
/// Name of a materialized detect input.
const STAGED_INPUT: &str = "__nomaly_detect_input";

/// Whether a run starts fresh or continues an interrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunMode {
    /// A new run; refused when an unfinished run of the same output exists.
    #[default]
    Run,
    /// Discard an unfinished run, then run.
    Restart,
    /// Continue an unfinished run (skip committed chunks, reuse the model); start one when there
    /// is none. With `refit`, a run whose pipeline or input changed starts over instead of
    /// being refused.
    Resume { refit: bool },
}

/// How to run.
pub struct RunOptions {
    /// Plan and run every step on zero rows; write nothing.
    pub dry_run: bool,
    pub mode: RunMode,
    pub progress: Arc<dyn ProgressObserver>,
}

/// A random draw in [0, 1) for retry jitter (no need for a seed: waits are not results).
fn jitter_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The root cause of a DataFusion error as a retry-aware chunk error.
fn chunk_error(chunk: usize, range: &str, e: DataFusionError) -> PipelineError {
    let user_error = nomaly_engine::error::is_user_datafusion_error(&e);
    let transient = !user_error && nomaly_engine::error::is_transient_datafusion_error(&e);
    PipelineError::Chunk {
        chunk,
        range: range.to_string(),
        message: EngineError::DataFusion(e).user_message(),
        user_error,
        transient,
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A session with the pipeline's sources and steps registered.
pub struct PreparedSession {
    pub ctx: SessionContext,
    /// Bad lines of the chunked source, under `on_bad_rows = "quarantine"`.
    pub quarantine: Option<Arc<QuarantineLog>>,
    pub chunks: ChunkPlan,
    pub memory_limit: usize,
    pub partitions: usize,
    pub timings: Vec<StepTiming>,
}

fn classify(place: String, e: DataFusionError) -> PipelineError {
    PipelineError::engine(place, EngineError::DataFusion(e))
}

/// Builds the session and registers sources (the first as chunks) and steps.
pub async fn prepare(
    p: &CompiledPipeline,
    progress: &dyn ProgressObserver,
) -> Result<PreparedSession> {
    let budget = EngineConfig {
        memory_limit: p.memory_limit,
        ..Default::default()
    }
    .memory_budget();
    let config = EngineConfig {
        engine: EngineKind::Local,
        target_partitions: p.cpus,
        // The budget is the process's: operators reserve from the pool, but file readers and
        // part writers hold row groups DataFusion does not track, so they get a share of it.
        memory_limit: Some(pool_share(budget)),
        spill_dir: None,
        batch_size: 8192,
        // Chunk jobs run partitions of a plan one by one (or narrowed, on Ballista): a fused fit
        // would span all of them.
        one_pass: false,
    };
    let ctx = build_context(&config)
        .await
        .map_err(|e| PipelineError::engine(p.file.path.display().to_string(), e))?;
    if let Some(plan) = FaultPlan::from_env() {
        let local = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        let store = crate::faults::FaultyStore::new(
            Arc::new(datafusion::object_store::local::LocalFileSystem::new()),
            plan,
        );
        ctx.register_object_store(local.as_ref(), Arc::new(store));
    }
    register_stores(&ctx, p)?;
    // Partition i of a scan must stay chunk i: no re-splitting of file groups, no round-robin.
    for setting in [
        "SET datafusion.optimizer.repartition_file_scans = false",
        "SET datafusion.optimizer.enable_round_robin_repartition = false",
        "SET datafusion.optimizer.repartition_joins = false",
        "SET datafusion.execution.enable_file_stream_work_stealing = false",
    ] {
        ctx.sql(setting)
            .await
            .map_err(|e| classify("session settings".into(), e))?;
    }
    let mut timings = Vec::new();
    let started = Instant::now();
    progress.on_event(&ProgressEvent::Phase("reading sources".into()));
    let first = &readable_source(p, &p.sources[0])?;
    let mut chunks = plan_chunks(&ctx, first, p.chunk_rows).await?;
    if p.quarantine
        && first.format == FileFormat::Csv
        && let Some(c) = chunks.chunks.first()
    {
        let path = PathBuf::from("/").join(&c.file);
        chunks.schema = crate::quarantine::tolerant_csv_schema(
            &path,
            &chunks.schema,
            first.has_header,
            first.delimiter,
        )
        .map_err(|source| PipelineError::Io { path, source })?;
    }
    for w in &chunks.warnings {
        progress.on_event(&ProgressEvent::Warning(w.clone()));
    }
    let quarantine = p.quarantine.then(|| Arc::new(QuarantineLog::default()));
    let table = match &quarantine {
        Some(log) => ChunkTable::with_quarantine(chunks.clone(), log.clone()),
        None => ChunkTable::new(chunks.clone()),
    };
    ctx.register_table(&first.name, Arc::new(table))
        .map_err(|e| classify(format!("source '{}'", first.name), e))?;
    for s in &p.sources[1..] {
        register_listing(&ctx, &readable_source(p, s)?).await?;
    }
    timings.push(StepTiming {
        step: "sources".into(),
        seconds: started.elapsed().as_secs_f64(),
    });
    timings.extend(register_steps(&ctx, p).await?);
    if let Some(d) = &p.detect {
        let text_input = matches!(p.sources[0].format, FileFormat::Csv | FileFormat::Ndjson);
        check_detect_columns(&ctx, d, &reads(p), text_input).await?;
    }
    Ok(PreparedSession {
        ctx,
        quarantine,
        chunks,
        memory_limit: budget,
        partitions: config.partitions(),
        timings,
    })
}

/// For `engine = "standalone"`: starts the Ballista scheduler and executor a run submits its jobs
/// to (`validate` and `explain` do not need one). They are built from the prepared session, so the
/// executor shares its runtime (memory pool, object stores); jobs find the cluster in the session
/// config (see `cluster_of`).
async fn start_cluster(
    p: &CompiledPipeline,
    prepared: &PreparedSession,
    progress: &dyn ProgressObserver,
) -> Result<()> {
    if p.engine != EngineKind::Standalone {
        return Ok(());
    }
    progress.on_event(&ProgressEvent::Phase("starting Ballista".into()));
    let ctx = &prepared.ctx;
    let cluster = StandaloneCluster::start(&ctx.state(), prepared.partitions)
        .await
        .map_err(|e| PipelineError::engine("engine = \"standalone\"", e))?;
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(cluster));
    Ok(())
}

/// Registers the object store of every remote source (s3://, gs://, az://, http(s)://).
fn register_stores(ctx: &SessionContext, p: &CompiledPipeline) -> Result<()> {
    for s in &p.sources {
        nomaly_engine::register_object_store(ctx, &s.location)
            .map_err(|e| PipelineError::engine(format!("source '{}' ({})", s.name, s.path), e))?;
    }
    Ok(())
}

/// The part of a memory budget given to the operators' pool; the rest (a quarter) is headroom for
/// untracked file reader and writer buffers.
pub fn pool_share(budget: usize) -> usize {
    budget / 4 * 3
}

/// Registers the `[[step]]` views in order (replacing earlier registrations of the same names).
async fn register_steps(ctx: &SessionContext, p: &CompiledPipeline) -> Result<Vec<StepTiming>> {
    let mut timings = Vec::new();
    for step in &p.steps {
        let t = Instant::now();
        let df = ctx
            .sql(&step.sql)
            .await
            .map_err(|e| classify(format!("{} (step '{}')", step.place, step.name), e))?;
        let _ = ctx.deregister_table(&step.name);
        ctx.register_table(&step.name, df.into_view())
            .map_err(|e| classify(step.place.clone(), e))?;
        timings.push(StepTiming {
            step: format!("step {}", step.name),
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(timings)
}

/// The reader a source is chunked or listed through: itself, or for HDF5 its Parquet conversion
/// in the run's `hdf5` work directory beside the output.
fn readable_source(p: &CompiledPipeline, s: &SourceReader) -> Result<SourceReader> {
    if s.format != FileFormat::Hdf5 {
        return Ok(s.clone());
    }
    #[cfg(feature = "hdf5")]
    {
        crate::hdf5_source::convert(s, &sibling_dir(&p.sinks[0].path, "hdf5"), p.chunk_rows)
    }
    #[cfg(not(feature = "hdf5"))]
    {
        let _ = p;
        Err(PipelineError::invalid(
            format!("source '{}' ({})", s.name, s.path),
            nomaly_engine::HDF5_NOT_BUILT,
        ))
    }
}

async fn register_listing(ctx: &SessionContext, s: &SourceReader) -> Result<()> {
    let place = format!("source '{}' ({})", s.name, s.path);
    if s.list_files(ctx).await?.is_empty() {
        return Err(PipelineError::invalid(
            place,
            "no files match this path; check the path or glob (relative paths are relative to the pipeline file)",
        ));
    }
    let schema = s.infer_schema(ctx).await?;
    let options = ListingOptions::new(s.df_format()).with_file_extension(s.extension_filter());
    let config = ListingTableConfig::new(s.url()?)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ListingTable::try_new(config).map_err(|e| classify(place.clone(), e))?;
    ctx.register_table(&s.name, Arc::new(table))
        .map_err(|e| classify(place, e))?;
    Ok(())
}

async fn check_detect_columns(
    ctx: &SessionContext,
    d: &Detect,
    reads: &str,
    text_input: bool,
) -> Result<()> {
    let df = ctx
        .table(&d.input)
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    let schema = df.schema().clone();
    if schema.fields().is_empty() {
        return Err(empty_input(d, reads));
    }
    let available = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for c in d.columns.iter().chain(&d.partition_by) {
        let Ok(field) = schema.field_with_unqualified_name(c) else {
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "column '{c}' is not in '{}'; its columns are: {}",
                    d.input,
                    available()
                ),
            ));
        };
        if d.columns.contains(c) && !nomaly_detectors::features::is_numeric(field.data_type()) {
            // A header-only CSV infers text columns: say what is really wrong.
            if input_is_empty(ctx, &d.input).await {
                return Err(empty_input(d, reads));
            }
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "column '{c}' of '{}' is {}, not numeric; detectors take numeric columns — cast it in a [[step]] (e.g. CAST({c} AS DOUBLE)) or drop it from columns{}",
                    d.input,
                    field.data_type(),
                    if text_input {
                        "; if only a few lines hold text where numbers belong, set [run] on_bad_rows = \"quarantine\" to set those lines aside"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    for reserved in ["anomaly_score", "is_anomaly", "anomaly_explanation"] {
        if schema.field_with_unqualified_name(reserved).is_ok() {
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "'{}' already has a column named {reserved}, which the detect step adds; rename it in a [[step]]",
                    d.input
                ),
            ));
        }
    }
    Ok(())
}

async fn input_is_empty(ctx: &SessionContext, table: &str) -> bool {
    let Ok(df) = ctx
        .sql(&format!("SELECT 1 FROM {} LIMIT 1", quote_ident(table)))
        .await
    else {
        return false;
    };
    df.collect()
        .await
        .map(|b| b.iter().all(|b| b.num_rows() == 0))
        .unwrap_or(false)
}

fn empty_input(d: &Detect, reads: &str) -> PipelineError {
    PipelineError::invalid(
        &d.place,
        format!(
            "'{}' has no rows (an empty or header-only input, or steps that filter everything out; it reads {reads}); there is nothing to fit — check the input path and the steps",
            d.input
        ),
    )
}

/// "source 'tx' (data/tx.csv)" for messages about where rows come from.
fn reads(p: &CompiledPipeline) -> String {
    p.sources
        .iter()
        .map(|s| format!("source '{}' ({})", s.name, s.path))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fit_sql(d: &Detect, input: &str) -> String {
    let keys: Vec<String> = d
        .partition_by
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} AS \"__nomaly_k{i}\"", quote_ident(k)))
        .collect();
    let mut args = vec![quote_str(d.algorithm.name())];
    args.extend(d.columns.iter().map(|c| quote_ident(c)));
    if !d.options.trim().is_empty() {
        args.push(quote_str(&d.options));
    }
    let mut sql = format!(
        "SELECT {}fit_detector({}) AS model FROM {input}",
        keys.iter().map(|k| format!("{k}, ")).collect::<String>(),
        args.join(", ")
    );
    if !keys.is_empty() {
        let groups: Vec<String> = (0..keys.len())
            .map(|i| format!("\"__nomaly_k{i}\""))
            .collect();
        sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
    }
    sql
}

fn score_sql(d: &Detect, input: &str) -> String {
    let cols: Vec<String> = d
        .columns
        .iter()
        .map(|c| format!("i.{}", quote_ident(c)))
        .collect();
    let cols = cols.join(", ");
    let explain_inner = if d.explain {
        format!(", anomaly_explain(m.model, {cols}) AS \"__nomaly_e\"")
    } else {
        String::new()
    };
    let join = if d.partition_by.is_empty() {
        format!("{MODELS} AS m CROSS JOIN {input} AS i")
    } else {
        let on: Vec<String> = d
            .partition_by
            .iter()
            .enumerate()
            .map(|(n, k)| {
                format!(
                    "i.{} IS NOT DISTINCT FROM m.\"__nomaly_k{n}\"",
                    quote_ident(k)
                )
            })
            .collect();
        format!("{MODELS} AS m JOIN {input} AS i ON {}", on.join(" AND "))
    };
    let (exclude, explain_outer) = if d.explain {
        (
            "\"__nomaly_a\", \"__nomaly_e\"",
            ", \"__nomaly_e\" AS anomaly_explanation",
        )
    } else {
        ("\"__nomaly_a\"", "")
    };
    format!(
        "SELECT * EXCLUDE ({exclude}), \"__nomaly_a\"['score'] AS anomaly_score, \"__nomaly_a\"['is_anomaly'] AS is_anomaly{explain_outer} \
         FROM (SELECT i.*, anomaly_detect(m.model, {cols}) AS \"__nomaly_a\"{explain_inner} FROM {join})"
    )
}

/// Fits the model(s) and registers them as the models table; returns (input rows, missing, models).
async fn fit_models(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
    reads: &str,
    retry: &FitRetry,
    report: &mut RunReport,
) -> Result<FittedModels> {
    let fit = ctx
        .sql(&fit_sql(d, input))
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    // The plan's schema, not the first batch's: an empty input has no batches.
    let schema: SchemaRef = Arc::new(fit.schema().as_arrow().clone());
    let batches = collect_fit(fit, retry, report).await.map_err(|e| {
        let user = nomaly_engine::error::is_user_datafusion_error(&e);
        let err = classify(format!("{} (fit, reading {reads})", d.place), e);
        if user { err } else { runtime(err) }
    })?;
    let mut rows = 0u64;
    let mut skipped = 0u64;
    let mut models = 0usize;
    for b in &batches {
        let col = b.column(b.num_columns() - 1);
        let col = datafusion::arrow::compute::cast(col, &DataType::Binary)
            .map_err(|e| classify(d.place.clone(), e.into()))?;
        let bin: &BinaryArray = col.as_binary();
        for i in 0..bin.len() {
            if bin.is_null(i) {
                continue;
            }
            let m = nomaly_detectors::Model::from_bytes(bin.value(i))
                .map_err(|e| PipelineError::invalid(&d.place, e.to_string()))?;
            rows += m.training_rows + m.skipped_rows;
            skipped += m.skipped_rows;
            models += 1;
        }
    }
    register_models(ctx, schema.clone(), batches.clone())
        .map_err(|e| classify(d.place.clone(), e))?;
    Ok(FittedModels {
        rows,
        skipped,
        models,
        schema,
        batches,
    })
}

/// A fit's result: counts, and the models table (kept in the run directory for resume).
struct FittedModels {
    rows: u64,
    skipped: u64,
    models: usize,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

fn register_models(
    ctx: &SessionContext,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> std::result::Result<(), DataFusionError> {
    let _ = ctx.deregister_table(MODELS);
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(MODELS, Arc::new(table))?;
    Ok(())
}

/// The attempts at one unit of work (a chunk, a fit partition, the fit): whether a failure may be
/// retried and after what wait, how many retries it took and the time the failures cost.
struct Attempts {
    policy: RetryPolicy,
    retries: u32,
    lost_seconds: f64,
    warnings: Vec<String>,
}

impl Attempts {
    fn new(policy: RetryPolicy) -> Self {
        Attempts {
            policy,
            retries: 0,
            lost_seconds: 0.0,
            warnings: Vec::new(),
        }
    }

    /// After an attempt begun at `started` failed with `error` (a message naming the unit): the
    /// wait before the next attempt, or `None` when the error is not `transient` or the retries
    /// are used up.
    fn retry_after(&mut self, error: &str, transient: bool, started: Instant) -> Option<Duration> {
        self.lost_seconds += started.elapsed().as_secs_f64();
        if !transient || self.retries >= self.policy.max_retries {
            return None;
        }
        self.retries += 1;
        let wait = self.policy.delay(self.retries, jitter_unit());
        tracing::warn!(error, retries = self.retries, "retrying");
        self.warnings.push(format!(
            "{error}; retry {} of {} in {:.2}s",
            self.retries,
            self.policy.max_retries,
            wait.as_secs_f64()
        ));
        Some(wait)
    }

    /// Adds these attempts to the report under `key` ("fit 3", "chunk 7").
    fn record(self, key: String, report: &mut RunReport) {
        report.recovery.time_lost_seconds += self.lost_seconds;
        if self.retries > 0 {
            report.retries += self.retries as u64;
            report.recovery.retries.insert(key, self.retries);
            report.warnings.extend(self.warnings);
        }
    }
}

/// How the fit retries: the policy and how many partitions run at once.
struct FitRetry {
    policy: RetryPolicy,
    parallel: usize,
}

/// The first partial aggregate under `plan` (the fit's per-partition state builder).
fn find_partial_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(agg) = plan.as_ref().downcast_ref::<AggregateExec>()
        && *agg.mode() == AggregateMode::Partial
    {
        return Some(plan.clone());
    }
    plan.children().into_iter().find_map(find_partial_aggregate)
}

/// True when each partition of `plan` can be executed (and re-executed) on its own: nothing
/// under it moves rows between partitions.
fn partitions_are_independent(plan: &Arc<dyn ExecutionPlan>) -> bool {
    !matches!(
        plan.name(),
        "RepartitionExec" | "CoalescePartitionsExec" | "SortPreservingMergeExec"
    ) && plan.children().into_iter().all(partitions_are_independent)
}

/// Runs the fit. Its partial aggregate runs partition by partition, each partition retried on a
/// transient failure, and the final aggregate merges the partial states — so a flaky read costs
/// one partition, not the fit. When partitions are not independent the whole fit is retried.
async fn collect_fit(
    df: DataFrame,
    retry: &FitRetry,
    report: &mut RunReport,
) -> std::result::Result<Vec<RecordBatch>, DataFusionError> {
    let task_ctx = Arc::new(df.task_ctx());
    if let Some(cluster) = cluster_of(task_ctx.session_config()) {
        return fit_on_cluster(df, &cluster, retry.policy, report).await;
    }
    let plan = df.clone().create_physical_plan().await?;
    let partial = find_partial_aggregate(&plan)
        .filter(|p| p.children().into_iter().all(partitions_are_independent));
    let Some(partial) = partial else {
        return whole_fit(retry.policy, report, || df.clone().collect()).await;
    };
    let n = partial.output_partitioning().partition_count();
    let policy = retry.policy;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let (df, task_ctx, first) = (df.clone(), task_ctx.clone(), partial.clone());
            // A task per partition: `buffered` alone would poll them all on this one thread.
            tokio::spawn(async move {
                let mut node = first;
                let mut attempts = Attempts::new(policy);
                loop {
                    let t = Instant::now();
                    let attempt = match node.execute(i, task_ctx.clone()) {
                        Ok(stream) => datafusion::physical_plan::common::collect(stream).await,
                        Err(e) => Err(e),
                    };
                    let e = match attempt {
                        Ok(b) => return Ok((b, attempts)),
                        Err(e) => e,
                    };
                    let transient = nomaly_engine::error::is_transient_datafusion_error(&e);
                    let error = format!("fit partition {i}: {}", e.find_root());
                    let Some(wait) = attempts.retry_after(&error, transient, t) else {
                        return Err(e);
                    };
                    tokio::time::sleep(wait).await;
                    // A fresh plan: nothing of the failed attempt is reused.
                    let fresh = df.clone().create_physical_plan().await?;
                    node = find_partial_aggregate(&fresh).ok_or_else(|| {
                        DataFusionError::Internal("the fit plan changed between attempts".into())
                    })?;
                }
            })
        })
        .buffered(retry.parallel.max(1))
        .collect()
        .await;
    let mut states = Vec::with_capacity(n);
    for (i, r) in results.into_iter().enumerate() {
        let (batches, attempts) = r.map_err(|e| DataFusionError::External(Box::new(e)))??;
        attempts.record(format!("fit {i}"), report);
        states.push(batches);
    }
    let memory = MemorySourceConfig::try_new_exec(&states, partial.schema(), None)?;
    let merged = plan
        .transform_down(|node| {
            Ok(
                if std::ptr::addr_eq(Arc::as_ptr(&node), Arc::as_ptr(&partial)) {
                    Transformed::yes(memory.clone() as Arc<dyn ExecutionPlan>)
                } else {
                    Transformed::no(node)
                },
            )
        })?
        .data;
    datafusion::physical_plan::collect(merged, task_ctx).await
}

/// The Ballista cluster the session runs jobs on (`engine = "standalone"`), if any.
fn cluster_of(config: &SessionConfig) -> Option<Arc<StandaloneCluster>> {
    config.get_extension::<StandaloneCluster>()
}

/// The fit as one Ballista job (the scheduler spreads the partial aggregates over the executor's
/// slots and retries failed tasks); the whole job is retried on a transient failure.
async fn fit_on_cluster(
    df: DataFrame,
    cluster: &StandaloneCluster,
    policy: RetryPolicy,
    report: &mut RunReport,
) -> std::result::Result<Vec<RecordBatch>, DataFusionError> {
    whole_fit(policy, report, || async {
        let plan = df.clone().create_physical_plan().await?;
        datafusion::physical_plan::common::collect(cluster.execute(plan).await?).await
    })
    .await
}

/// Runs the whole fit, again after a transient failure, and records its retries as "fit".
async fn whole_fit<F, Fut>(
    policy: RetryPolicy,
    report: &mut RunReport,
    mut fit: F,
) -> std::result::Result<Vec<RecordBatch>, DataFusionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Vec<RecordBatch>, DataFusionError>>,
{
    let mut attempts = Attempts::new(policy);
    let result = loop {
        let t = Instant::now();
        match fit().await {
            Ok(b) => break Ok(b),
            Err(e) => {
                let transient = nomaly_engine::error::is_transient_datafusion_error(&e);
                match attempts.retry_after(&format!("fit: {}", e.find_root()), transient, t) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => break Err(e),
                }
            }
        }
    };
    attempts.record("fit".into(), report);
    result
}

fn runtime(e: PipelineError) -> PipelineError {
    // Keep the message; a failed read or write of the run itself is not the input's fault.
    match e {
        PipelineError::Engine { place, source } if source.is_user_error() => PipelineError::Chunk {
            chunk: 0,
            range: "fit".into(),
            message: format!("{place}: {}", source.user_message()),
            user_error: false,
            transient: false,
        },
        other => other,
    }
}

/// True when partition `i` of `plan` reads exactly chunk `i` of `chunks` (rows never cross).
fn is_chunk_preserving(plan: &Arc<dyn ExecutionPlan>, chunks: &ChunkPlan) -> bool {
    let n = chunks.chunks.len();
    if plan.output_partitioning().partition_count() != n {
        return false;
    }
    let name = plan.name();
    if let Some(q) = plan.as_ref().downcast_ref::<QuarantineScanExec>() {
        return q.chunk_count() == n;
    }
    if let Some(ds) = plan.as_ref().downcast_ref::<DataSourceExec>() {
        let Some(config) = ds.data_source().as_ref().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        return config.file_groups.len() == n
            && config.file_groups.iter().zip(&chunks.chunks).all(|(g, c)| {
                g.files().len() == 1 && g.files()[0].object_meta.location.as_ref() == c.file
            });
    }
    if matches!(
        name,
        "RepartitionExec" | "CoalescePartitionsExec" | "SortPreservingMergeExec" | "UnionExec"
    ) {
        return false;
    }
    let children = plan.children();
    if let Some(h) = plan.as_ref().downcast_ref::<HashJoinExec>() {
        return *h.partition_mode() == PartitionMode::CollectLeft
            && is_chunk_preserving(children[1], chunks);
    }
    match name {
        "CrossJoinExec" | "NestedLoopJoinExec" => is_chunk_preserving(children[1], chunks),
        _ if children.len() == 1 => is_chunk_preserving(children[0], chunks),
        _ => false,
    }
}

const CANCELLED: &str = "cancelled after another chunk failed";

/// Counts of one committed chunk.
#[derive(Debug, Clone, Default)]
struct ChunkOutcome {
    rows: u64,
    anomalies: u64,
    missing: u64,
    quarantined: u64,
    source_lines: Option<u64>,
    parts: Vec<(usize, WrittenPart)>,
}

/// Runs a compiled pipeline. `Err` only for failures before a report exists; a run that fails later
/// returns its report with status `failed` and the error inside, plus the error.
pub async fn run(
    p: &CompiledPipeline,
    opts: &RunOptions,
) -> std::result::Result<RunReport, (PipelineError, Option<RunReport>)> {
    let fut = run_inner(p, opts);
    match p.timeout {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                discard_unless_resumable(p);
                Err((
                    PipelineError::Timeout {
                        limit: p.timeout_text.clone().unwrap_or_default(),
                    },
                    None,
                ))
            }
        },
        None => fut.await,
    }
}

async fn run_inner(
    p: &CompiledPipeline,
    opts: &RunOptions,
) -> std::result::Result<RunReport, (PipelineError, Option<RunReport>)> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let progress = opts.progress.as_ref();
    if opts.mode != RunMode::Restart && !opts.dry_run {
        publish_interrupted(p).map_err(|e| (e, None))?;
    }
    let prepared = prepare(p, progress).await.map_err(|e| (e, None))?;
    start_cluster(p, &prepared, progress)
        .await
        .map_err(|e| (e, None))?;
    let mut report = RunReport {
        status: RunStatus::Failed,
        started_at_unix_ms: started_at,
        chunks: prepared.chunks.chunks.len(),
        steps: prepared.timings.clone(),
        memory_limit_bytes: prepared.memory_limit,
        warnings: prepared.chunks.warnings.clone(),
        ..empty_report(p)
    };
    // Memory and spill sampling while the run lasts.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak_pool = Arc::new(AtomicUsize::new(0));
    let peak_spill = Arc::new(AtomicU64::new(0));
    let sampler = {
        let runtime = prepared.ctx.runtime_env();
        let (sampling, peak_pool, peak_spill) =
            (sampling.clone(), peak_pool.clone(), peak_spill.clone());
        let progress = opts.progress.clone();
        let t0 = Instant::now();
        tokio::spawn(async move {
            let mut last_tick = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                let reserved = runtime.memory_pool.reserved();
                peak_pool.fetch_max(reserved, Ordering::Relaxed);
                peak_spill.fetch_max(runtime.disk_manager.used_disk_space(), Ordering::Relaxed);
                if last_tick.elapsed() >= Duration::from_millis(500) {
                    progress.on_event(&ProgressEvent::Tick {
                        elapsed: t0.elapsed(),
                        memory_reserved: reserved,
                    });
                    last_tick = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let result = execute(p, opts, &prepared, &mut report).await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    report.peak_pool_bytes = peak_pool.load(Ordering::Relaxed);
    report.spill_bytes = peak_spill.load(Ordering::Relaxed);
    report.peak_rss_bytes = peak_rss_bytes();
    if let Some(cluster) = cluster_of(prepared.ctx.state().config()) {
        report.ballista_jobs = cluster.jobs();
    }
    report.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            if report.status != RunStatus::DryRun {
                let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "work"));
            }
            let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "hdf5"));
            let report_path = finish(p, &mut report).map_err(|e| (e, None))?;
            let warnings = notify_all(
                &p.notifications,
                &report,
                report_path.as_deref(),
                &p.file.base_dir(),
            )
            .await;
            for w in warnings {
                progress.on_event(&ProgressEvent::Warning(w.clone()));
                report.warnings.push(w);
            }
            Ok(report)
        }
        Err(e) => {
            // Refusing to overwrite an unfinished run must not touch it.
            if !matches!(e, PipelineError::UnfinishedRun { .. }) && discard_unless_resumable(p) {
                report.warnings.push(format!(
                    "committed chunks are kept in {}; `nomaly resume {}` continues from them",
                    staging_dir(&p.sinks[0].path).display(),
                    p.file.path.display()
                ));
            }
            report.status = RunStatus::Failed;
            report.error = Some(e.user_message());
            let _ = notify_all(&p.notifications, &report, None, &p.file.base_dir()).await;
            Err((e, Some(report)))
        }
    }
}

/// Publishes a succeeded run (or keeps a run whose checks failed unpublished) and writes reports.
fn finish(p: &CompiledPipeline, report: &mut RunReport) -> Result<Option<PathBuf>> {
    if report.status == RunStatus::DryRun {
        return Ok(None);
    }
    let body = serde_json::to_vec_pretty(report).expect("a report is JSON");
    let mut first_path = None;
    for s in &p.sinks {
        let staging = staging_dir(&s.path);
        write_atomic(&staging.join(REPORT_FILE), &body)?;
    }
    // Complete once the reports are in place: a crash from here on is finished by
    // `publish_interrupted`, not redone.
    RunDir::at(&staging_dir(&p.sinks[0].path)).append(
        &ManifestEvent::Complete {
            at_unix_ms: now_ms(),
        },
        true,
    )?;
    if report.status == RunStatus::Succeeded {
        for s in &p.sinks {
            let target = sink_target(s, None);
            target.publish()?;
            first_path.get_or_insert(s.path.join(REPORT_FILE));
        }
    } else {
        first_path = Some(staging_dir(&p.sinks[0].path).join(REPORT_FILE));
    }
    Ok(first_path)
}

fn sink_target(
    s: &crate::compile::Sink,
    filter: Option<Arc<dyn datafusion::physical_plan::PhysicalExpr>>,
) -> SinkTarget {
    SinkTarget {
        label: s.label.clone(),
        path: s.path.clone(),
        format: s.format,
        partition_by: s.partition_by.clone(),
        mode: s.mode,
        filter,
        filter_text: s.filter.clone(),
    }
}

/// Compiles each sink's `where` against the scored schema.
fn compile_sinks(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    schema: &DFSchema,
) -> Result<Vec<Arc<SinkTarget>>> {
    p.sinks
        .iter()
        .map(|s| {
            let filter = match &s.filter {
                None => None,
                Some(text) => {
                    let expr = ctx
                        .parse_sql_expr(text, schema)
                        .map_err(|e| classify(format!("{} where", s.label), e))?;
                    Some(
                        ctx.create_physical_expr(expr, schema)
                            .map_err(|e| classify(format!("{} where", s.label), e))?,
                    )
                }
            };
            for c in &s.partition_by {
                if schema.field_with_unqualified_name(c).is_err() {
                    return Err(PipelineError::invalid(
                        &s.label,
                        format!("partition_by column '{c}' is not in the output; output columns are: {}", schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")),
                    ));
                }
            }
            let target = sink_target(s, filter);
            target.check_writable()?;
            Ok(Arc::new(target))
        })
        .collect()
}

/// Builds the scoring DataFrame (fitting first) over `input`.
async fn scored_frame(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    input: &str,
    report: &mut RunReport,
) -> Result<(DataFrame, Option<FittedModels>)> {
    match &p.detect {
        Some(d) => {
            let t = Instant::now();
            let retry = FitRetry {
                policy: p.retry,
                parallel: EngineConfig {
                    target_partitions: p.cpus,
                    ..Default::default()
                }
                .partitions(),
            };
            let fitted = fit_models(ctx, d, input, &reads(p), &retry, report).await?;
            report.input_rows = fitted.rows;
            report.rows_with_missing_features = fitted.skipped;
            report.models = fitted.models;
            report.steps.push(StepTiming {
                step: "fit".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            let df = ctx
                .sql(&score_sql(d, input))
                .await
                .map_err(|e| classify(d.place.clone(), e))?;
            Ok((df, Some(fitted)))
        }
        None => Ok((
            ctx.sql(&format!("SELECT * FROM {input}"))
                .await
                .map_err(|e| classify(p.file.path.display().to_string(), e))?,
            None,
        )),
    }
}

async fn execute(
    p: &CompiledPipeline,
    opts: &RunOptions,
    prepared: &PreparedSession,
    report: &mut RunReport,
) -> Result<()> {
    let ctx = &prepared.ctx;
    let progress = opts.progress.as_ref();
    let mut input = p
        .detect
        .as_ref()
        .map(|d| quote_ident(&d.input))
        .unwrap_or_else(|| {
            quote_ident(
                &p.steps
                    .last()
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| p.sources[0].name.clone()),
            )
        });
    if opts.dry_run {
        progress.on_event(&ProgressEvent::Phase("dry run on zero rows".into()));
        let empty = format!("(SELECT * FROM {input} LIMIT 0)");
        let (df, _) = scored_frame(ctx, p, &empty, report).await?;
        let sinks = compile_sinks(ctx, p, df.schema())?;
        let batches = df
            .collect()
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e))?;
        for s in &sinks {
            for b in &batches {
                if let Some(f) = &s.filter {
                    f.evaluate(b)
                        .map_err(|e| classify(format!("{} where", s.label), e))?;
                }
            }
        }
        report.status = RunStatus::DryRun;
        return Ok(());
    }

    let staging: Vec<PathBuf> = p.sinks.iter().map(|s| staging_dir(&s.path)).collect();
    let run_dir = RunDir::at(&staging[0]);
    report.run_dir = Some(p.sinks[0].path.join(RUN_DIR).display().to_string());
    let now_sources = fingerprint(ctx, &p.sources).await?;
    let mut resumed: Option<(RunRecord, ManifestState)> = None;
    // The manifest of an earlier run of this output, read once; unreadable counts as unfinished.
    let mut earlier = run_dir.exists().then(|| run_dir.read_manifest());
    let unfinished = earlier
        .as_ref()
        .is_some_and(|m| !m.as_ref().is_ok_and(|m| m.complete));
    match opts.mode {
        RunMode::Run if unfinished => {
            let committed = earlier
                .as_ref()
                .and_then(|m| m.as_ref().ok())
                .map_or(0, |m| m.commits.len());
            return Err(unfinished_run(p, &run_dir, committed));
        }
        RunMode::Resume { refit } if unfinished => {
            let record = run_dir.read_record()?;
            let change = pipeline_change(&run_dir.read_pipeline_text()?, &p.file.spec)
                .map(|c| format!("the pipeline changed: {c}"))
                .or_else(|| fingerprint_change(&record.sources, &now_sources));
            match change {
                Some(c) if !refit => {
                    return Err(PipelineError::invalid(
                        p.file.path.display().to_string(),
                        format!(
                            "cannot resume the unfinished run in {}: {c}. A resume continues the same pipeline on the same input; to start over, run `nomaly resume --refit {}` (or `nomaly run --restart {}`)",
                            run_dir.path.display(),
                            p.file.path.display(),
                            p.file.path.display()
                        ),
                    ));
                }
                Some(c) => progress.on_event(&ProgressEvent::Warning(format!(
                    "{c}; --refit: starting the run over"
                ))),
                None => {
                    let manifest = earlier.take().expect("an unfinished run has a manifest")?;
                    resumed = Some((record, manifest));
                }
            }
        }
        _ => {}
    }
    // Fault injection (tests) starts once the inputs are planned.
    if let Some(f) = FaultPlan::from_env() {
        f.arm();
    }

    let mut chunk_plan = prepared.chunks.clone();
    let mut materialized_bad = None;
    let (df, plan, models) = match &resumed {
        Some((record, _)) => {
            progress.on_event(&ProgressEvent::Phase("resume".into()));
            let (schema, batches) = run_dir.read_models()?;
            if p.detect.is_some() {
                register_models(ctx, schema, batches)
                    .map_err(|e| classify(run_dir.path.display().to_string(), e))?;
            }
            report.input_rows = record.input_rows;
            report.rows_with_missing_features = record.rows_with_missing_features;
            report.models = record.models;
            report.recovery.model_reused = p.detect.is_some();
            report.quarantined_rows = record.quarantined_rows;
            if record.chunking == "materialized" {
                let work = sibling_dir(&p.sinks[0].path, "work");
                if !work.is_dir() {
                    return Err(PipelineError::invalid(
                        p.file.path.display().to_string(),
                        format!(
                            "cannot resume: the run chunked its materialized input {}, which is gone; start over with `nomaly run --restart {}`",
                            work.display(),
                            p.file.path.display()
                        ),
                    ));
                }
                chunk_plan = chunk_materialized(ctx, p, &work).await?;
                input = STAGED_INPUT.to_string();
                report.chunking = "materialized".into();
            }
            let df = match &p.detect {
                Some(d) => ctx
                    .sql(&score_sql(d, &input))
                    .await
                    .map_err(|e| classify(d.place.clone(), e))?,
                None => ctx
                    .sql(&format!("SELECT * FROM {input}"))
                    .await
                    .map_err(|e| classify(p.file.path.display().to_string(), e))?,
            };
            let plan = df
                .clone()
                .create_physical_plan()
                .await
                .map_err(|e| classify(p.file.path.display().to_string(), e))?;
            let now: Vec<ChunkEntry> = chunk_plan.chunks.iter().map(ChunkEntry::of).collect();
            if now != record.chunks || !is_chunk_preserving(&plan, &chunk_plan) {
                return Err(PipelineError::invalid(
                    p.file.path.display().to_string(),
                    format!(
                        "cannot resume: the input now splits into {} chunks, the unfinished run had {} (or they differ); start over with `nomaly run --restart {}`",
                        now.len(),
                        record.chunks.len(),
                        p.file.path.display()
                    ),
                ));
            }
            (df, plan, None)
        }
        None => {
            // Steps that mix rows across chunks (aggregates, sorts, unions, partitioned joins)
            // are seen in the detect input's own plan: then write that input once and chunk it,
            // before fitting, so the steps run once, not once for the fit and again to write.
            let input_plan = ctx
                .sql(&format!("SELECT * FROM {input}"))
                .await
                .map_err(|e| classify(p.file.path.display().to_string(), e))?
                .create_physical_plan()
                .await
                .map_err(|e| classify(p.file.path.display().to_string(), e))?;
            let mut materialize = !is_chunk_preserving(&input_plan, &chunk_plan);
            loop {
                if materialize {
                    progress.on_event(&ProgressEvent::Phase(
                        "materializing the detect input".into(),
                    ));
                    let t = Instant::now();
                    let work = sibling_dir(&p.sinks[0].path, "work");
                    let _ = std::fs::remove_dir_all(&work);
                    std::fs::create_dir_all(&work).map_err(|source| PipelineError::Io {
                        path: work.clone(),
                        source,
                    })?;
                    if !p.quarantine {
                        // Chunks are of no use to a plan that mixes them, and a scan of one
                        // partition per chunk would read every chunk at once (a sort starts all
                        // its inputs), each holding a row group outside the memory pool: read the
                        // source as a plain table, steps and all.
                        let first = &p.sources[0];
                        let _ = ctx.deregister_table(&first.name);
                        register_listing(ctx, first).await?;
                        register_steps(ctx, p).await?;
                    }
                    ctx.sql(&format!("SELECT * FROM {input}"))
                        .await
                        .map_err(|e| classify(p.file.path.display().to_string(), e))?
                        .write_parquet(
                            &format!("{}/", work.display()),
                            DataFrameWriteOptions::new(),
                            Some(work_file_options(p.chunk_rows)),
                        )
                        .await
                        .map_err(|e| {
                            let user = nomaly_engine::error::is_user_datafusion_error(&e);
                            let err = classify("materializing the detect input".into(), e);
                            if user { err } else { runtime(err) }
                        })?;
                    chunk_plan = chunk_materialized(ctx, p, &work).await?;
                    // The source was read whole: its bad lines are known now, not per chunk.
                    materialized_bad = prepared.quarantine.as_ref().map(|log| log.all());
                    input = STAGED_INPUT.to_string();
                    report.chunking = "materialized".into();
                    report.steps.retain(|s| s.step != "fit");
                    report.steps.push(StepTiming {
                        step: "materialize".into(),
                        seconds: t.elapsed().as_secs_f64(),
                    });
                }
                progress.on_event(&ProgressEvent::Phase("fit".into()));
                let (df, models) = scored_frame(ctx, p, &input, report).await?;
                if let Some(d) = &p.detect
                    && report.input_rows == 0
                {
                    return Err(empty_input(d, &reads(p)));
                }
                let plan = df
                    .clone()
                    .create_physical_plan()
                    .await
                    .map_err(|e| classify(p.file.path.display().to_string(), e))?;
                if is_chunk_preserving(&plan, &chunk_plan) {
                    break (df, plan, Some(models));
                }
                if materialize {
                    return Err(PipelineError::Chunk {
                        chunk: 0,
                        range: "plan".into(),
                        message: format!(
                            "the scoring plan does not keep chunks apart even over the materialized input; plan:\n{}",
                            datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
                        ),
                        user_error: false,
                        transient: false,
                    });
                }
                // The input keeps chunks apart but the scoring join does not: materialize.
                materialize = true;
            }
        }
    };
    report.chunks = chunk_plan.chunks.len();
    let sinks = compile_sinks(ctx, p, df.schema())?;
    let n = chunk_plan.chunks.len();

    // The run directory: a fresh run records itself; a resume checks what was committed.
    let mut committed: BTreeMap<usize, CommitEntry> = BTreeMap::new();
    match resumed {
        None => {
            for s in &sinks {
                s.prepare_staging()?;
            }
            let models = models.flatten();
            let (schema, batches) = match &models {
                Some(m) => (m.schema.clone(), m.batches.clone()),
                None => (Arc::new(Schema::empty()), vec![]),
            };
            let record = RunRecord {
                format_version: 1,
                pipeline: p.name.clone(),
                pipeline_file: p.file.path.display().to_string(),
                started_at_unix_ms: report.started_at_unix_ms as u64,
                sources: now_sources,
                chunking: report.chunking.clone(),
                chunks: chunk_plan.chunks.iter().map(ChunkEntry::of).collect(),
                input_rows: report.input_rows,
                rows_with_missing_features: report.rows_with_missing_features,
                models: report.models,
                quarantined_rows: materialized_bad
                    .as_ref()
                    .map(|all: &BTreeMap<usize, ChunkBadRows>| {
                        all.values().map(|c| c.bad.len() as u64).sum()
                    })
                    .unwrap_or(0),
            };
            run_dir.create(&record, &p.file.text, &batches, &schema)?;
            for (chunk, found) in materialized_bad.iter().flatten() {
                write_quarantine(&run_dir.path, *chunk, &found.bad)?;
            }
            report.quarantined_rows = record.quarantined_rows;
        }
        Some((_, state)) => {
            let mut keep = BTreeSet::new();
            for (id, c) in state.commits {
                match verify_commit(&c, &staging) {
                    Ok(()) if id < n => {
                        for part in &c.parts {
                            keep.insert(staging[part.sink].join(&part.path));
                        }
                        committed.insert(id, c);
                    }
                    Ok(()) => {}
                    Err(why) => {
                        report.recovery.chunks_invalid += 1;
                        let w = format!("chunk {id} is redone: {why}");
                        progress.on_event(&ProgressEvent::Warning(w.clone()));
                        report.warnings.push(w);
                    }
                }
            }
            for dir in &staging {
                std::fs::create_dir_all(dir).map_err(|source| PipelineError::Io {
                    path: dir.clone(),
                    source,
                })?;
                report.recovery.orphan_files_removed += remove_orphans(dir, &keep)?;
            }
            let redone: Vec<usize> = state
                .in_flight
                .iter()
                .copied()
                .filter(|c| !committed.contains_key(c))
                .collect();
            report.recovery.resumed = true;
            report.recovery.chunks_reused = committed.len();
            report.recovery.chunks_redone = redone.len();
            if !committed.is_empty() {
                let mean =
                    committed.values().map(|c| c.seconds).sum::<f64>() / committed.len() as f64;
                report.recovery.time_lost_seconds += mean * redone.len() as f64;
            }
            run_dir.append(
                &ManifestEvent::Resume {
                    at_unix_ms: now_ms(),
                    committed: committed.len(),
                    redone,
                },
                true,
            )?;
            progress.on_event(&ProgressEvent::Phase(format!(
                "resuming: {} of {n} chunks already committed",
                committed.len()
            )));
        }
    }
    let staged: Arc<Vec<(Arc<SinkTarget>, PathBuf)>> =
        Arc::new(sinks.iter().cloned().zip(staging.iter().cloned()).collect());
    let run_dir = Arc::new(run_dir);

    let t = Instant::now();
    let known_rows: Option<u64> = chunk_plan.chunks.iter().map(|c| c.rows).sum();
    progress.on_event(&ProgressEvent::Phase("score".into()));
    progress.on_event(&ProgressEvent::ScoringStarted {
        chunks: n,
        rows: known_rows.or(Some(report.input_rows).filter(|r| *r > 0)),
    });
    for c in committed.values() {
        progress.on_event(&ProgressEvent::ChunkReused {
            chunk: c.chunk,
            rows: c.rows,
        });
    }
    let task_ctx = Arc::new(df.task_ctx());
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(prepared.partitions.max(1)));
    let policy = p.retry;
    let chunk_quarantine = prepared
        .quarantine
        .clone()
        .filter(|_| report.chunking == "source");
    if p.quarantine {
        report.quarantine_dir = Some(
            p.sinks[0]
                .path
                .join(RUN_DIR)
                .join(QUARANTINE_DIR)
                .display()
                .to_string(),
        );
    }
    let chunk_files = Arc::new(
        chunk_plan
            .chunks
            .iter()
            .map(|c| c.file.clone())
            .collect::<Vec<_>>(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for c in chunk_plan
        .chunks
        .iter()
        .filter(|c| !committed.contains_key(&c.id))
    {
        let job = ChunkJob {
            chunk: c.id,
            describe: c.describe(),
            plan: plan.clone(),
            chunk_files: chunk_files.clone(),
            task_ctx: task_ctx.clone(),
            sinks: staged.clone(),
            schema: schema.clone(),
            stop: stop.clone(),
            run_dir: run_dir.clone(),
            policy,
            progress: opts.progress.clone(),
            quarantine: chunk_quarantine.clone(),
        };
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let id = job.chunk;
            if job.stop.load(Ordering::Relaxed) {
                return (id, Err(None));
            }
            (id, job.run().await)
        });
    }
    let mut failures: Vec<PipelineError> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, Ok((entry, lost)))) => {
                progress.on_event(&ProgressEvent::ChunkDone {
                    chunk: id,
                    rows: entry.rows,
                    anomalies: entry.anomalies,
                });
                if entry.retries > 0 {
                    report.retries += entry.retries as u64;
                    report
                        .recovery
                        .retries
                        .insert(format!("chunk {id}"), entry.retries);
                }
                report.recovery.time_lost_seconds += lost;
                committed.insert(id, entry);
            }
            Ok((_, Err(None))) => {}
            Ok((_, Err(Some((e, lost))))) => {
                report.recovery.time_lost_seconds += lost;
                // Bad data stops the run; a chunk that kept failing on I/O does not stop the
                // others, so everything that can be committed is, and a resume redoes only it.
                if e.is_user_error() {
                    stop.store(true, Ordering::Relaxed);
                }
                if !matches!(&e, PipelineError::Chunk { message, .. } if message == CANCELLED) {
                    failures.push(e);
                }
            }
            Err(join) => {
                stop.store(true, Ordering::Relaxed);
                failures.push(PipelineError::Chunk {
                    chunk: 0,
                    range: "task".into(),
                    message: format!("a chunk task failed: {join}"),
                    user_error: false,
                    transient: false,
                });
            }
        }
    }
    if !failures.is_empty() {
        failures.sort_by_key(|e| match e {
            PipelineError::Chunk { chunk, .. } => *chunk,
            _ => usize::MAX,
        });
        let mut first = failures.remove(0);
        if !failures.is_empty()
            && let PipelineError::Chunk { message, .. } = &mut first
        {
            message.push_str(&format!(
                " ({} more chunk(s) failed: {})",
                failures.len(),
                failures
                    .iter()
                    .filter_map(|e| match e {
                        PipelineError::Chunk { chunk, .. } => Some(chunk.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Err(first);
    }
    for c in committed.values() {
        report.output_rows += c.rows;
        report.anomalies += c.anomalies;
        report.quarantined_rows += c.quarantined;
    }
    if p.detect.is_none() {
        report.input_rows = report.output_rows;
    }
    report.anomaly_rate = if report.output_rows > 0 {
        report.anomalies as f64 / report.output_rows as f64
    } else {
        0.0
    };
    report.steps.push(StepTiming {
        step: "score and write".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    for (i, s) in p.sinks.iter().enumerate() {
        let parts: Vec<&PartEntry> = committed
            .values()
            .flat_map(|c| c.parts.iter().filter(|w| w.sink == i))
            .collect();
        report.sinks.push(SinkReport {
            path: s.path.display().to_string(),
            format: s.format.extension().into(),
            files: parts.len(),
            rows: parts.iter().map(|w| w.rows).sum(),
            bytes: parts.iter().map(|w| w.bytes).sum(),
        });
    }
    check_consistency(p, &chunk_plan, &committed, report)?;

    progress.on_event(&ProgressEvent::Phase("validate".into()));
    let t = Instant::now();
    report.checks = run_checks(ctx, p, report).await?;
    report.steps.push(StepTiming {
        step: "validate".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    report.status = if report.checks.iter().all(|c| c.passed) {
        RunStatus::Succeeded
    } else {
        RunStatus::ValidationFailed
    };
    Ok(())
}

async fn run_checks(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    report: &RunReport,
) -> Result<Vec<CheckResult>> {
    let mut results = Vec::new();
    let mut output_registered = false;
    for (place, v) in &p.validations {
        match v {
            ValidateSpec::RowCount => results.push(CheckResult {
                check: "row_count".into(),
                passed: report.input_rows == report.output_rows,
                detail: format!(
                    "{} rows into detect, {} rows scored",
                    report.input_rows, report.output_rows
                ),
            }),
            ValidateSpec::AnomalyRate { min, max } => {
                let (lo, hi) = (min.unwrap_or(0.0), max.unwrap_or(1.0));
                results.push(CheckResult {
                    check: "anomaly_rate".into(),
                    passed: (lo..=hi).contains(&report.anomaly_rate),
                    detail: format!(
                        "rate {:.6} ({} of {} rows), allowed [{lo}, {hi}]",
                        report.anomaly_rate, report.anomalies, report.output_rows
                    ),
                });
            }
            ValidateSpec::Sql { name, sql } => {
                if !output_registered {
                    // `output` is the first sink's data, as written.
                    let s = &p.sinks[0];
                    let reader = SourceReader {
                        name: "output".into(),
                        path: s.path.display().to_string(),
                        location: format!("{}/", staging_dir(&s.path).display()),
                        format: s.format,
                        has_header: true,
                        delimiter: b',',
                    };
                    register_listing(ctx, &reader).await?;
                    output_registered = true;
                }
                let failing = ctx
                    .sql(sql)
                    .await
                    .map_err(|e| classify(format!("{place} '{name}'"), e))?
                    .collect()
                    .await
                    .map_err(|e| classify(format!("{place} '{name}'"), e))?;
                let rows: usize = failing.iter().map(|b| b.num_rows()).sum();
                let detail = if rows == 0 {
                    "no failing rows".to_string()
                } else {
                    let shown: Vec<RecordBatch> = failing
                        .iter()
                        .map(|b| b.slice(0, b.num_rows().min(5)))
                        .take(1)
                        .collect();
                    format!(
                        "{rows} failing rows, first ones:\n{}",
                        pretty_format_batches(&shown)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    )
                };
                results.push(CheckResult {
                    check: format!("sql: {name}"),
                    passed: rows == 0,
                    detail,
                });
            }
        }
    }
    Ok(results)
}

/// What `nomaly explain` prints: the chunk plan and the scoring plan (fitted on zero rows).
pub async fn explain(p: &CompiledPipeline) -> Result<String> {
    let prepared = prepare(p, &crate::progress::NoProgress).await?;
    let mut out = String::new();
    let c = &prepared.chunks;
    out.push_str(&format!(
        "pipeline {} ({}): {} chunks of source '{}' at chunk_rows = {}\n",
        p.name,
        p.file.path.display(),
        c.chunks.len(),
        c.source.name,
        p.chunk_rows
    ));
    for chunk in c.chunks.iter().take(20) {
        out.push_str(&format!(
            "  chunk {:>5}: {}{}\n",
            chunk.id,
            chunk.describe(),
            chunk
                .rows
                .map(|r| format!(" ({r} rows)"))
                .unwrap_or_default()
        ));
    }
    if c.chunks.len() > 20 {
        out.push_str(&format!("  ... {} more\n", c.chunks.len() - 20));
    }
    out.push_str(match p.engine {
        EngineKind::Local => "engine: local (DataFusion in this process)\n",
        EngineKind::Standalone => {
            "engine: standalone (Ballista in this process; the fit is one job, and each chunk one job running the plan below narrowed to that chunk's file group)\n"
        }
    });
    let mut report_stub = empty_report(p);
    let input = p
        .detect
        .as_ref()
        .map(|d| quote_ident(&d.input))
        .unwrap_or_else(|| quote_ident(&p.sources[0].name));
    let empty_input = format!("(SELECT * FROM {input} LIMIT 0)");
    if let Some(d) = &p.detect {
        out.push_str(&format!("\nfit:\n  {}\n", fit_sql(d, &input)));
    }
    // Plan against the real input so the chunk partitions show; the model is fitted on zero rows.
    if let Some(d) = &p.detect {
        let retry = FitRetry {
            policy: p.retry,
            parallel: 1,
        };
        fit_models(
            &prepared.ctx,
            d,
            &empty_input,
            &reads(p),
            &retry,
            &mut report_stub,
        )
        .await?;
    }
    let df = match &p.detect {
        Some(d) => prepared
            .ctx
            .sql(&score_sql(d, &input))
            .await
            .map_err(|e| classify(d.place.clone(), e))?,
        None => {
            scored_frame(&prepared.ctx, p, &input, &mut report_stub)
                .await?
                .0
        }
    };
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?;
    out.push_str(&format!(
        "\nscoring plan ({}):\n{}",
        if is_chunk_preserving(&plan, c) {
            "partition i = chunk i"
        } else {
            "steps mix rows across chunks: the detect input will be materialized once, then chunked"
        },
        datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
    ));
    Ok(out)
}

fn empty_report(p: &CompiledPipeline) -> RunReport {
    RunReport {
        pipeline: p.name.clone(),
        file: p.file.path.display().to_string(),
        status: RunStatus::DryRun,
        started_at_unix_ms: 0,
        seconds: 0.0,
        algorithm: p.detect.as_ref().map(|d| d.algorithm.name().to_string()),
        options: p.detect.as_ref().map(|d| d.options.clone()),
        input_rows: 0,
        output_rows: 0,
        anomalies: 0,
        anomaly_rate: 0.0,
        rows_with_missing_features: 0,
        quarantined_rows: 0,
        quarantine_dir: None,
        models: 0,
        chunks: 0,
        chunking: "source".into(),
        engine: p.engine.name().into(),
        ballista_jobs: 0,
        chunk_rows: p.chunk_rows,
        retries: 0,
        steps: vec![],
        sinks: vec![],
        checks: vec![],
        memory_limit_bytes: 0,
        peak_pool_bytes: 0,
        peak_rss_bytes: 0,
        spill_bytes: 0,
        warnings: vec![],
        error: None,
        run_dir: None,
        recovery: Default::default(),
    }
}

/// `nomaly validate`: everything short of running — sources readable, steps plan, detect columns
/// exist and are numeric, sinks writable, checks plan. Returns a summary.
pub async fn validate(p: &CompiledPipeline) -> Result<String> {
    let prepared = prepare(p, &crate::progress::NoProgress).await?;
    let input = p
        .detect
        .as_ref()
        .map(|d| quote_ident(&d.input))
        .unwrap_or_else(|| quote_ident(&p.sources[0].name));
    let empty = format!("(SELECT * FROM {input} LIMIT 0)");
    let mut stub = empty_report(p);
    let (df, _) = scored_frame(&prepared.ctx, p, &empty, &mut stub).await?;
    compile_sinks(&prepared.ctx, p, df.schema())?;
    for (place, v) in &p.validations {
        if let ValidateSpec::Sql { name, sql } = v {
            // Plan the check against an empty `output` of the scored schema.
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let empty_out = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])
                .map_err(|e| classify(place.clone(), e))?;
            let _ = prepared.ctx.deregister_table("output");
            prepared
                .ctx
                .register_table("output", Arc::new(empty_out))
                .map_err(|e| classify(place.clone(), e))?;
            prepared
                .ctx
                .sql(sql)
                .await
                .map_err(|e| classify(format!("{place} '{name}'"), e))?;
        }
    }
    let c = &prepared.chunks;
    Ok(format!(
        "{}: valid — {} source(s), {} step(s), {} chunk(s) of '{}'{}, {} sink(s), {} check(s)",
        p.file.path.display(),
        p.sources.len(),
        p.steps.len(),
        c.chunks.len(),
        c.source.name,
        p.detect
            .as_ref()
            .map(|d| format!(
                ", detect {} on {}",
                d.algorithm.name(),
                d.columns.join(", ")
            ))
            .unwrap_or_default(),
        p.sinks.len(),
        p.validations.len()
    ))
}

/// One chunk's work: score, write, commit to the manifest — retried on transient failures.
struct ChunkJob {
    chunk: usize,
    describe: String,
    plan: Arc<dyn ExecutionPlan>,
    /// The first file of every chunk, by id: picks the chunk scan out of the plan on Ballista.
    chunk_files: Arc<Vec<String>>,
    task_ctx: Arc<TaskContext>,
    sinks: Arc<Vec<(Arc<SinkTarget>, PathBuf)>>,
    schema: SchemaRef,
    stop: Arc<AtomicBool>,
    run_dir: Arc<RunDir>,
    policy: RetryPolicy,
    progress: Arc<dyn ProgressObserver>,
    /// Set when the chunk reads the quarantining source directly.
    quarantine: Option<Arc<QuarantineLog>>,
}

/// A chunk's failure (`None`: skipped because the run was stopping) and the seconds it cost.
type ChunkFailure = Option<(PipelineError, f64)>;

impl ChunkJob {
    async fn run(self) -> std::result::Result<(CommitEntry, f64), ChunkFailure> {
        let span = tracing::info_span!("chunk", chunk = self.chunk, range = %self.describe);
        self.run_attempts().instrument(span).await
    }

    async fn run_attempts(&self) -> std::result::Result<(CommitEntry, f64), ChunkFailure> {
        let start = ManifestEvent::Start {
            chunk: self.chunk,
            at_unix_ms: now_ms(),
        };
        if let Err(e) = self.run_dir.append(&start, false) {
            return Err(Some((e, 0.0)));
        }
        let mut attempts = Attempts::new(self.policy);
        loop {
            let t = Instant::now();
            let mut e = match self.attempt(attempts.retries, t).await {
                Ok(entry) => return Ok((entry, attempts.lost_seconds)),
                Err(e) => e,
            };
            let transient = e.is_transient() && !self.stop.load(Ordering::Relaxed);
            match attempts.retry_after(&e.user_message(), transient, t) {
                Some(wait) => {
                    if let Some(w) = attempts.warnings.last() {
                        self.progress.on_event(&ProgressEvent::Warning(w.clone()));
                    }
                    tokio::time::sleep(wait).await;
                }
                None => {
                    if let PipelineError::Chunk { message, .. } = &mut e
                        && attempts.retries > 0
                    {
                        message.push_str(&format!(
                            " (gave up after {} retries; the other chunks' output is kept — fix the cause and run `nomaly resume`)",
                            attempts.retries
                        ));
                    }
                    return Err(Some((e, attempts.lost_seconds)));
                }
            }
        }
    }

    /// Partition `chunk` of the scoring plan: executed here, or on Ballista as a job of its own
    /// (the plan narrowed to the chunk's file group).
    async fn execute(&self) -> DfResult<SendableRecordBatchStream> {
        let Some(cluster) = cluster_of(self.task_ctx.session_config()) else {
            return self.plan.execute(self.chunk, self.task_ctx.clone());
        };
        let files = &self.chunk_files;
        let is_chunk_scan = |config: &FileScanConfig| {
            config.file_groups.len() == files.len()
                && config.file_groups.iter().zip(files.iter()).all(|(g, f)| {
                    g.files()
                        .first()
                        .is_some_and(|pf| pf.object_meta.location.as_ref() == f)
                })
        };
        let one = narrow_to_partition(self.plan.clone(), self.chunk, is_chunk_scan)?;
        cluster.execute(one).await
    }

    /// Executes partition `chunk` of the scoring plan and writes it to every sink's part files.
    async fn score(&self) -> Result<ChunkOutcome> {
        let (chunk, describe, schema) = (self.chunk, &self.describe, &self.schema);
        // A sink that cannot write (disk, permissions, an injected fault) may work on a retry; a
        // bad `where` cannot.
        let write_error = |e: PipelineError| match e {
            PipelineError::Invalid { .. } => e,
            other => PipelineError::Chunk {
                chunk,
                range: describe.clone(),
                message: other.user_message(),
                user_error: false,
                transient: true,
            },
        };
        let mut stream = self
            .execute()
            .await
            .map_err(|e| chunk_error(chunk, describe, e))?;
        let mut writers = self
            .sinks
            .iter()
            .map(|(t, staging)| ChunkWriter::new(t.clone(), staging.clone(), chunk, schema.clone()))
            .collect::<Result<Vec<_>>>()?;
        let score_idx = schema.index_of("anomaly_score").ok();
        let flag_idx = schema.index_of("is_anomaly").ok();
        let mut out = ChunkOutcome::default();
        while let Some(batch) = stream.next().await {
            if self.stop.load(Ordering::Relaxed) {
                return Err(PipelineError::Chunk {
                    chunk,
                    range: describe.clone(),
                    message: CANCELLED.into(),
                    user_error: false,
                    transient: false,
                });
            }
            let batch: RecordBatch = batch.map_err(|e| chunk_error(chunk, describe, e))?;
            out.rows += batch.num_rows() as u64;
            if let Some(i) = flag_idx {
                let flags = batch.column(i).as_boolean();
                out.anomalies += flags.true_count() as u64;
            }
            if let Some(i) = score_idx {
                out.missing += batch.column(i).null_count() as u64;
            }
            for w in writers.iter_mut() {
                w.write(&batch).map_err(write_error)?;
            }
        }
        if let Some(log) = &self.quarantine {
            let found = log.get(chunk);
            out.quarantined =
                write_quarantine(&self.run_dir.path, chunk, &found.bad).map_err(write_error)?;
            out.source_lines = Some(found.lines);
        }
        for (s, w) in writers.into_iter().enumerate() {
            for part in w.commit().map_err(write_error)? {
                out.parts.push((s, part));
            }
        }
        Ok(out)
    }

    async fn attempt(&self, retries: u32, started: Instant) -> Result<CommitEntry> {
        let o = self.score().await?;
        let parts = o
            .parts
            .iter()
            .map(|(s, w)| {
                let staging = &self.sinks[*s].1;
                let rel = w.path.strip_prefix(staging).unwrap_or(&w.path);
                PartEntry {
                    sink: *s,
                    path: rel.to_string_lossy().replace('\\', "/"),
                    rows: w.rows,
                    bytes: w.bytes,
                    crc32: w.crc32,
                }
            })
            .collect();
        let entry = CommitEntry {
            chunk: self.chunk,
            range: self.describe.clone(),
            rows: o.rows,
            anomalies: o.anomalies,
            missing: o.missing,
            retries,
            seconds: started.elapsed().as_secs_f64(),
            committed_at_unix_ms: now_ms(),
            parts,
            quarantined: o.quarantined,
            source_lines: o.source_lines,
        };
        // The chunk is done only once this line is on disk.
        self.run_dir
            .append(&ManifestEvent::Commit(entry.clone()), true)?;
        Ok(entry)
    }
}

/// Row groups of at most `chunk_rows` (chunks are runs of whole row groups) and at most 128Ki
/// rows: the writer, and later each chunk's reader, hold one row group outside the memory pool.
fn work_file_options(chunk_rows: u64) -> datafusion::config::TableParquetOptions {
    let mut o = datafusion::config::TableParquetOptions::default();
    o.global.max_row_group_size = (chunk_rows as usize).min(128 * 1024);
    // The parallel row-group encoder buffers whole row groups outside the memory pool.
    o.global.allow_single_file_parallelism = false;
    o
}

/// Chunks the materialized detect input in `work` and registers it as the staged input table.
async fn chunk_materialized(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    work: &std::path::Path,
) -> Result<ChunkPlan> {
    let staged = SourceReader {
        name: STAGED_INPUT.into(),
        path: work.display().to_string(),
        location: format!("{}/", work.display()),
        format: FileFormat::Parquet,
        has_header: true,
        delimiter: b',',
    };
    let plan = plan_chunks(ctx, &staged, p.chunk_rows).await?;
    let _ = ctx.deregister_table(STAGED_INPUT);
    ctx.register_table(STAGED_INPUT, Arc::new(ChunkTable::new(plan.clone())))
        .map_err(|e| classify("materialized input".into(), e))?;
    Ok(plan)
}

/// True when `dir` holds a recorded run that did not complete.
fn is_unfinished(run_dir: &RunDir) -> bool {
    run_dir.exists() && !run_dir.read_manifest().map(|m| m.complete).unwrap_or(false)
}

fn unfinished_run(p: &CompiledPipeline, run_dir: &RunDir, committed: usize) -> PipelineError {
    let chunks = run_dir.read_record().map_or(0, |r| r.chunks.len());
    PipelineError::UnfinishedRun {
        output: p.sinks[0].path.clone(),
        run_dir: run_dir.path.clone(),
        committed,
        chunks,
        file: p.file.path.clone(),
    }
}

/// The end-of-run check: every chunk committed, rows in = rows out in total, and per chunk where
/// the chunk's rows are known before reading (Parquet row groups of the detect input itself).
fn check_consistency(
    p: &CompiledPipeline,
    chunks: &ChunkPlan,
    committed: &BTreeMap<usize, CommitEntry>,
    report: &RunReport,
) -> Result<()> {
    let fail = |chunk: usize, message: String| PipelineError::Chunk {
        chunk,
        range: "consistency check".into(),
        message,
        user_error: false,
        transient: false,
    };
    if let Some(c) = chunks
        .chunks
        .iter()
        .find(|c| !committed.contains_key(&c.id))
    {
        return Err(fail(c.id, "has no committed output".into()));
    }
    if p.detect.is_some() && report.output_rows != report.input_rows {
        return Err(fail(
            0,
            format!(
                "the fit read {} rows but the chunks wrote {} rows; the run is not marked complete",
                report.input_rows, report.output_rows
            ),
        ));
    }
    let reads_source_directly = report.chunking == "materialized"
        || p.detect
            .as_ref()
            .map(|d| d.input.as_str())
            .unwrap_or_else(|| {
                p.steps
                    .last()
                    .map(|s| s.name.as_str())
                    .unwrap_or(p.sources[0].name.as_str())
            })
            == p.sources[0].name;
    if reads_source_directly {
        for c in committed.values() {
            if let Some(lines) = c.source_lines
                && lines != c.rows + c.quarantined
            {
                return Err(fail(
                    c.chunk,
                    format!(
                        "held {lines} lines but {} rows were written and {} quarantined",
                        c.rows, c.quarantined
                    ),
                ));
            }
        }
        for c in &chunks.chunks {
            if let (Some(expected), Some(got)) = (c.rows, committed.get(&c.id))
                && got.rows != expected
            {
                return Err(fail(
                    c.id,
                    format!("holds {expected} input rows but {} were written", got.rows),
                ));
            }
        }
    }
    Ok(())
}

/// Removes what a failed run wrote unless a resume can use it (some chunk is committed).
fn discard_unless_resumable(p: &CompiledPipeline) -> bool {
    let run_dir = RunDir::at(&staging_dir(&p.sinks[0].path));
    // A manifest that cannot be read is kept for a person to look at (or --restart).
    let resumable = run_dir.exists()
        && run_dir
            .read_manifest()
            .map(|m| !m.commits.is_empty())
            .unwrap_or(true);
    if !resumable {
        for s in &p.sinks {
            let _ = std::fs::remove_dir_all(staging_dir(&s.path));
        }
        let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "work"));
        let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "hdf5"));
    }
    resumable
}

/// Finishes publishing a run that completed (its reports written, `complete` in the manifest)
/// but was killed while renaming its staging directories into place. Returns true if it did.
pub fn publish_interrupted(p: &CompiledPipeline) -> Result<bool> {
    let Some(first) = p.sinks.first() else {
        return Ok(false);
    };
    let staging = staging_dir(&first.path);
    let run_dir = RunDir::at(&staging);
    if !run_dir.exists() || !run_dir.read_manifest().map(|m| m.complete).unwrap_or(false) {
        return Ok(false);
    }
    let succeeded = std::fs::read(staging.join(REPORT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|r| r["status"] == "succeeded");
    if !succeeded {
        return Ok(false);
    }
    for s in &p.sinks {
        if staging_dir(&s.path).is_dir() {
            sink_target(s, None).publish()?;
        }
    }
    Ok(true)
}

/// The report of a completed, published run of this same pipeline on this same input, if the
/// output holds one (`nomaly resume` on a finished run prints it and exits 0).
pub async fn completed_run(p: &CompiledPipeline) -> Result<Option<String>> {
    let Some(first) = p.sinks.first() else {
        return Ok(None);
    };
    publish_interrupted(p)?;
    let run_dir = RunDir::at(&first.path);
    if !run_dir.exists() || is_unfinished(&RunDir::at(&staging_dir(&first.path))) {
        return Ok(None);
    }
    let manifest = run_dir.read_manifest()?;
    let record = run_dir.read_record()?;
    if !manifest.complete || pipeline_change(&run_dir.read_pipeline_text()?, &p.file.spec).is_some()
    {
        return Ok(None);
    }
    let ctx = SessionContext::new();
    register_stores(&ctx, p)?;
    if fingerprint_change(&record.sources, &fingerprint(&ctx, &p.sources).await?).is_some() {
        return Ok(None);
    }
    Ok(std::fs::read_to_string(first.path.join(REPORT_FILE)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nomaly_detectors::Algorithm;

    fn detect(partition_by: Vec<String>, explain: bool) -> Detect {
        Detect {
            algorithm: Algorithm::ZScore,
            columns: vec!["amount".into(), "lat\"ency".into()],
            options: "contamination=0.05".into(),
            input: "tx".into(),
            partition_by,
            explain,
            place: "p.toml".into(),
        }
    }

    #[test]
    fn generated_sql_quotes_names() {
        let d = detect(vec!["merchant".into()], false);
        assert_eq!(
            fit_sql(&d, "\"tx\""),
            "SELECT \"merchant\" AS \"__nomaly_k0\", fit_detector('zscore', \"amount\", \"lat\"\"ency\", 'contamination=0.05') AS model FROM \"tx\" GROUP BY \"__nomaly_k0\""
        );
        let s = score_sql(&d, "\"tx\"");
        assert!(
            s.contains("ON i.\"merchant\" IS NOT DISTINCT FROM m.\"__nomaly_k0\""),
            "{s}"
        );
        assert!(score_sql(&detect(vec![], true), "t").contains("anomaly_explain(m.model"));
    }
}
