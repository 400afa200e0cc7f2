//! Session preparation: the engine session with its memory budget and object stores, the first
//! source registered as chunks, the other sources as listings, the `[[step]]` views, and for
//! `engine = "standalone"` the Ballista cluster the run submits its jobs to.

use super::classify;
use super::preflight::check_detect_columns;
use crate::chunk_plan::{ChunkPlan, ChunkTable, SourceReader, plan_chunks};
use crate::codec::physical_codec;
use crate::compile::{CompiledPipeline, query_options};
use crate::error::{PipelineError, Result};
use crate::events::{RunEvent, RunObserver};
use crate::faults::FaultPlan;
use crate::quarantine::QuarantineLog;
use crate::report::StepTiming;
use crate::spec::FileFormat;
use ballista_core::extension::SessionConfigExt;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::prelude::{SessionConfig, SessionContext};
use nomaly_engine::{ClusterClient, EngineConfig, EngineKind, build_context};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A session with the pipeline's sources and steps registered.
pub struct PreparedSession {
    pub ctx: SessionContext,
    /// Bad lines of the chunked source, under `on_bad_rows = "quarantine"`.
    pub quarantine: Option<Arc<QuarantineLog>>,
    pub chunks: ChunkPlan,
    /// The budget and how it is shared: process, reader buffers, operator pool.
    pub memory: nomaly_engine::BudgetSplit,
    pub partitions: usize,
    pub timings: Vec<StepTiming>,
}

/// Builds the session and registers sources (the first as chunks) and steps. `faults` replaces
/// the local file store with one that fails reads (recovery tests).
pub async fn prepare(
    p: &CompiledPipeline,
    observer: &dyn RunObserver,
    faults: Option<Arc<FaultPlan>>,
) -> Result<PreparedSession> {
    let mut config = EngineConfig {
        engine: EngineKind::Local,
        target_partitions: p.cpus,
        memory_limit: p.memory_limit,
        reader_buffers: 0,
        spill_dir: None,
        batch_size: 8192,
        // Chunk jobs run partitions of a plan one by one (or narrowed, on Ballista): a fused fit
        // would span all of them.
        one_pass: false,
    };
    // The budget is the process's: Parquet readers hold row groups DataFusion does not count, so
    // the pool is what is left after them and the process's own footprint (budget.rs).
    let local: Vec<&str> = p
        .sources
        .iter()
        .filter(|s| s.format == FileFormat::Parquet)
        .map(|s| s.location.as_str())
        .collect();
    config.reader_buffers = nomaly_engine::parquet_read_buffers(&local, config.partitions());
    let split = config.budget_split();
    tracing::info!(pipeline = %p.name, "{}", split.describe());
    if let Some(w) = split.shortfall() {
        observer.on_event(&RunEvent::Warning(w));
    }
    let ctx = build_context(&config)
        .await
        .map_err(|e| PipelineError::engine(p.file.path.display().to_string(), e))?;
    if let Some(plan) = faults {
        let local = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        let store = crate::faults::FaultyStore::new(
            Arc::new(datafusion::object_store::local::LocalFileSystem::new()),
            plan,
        );
        ctx.register_object_store(local.as_ref(), Arc::new(store));
    }
    register_stores(&ctx, p)?;
    keep_partitions_as_chunks(&ctx).await?;
    let started = Instant::now();
    observer.on_event(&RunEvent::Phase("reading sources".into()));
    let (chunks, quarantine) = register_chunked_source(&ctx, p).await?;
    for s in &p.sources[1..] {
        register_listing(&ctx, &readable_source(p, s)?).await?;
    }
    let mut timings = vec![StepTiming {
        step: "sources".into(),
        seconds: started.elapsed().as_secs_f64(),
    }];
    timings.extend(register_steps(&ctx, p).await?);
    if let Some(d) = &p.detect {
        let text_input = matches!(p.sources[0].format, FileFormat::Csv | FileFormat::Ndjson);
        check_detect_columns(&ctx, d, &super::preflight::reads(p), text_input).await?;
    }
    Ok(PreparedSession {
        ctx,
        quarantine,
        chunks,
        memory: split,
        partitions: config.partitions(),
        timings,
    })
}

/// Partition i of a scan must stay chunk i: no re-splitting of file groups, no round-robin.
async fn keep_partitions_as_chunks(ctx: &SessionContext) -> Result<()> {
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
    Ok(())
}

