//! Running a pipeline: register → steps → fit once → score chunk by chunk → check → publish → notify.
//!
//! The detect step is the same plan the SQL functions build: `fit_detector` as an aggregate over
//! the detect input, then `anomaly_detect(model, ...)` with the one-row model table as the build
//! side of a cross join (a join on the segment keys with `partition_by`). The chunked source's scan
//! has one partition per chunk; when the steps keep rows within their partition (filters,
//! projections, joins against broadcast lookups) partition `i` of the scoring plan *is* chunk `i`
//! and is executed and written on its own. Otherwise the detect input is written once to a work
//! directory and that is chunked ("materialized").

use crate::chunks::{ChunkPlan, ChunkTable, SourceReader, plan_chunks};
use crate::compile::{CompiledPipeline, Detect};
use crate::error::{PipelineError, Result};
use crate::notify::notify_all;
use crate::progress::{ProgressEvent, ProgressObserver};
use crate::report::{CheckResult, RunReport, RunStatus, SinkReport, StepTiming, peak_rss_bytes};
use crate::sink::{
    ChunkWriter, REPORT_FILE, SinkTarget, WrittenPart, sibling_dir, staging_dir, write_atomic,
};
use crate::spec::{FileFormat, ValidateSpec};
use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::DFSchema;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use nomaly_engine::{EngineConfig, EngineError, EngineKind, build_context};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name of the fitted-models table in a run's session.
const MODELS: &str = "__nomaly_models";
/// Name of a materialized detect input.
const STAGED_INPUT: &str = "__nomaly_detect_input";