/// Registers the first source as a table of chunks (one scan partition per chunk), reading bad
/// lines aside under `on_bad_rows = "quarantine"`.
async fn register_chunked_source(
    ctx: &SessionContext,
    p: &CompiledPipeline,
) -> Result<(ChunkPlan, Option<Arc<QuarantineLog>>)> {
    let first = &readable_source(p, &p.sources[0])?;
    let mut chunks = plan_chunks(ctx, first, p.chunk_rows, p.chunk_rows_set()).await?;
    if !chunks.unsliced.is_empty() {
        tracing::info!(
            pipeline = %p.name,
            files = ?chunks.unsliced,
            "row groups larger than chunk_rows = {} kept whole: these files have no page index \
             (set run.chunk_rows to slice them anyway)",
            p.chunk_rows
        );
    }
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
    let quarantine = p.quarantine.then(|| Arc::new(QuarantineLog::default()));
    let table = match &quarantine {
        Some(log) => ChunkTable::with_quarantine(chunks.clone(), log.clone()),
        None => ChunkTable::new(chunks.clone()),
    };
    ctx.register_table(&first.name, Arc::new(table))
        .map_err(|e| classify(format!("source '{}'", first.name), e))?;
    Ok((chunks, quarantine))
}

/// For `engine = "standalone"`: starts the Ballista scheduler and executor a run submits its jobs
/// to; for `engine = "ballista://host:port"`: connects to that cluster's scheduler (`validate` and
/// `explain` need neither). A standalone cluster is built from the prepared session, so its
/// executor shares the session's runtime (memory pool, object stores); jobs find the cluster in
/// the session config (see [`cluster_of`]).
pub(super) async fn start_cluster(
    p: &CompiledPipeline,
    prepared: &PreparedSession,
    scope: &super::RunScope<'_>,
) -> Result<()> {
    let ctx = &prepared.ctx;
    if p.engine == EngineKind::Local {
        return Ok(());
    }
    {
        // Chunk jobs end in PartWriteExec: the plans are encoded (and, in process, decoded) with
        // the codec that knows it. Cluster processes have it from `nomaly scheduler`/`executor`.
        let state = ctx.state_ref();
        let mut state = state.write();
        let config = std::mem::take(state.config_mut());
        *state.config_mut() = config.with_ballista_physical_extension_codec(physical_codec());
    }
    let cluster = match &p.engine {
        EngineKind::Local => unreachable!("returned above"),
        EngineKind::Standalone => {
            scope.emit(RunEvent::Phase("starting Ballista".into()));
            ClusterClient::start(&ctx.state(), prepared.partitions).await
        }
        EngineKind::Cluster(address) => {
            scope.emit(RunEvent::Phase(format!(
                "connecting to ballista://{address}"
            )));
            ClusterClient::connect(address, &ctx.state()).await
        }
    }
    .map_err(|e| PipelineError::engine(format!("engine = \"{}\"", p.engine), e))?;
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(cluster));
    Ok(())
}

/// The Ballista cluster the session runs jobs on (`standalone` or `ballista://`), if any.
pub(super) fn cluster_of(config: &SessionConfig) -> Option<Arc<ClusterClient>> {
    config.get_extension::<ClusterClient>()
}

/// Registers the object store of every remote source (s3://, gs://, az://, http(s)://).
pub(crate) fn register_stores(ctx: &SessionContext, p: &CompiledPipeline) -> Result<()> {
    if p.sandbox.is_confined() {
        // Listings and reads of local files: a file that leads out of the roots is refused.
        let file = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        let store =
            nomaly_engine::confined_store::ConfinedLocalStore::new(p.sandbox.roots().to_vec());
        ctx.register_object_store(file.as_ref(), Arc::new(store));
    }
    for s in &p.sources {
        nomaly_engine::register_object_store(ctx, &s.location)
            .map_err(|e| PipelineError::engine(format!("source '{}' ({})", s.name, s.path), e))?;
    }
    Ok(())
}

/// Registers the `[[step]]` views in order (replacing earlier registrations of the same names).
pub(super) async fn register_steps(
    ctx: &SessionContext,
    p: &CompiledPipeline,
) -> Result<Vec<StepTiming>> {
    let mut timings = Vec::new();
    for step in &p.steps {
        let t = Instant::now();
        let df = ctx
            .sql_with_options(&step.sql, query_options())
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
        crate::hdf5_source::convert(
            s,
            &crate::sink_writer::sibling_dir(&p.sinks[0].path, "hdf5"),
            p.chunk_rows,
        )
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

/// Registers a source read whole (every file of its path or glob) as a listing table.
pub(super) async fn register_listing(ctx: &SessionContext, s: &SourceReader) -> Result<()> {
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