/// How to run.
pub struct RunOptions {
    /// Plan and run every step on zero rows; write nothing.
    pub dry_run: bool,
    pub progress: Arc<dyn ProgressObserver>,
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
    let config = EngineConfig {
        engine: EngineKind::Local,
        target_partitions: p.cpus,
        memory_limit: p.memory_limit,
        spill_dir: None,
        batch_size: 8192,
    };
    let ctx = build_context(&config)
        .await
        .map_err(|e| PipelineError::engine(p.file.path.display().to_string(), e))?;
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
    let first = &p.sources[0];
    let chunks = plan_chunks(&ctx, first, p.chunk_rows).await?;
    for w in &chunks.warnings {
        progress.on_event(&ProgressEvent::Warning(w.clone()));
    }
    ctx.register_table(&first.name, Arc::new(ChunkTable::new(chunks.clone())))
        .map_err(|e| classify(format!("source '{}'", first.name), e))?;
    for s in &p.sources[1..] {
        register_listing(&ctx, s).await?;
    }
    timings.push(StepTiming {
        step: "sources".into(),
        seconds: started.elapsed().as_secs_f64(),
    });
    for step in &p.steps {
        let t = Instant::now();
        let df = ctx
            .sql(&step.sql)
            .await
            .map_err(|e| classify(format!("{} (step '{}')", step.place, step.name), e))?;
        ctx.register_table(&step.name, df.into_view())
            .map_err(|e| classify(step.place.clone(), e))?;
        timings.push(StepTiming {
            step: format!("step {}", step.name),
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    if let Some(d) = &p.detect {
        check_detect_columns(&ctx, d, &reads(p)).await?;
    }
    Ok(PreparedSession {
        ctx,
        chunks,
        memory_limit: config.memory_budget(),
        partitions: config.partitions(),
        timings,
    })
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

async fn check_detect_columns(ctx: &SessionContext, d: &Detect, reads: &str) -> Result<()> {
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
                    "column '{c}' of '{}' is {}, not numeric; detectors take numeric columns — cast it in a [[step]] (e.g. CAST({c} AS DOUBLE)) or drop it from columns",
                    d.input,
                    field.data_type()
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
) -> Result<(u64, u64, usize)> {
    let fit = ctx
        .sql(&fit_sql(d, input))
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    // The plan's schema, not the first batch's: an empty input has no batches.
    let schema: SchemaRef = Arc::new(fit.schema().as_arrow().clone());
    let batches = fit.collect().await.map_err(|e| {
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
    let _ = ctx.deregister_table(MODELS);
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
        .map_err(|e| classify(d.place.clone(), e))?;
    ctx.register_table(MODELS, Arc::new(table))
        .map_err(|e| classify(d.place.clone(), e))?;
    Ok((rows, skipped, models))
}

fn runtime(e: PipelineError) -> PipelineError {
    // Keep the message; a failed read or write of the run itself is not the input's fault.
    match e {
        PipelineError::Engine { place, source } if source.is_user_error() => PipelineError::Chunk {
            chunk: 0,
            range: "fit".into(),
            message: format!("{place}: {}", source.user_message()),
            user_error: false,
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

/// Counts of one committed chunk.
#[derive(Debug, Clone, Default)]
struct ChunkOutcome {
    rows: u64,
    anomalies: u64,
    missing: u64,
    parts: Vec<(usize, WrittenPart)>,
}

#[allow(clippy::too_many_arguments)]
async fn score_chunk(
    chunk: usize,
    describe: String,
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    sinks: Arc<Vec<(Arc<SinkTarget>, PathBuf)>>,
    schema: SchemaRef,
    stop: Arc<AtomicBool>,
) -> Result<ChunkOutcome> {
    let fail = |message: String, user_error: bool| PipelineError::Chunk {
        chunk,
        range: describe.clone(),
        message,
        user_error,
    };
    let mut stream = plan
        .execute(chunk, task_ctx)
        .map_err(|e| fail(EngineError::DataFusion(e).user_message(), false))?;
    let mut writers = sinks
        .iter()
        .map(|(t, staging)| ChunkWriter::new(t.clone(), staging.clone(), chunk, schema.clone()))
        .collect::<Result<Vec<_>>>()?;
    let score_idx = schema.index_of("anomaly_score").ok();
    let flag_idx = schema.index_of("is_anomaly").ok();
    let mut out = ChunkOutcome::default();
    while let Some(batch) = stream.next().await {
        if stop.load(Ordering::Relaxed) {
            return Err(fail("cancelled after another chunk failed".into(), false));
        }
        let batch: RecordBatch = batch.map_err(|e| {
            let user = nomaly_engine::error::is_user_datafusion_error(&e);
            fail(EngineError::DataFusion(e).user_message(), user)
        })?;
        out.rows += batch.num_rows() as u64;
        if let Some(i) = flag_idx {
            let flags = batch.column(i).as_boolean();
            out.anomalies += flags.true_count() as u64;
        }
        if let Some(i) = score_idx {
            out.missing += batch.column(i).null_count() as u64;
        }
        for w in writers.iter_mut() {
            w.write(&batch)?;
        }
    }
    for (s, w) in writers.into_iter().enumerate() {
        for part in w.commit()? {
            out.parts.push((s, part));
        }
    }
    Ok(out)
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
                for s in &p.sinks {
                    let _ = std::fs::remove_dir_all(staging_dir(&s.path));
                }
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
    let prepared = prepare(p, progress).await.map_err(|e| (e, None))?;
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
    report.seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "work"));
    match result {
        Ok(()) => {
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
            for s in &p.sinks {
                let _ = std::fs::remove_dir_all(staging_dir(&s.path));
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
) -> Result<DataFrame> {
    match &p.detect {
        Some(d) => {
            let t = Instant::now();
            let (rows, missing, models) = fit_models(ctx, d, input, &reads(p)).await?;
            report.input_rows = rows;
            report.rows_with_missing_features = missing;
            report.models = models;
            report.steps.push(StepTiming {
                step: "fit".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            ctx.sql(&score_sql(d, input))
                .await
                .map_err(|e| classify(d.place.clone(), e))
        }
        None => ctx
            .sql(&format!("SELECT * FROM {input}"))
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e)),
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
        let df = scored_frame(ctx, p, &empty, report).await?;
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

    progress.on_event(&ProgressEvent::Phase("fit".into()));
    let mut chunk_plan = prepared.chunks.clone();
    let mut df = scored_frame(ctx, p, &input, report).await?;
    if let Some(d) = &p.detect
        && report.input_rows == 0
    {
        return Err(empty_input(d, &reads(p)));
    }
    let mut plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?;
    if !is_chunk_preserving(&plan, &chunk_plan) {
        // The steps mix rows across chunks (aggregates, sorts, unions, partitioned joins): write the
        // detect input once and chunk that.
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
        ctx.sql(&format!("SELECT * FROM {input}"))
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e))?
            .write_parquet(
                &format!("{}/", work.display()),
                DataFrameWriteOptions::new(),
                None,
            )
            .await
            .map_err(|e| {
                let user = nomaly_engine::error::is_user_datafusion_error(&e);
                let err = classify("materializing the detect input".into(), e);
                if user { err } else { runtime(err) }
            })?;
        let staged = SourceReader {
            name: STAGED_INPUT.into(),
            path: work.display().to_string(),
            location: format!("{}/", work.display()),
            format: FileFormat::Parquet,
            has_header: true,
            delimiter: b',',
        };
        chunk_plan = plan_chunks(ctx, &staged, p.chunk_rows).await?;
        let _ = ctx.deregister_table(STAGED_INPUT);
        ctx.register_table(STAGED_INPUT, Arc::new(ChunkTable::new(chunk_plan.clone())))
            .map_err(|e| classify("materialized input".into(), e))?;
        input = STAGED_INPUT.to_string();
        report.chunking = "materialized".into();
        report.chunks = chunk_plan.chunks.len();
        report.steps.push(StepTiming {
            step: "materialize".into(),
            seconds: t.elapsed().as_secs_f64(),
        });
        let fit_time = report.steps.iter().position(|s| s.step == "fit");
        if let Some(i) = fit_time {
            report.steps.remove(i);
        }
        df = scored_frame(ctx, p, &input, report).await?;
        plan = df
            .clone()
            .create_physical_plan()
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e))?;
        if !is_chunk_preserving(&plan, &chunk_plan) {
            return Err(PipelineError::Chunk {
                chunk: 0,
                range: "plan".into(),
                message: format!(
                    "the scoring plan does not keep chunks apart even over the materialized input; plan:\n{}",
                    datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
                ),
                user_error: false,
            });
        }
    }
    let sinks = compile_sinks(ctx, p, df.schema())?;
    let staged: Vec<(Arc<SinkTarget>, PathBuf)> = sinks
        .iter()
        .map(|s| Ok((s.clone(), s.prepare_staging()?)))
        .collect::<Result<_>>()?;
    let staged = Arc::new(staged);

    let t = Instant::now();
    let n = chunk_plan.chunks.len();
    let known_rows: Option<u64> = chunk_plan.chunks.iter().map(|c| c.rows).sum();
    progress.on_event(&ProgressEvent::Phase("score".into()));
    progress.on_event(&ProgressEvent::ScoringStarted {
        chunks: n,
        rows: known_rows.or(Some(report.input_rows).filter(|r| *r > 0)),
    });
    let task_ctx = Arc::new(df.task_ctx());
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(prepared.partitions.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for c in &chunk_plan.chunks {
        let (plan, task_ctx, staged, schema, stop, limit) = (
            plan.clone(),
            task_ctx.clone(),
            staged.clone(),
            schema.clone(),
            stop.clone(),
            limit.clone(),
        );
        let (id, describe) = (c.id, c.describe());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            if stop.load(Ordering::Relaxed) {
                return (id, Ok(ChunkOutcome::default()));
            }
            let r = score_chunk(id, describe, plan, task_ctx, staged, schema, stop).await;
            (id, r)
        });
    }
    let mut outcomes: Vec<(usize, ChunkOutcome)> = Vec::with_capacity(n);
    let mut first_error: Option<PipelineError> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, Ok(o))) => {
                progress.on_event(&ProgressEvent::ChunkDone {
                    chunk: id,
                    rows: o.rows,
                    anomalies: o.anomalies,
                });
                outcomes.push((id, o));
            }
            Ok((_, Err(e))) => {
                stop.store(true, Ordering::Relaxed);
                // The first real failure wins over the cancellations it caused.
                let cancelled = matches!(&e, PipelineError::Chunk { message, .. } if message.starts_with("cancelled"));
                if first_error.is_none()
                    || (!cancelled
                        && matches!(&first_error, Some(PipelineError::Chunk { message, .. }) if message.starts_with("cancelled")))
                {
                    first_error = Some(e);
                }
            }
            Err(join) => {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(PipelineError::Chunk {
                    chunk: 0,
                    range: "task".into(),
                    message: format!("a chunk task failed: {join}"),
                    user_error: false,
                });
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    outcomes.sort_by_key(|o| o.0);
    for (_, o) in &outcomes {
        report.output_rows += o.rows;
        report.anomalies += o.anomalies;
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
        let parts: Vec<&WrittenPart> = outcomes
            .iter()
            .flat_map(|(_, o)| o.parts.iter().filter(|(si, _)| *si == i).map(|(_, w)| w))
            .collect();
        report.sinks.push(SinkReport {
            path: s.path.display().to_string(),
            format: s.format.extension().into(),
            files: parts.len(),
            rows: parts.iter().map(|w| w.rows).sum(),
            bytes: parts.iter().map(|w| w.bytes).sum(),
        });
    }

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
        fit_models(&prepared.ctx, d, &empty_input, &reads(p)).await?;
    }
    let df = match &p.detect {
        Some(d) => prepared
            .ctx
            .sql(&score_sql(d, &input))
            .await
            .map_err(|e| classify(d.place.clone(), e))?,
        None => scored_frame(&prepared.ctx, p, &input, &mut report_stub).await?,
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
        models: 0,
        chunks: 0,
        chunking: "source".into(),
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
    let df = scored_frame(&prepared.ctx, p, &empty, &mut stub).await?;
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
