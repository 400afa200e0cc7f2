//! `nomaly sql`: run statements and print or write their results.
//!
//! Contract (scripts depend on it): results go to stdout, errors to stderr; exit code 2 for bad input
//! or SQL, 1 for runtime failures; `--format csv` prints a header line then rows. Without `-e`/`-f`
//! the statements come from stdin, or, on a terminal, from an interactive prompt ([`crate::repl`]).

use crate::output::{OutputFormat, print_batches, write_output};
use crate::query_progress::QueryProgress;
use clap::Args;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use nomaly_engine::{
    EngineConfig, EngineError, EngineKind, build_context, parse_byte_size, parse_table_spec,
    register_table,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(
    after_help = "Without -e or -f, statements are read from stdin; on a terminal an interactive prompt opens\n(statements end with ';' and may span lines; history in ~/.local/state/nomaly/history; \\q quits).\n\nExamples:\n  nomaly sql -f examples/quickstart.sql\n  nomaly sql --table tx=tx.parquet          (interactive)\n  echo \"SELECT count(*) FROM tx;\" | nomaly sql --table tx=tx.parquet\n  nomaly sql --table tx=data/tx/*.parquet --format csv \\\n      -e \"SELECT id, detect_anomalies('iforest', amount, latency_ms)['score'] AS s FROM tx\"\n  nomaly sql --engine standalone --memory-limit 512MB --table tx=tx.csv \\\n      -e \"SELECT * FROM detect_anomalies('tx', 'hbos', 'amount, latency_ms')\" --output scored.parquet\n  AWS_ENDPOINT_URL=http://127.0.0.1:9000 nomaly sql --table tx='s3://bucket/tx/*.parquet' -e \"SELECT count(*) FROM tx\""
)]
pub(crate) struct SqlArgs {
    /// Where to run: local (DataFusion in this process), standalone (a Ballista scheduler and
    /// executor in this process) or ballista://HOST[:PORT] (a cluster: `nomaly scheduler`)
    #[arg(long, default_value = "local", value_parser = clap::value_parser!(EngineKind))]
    engine: EngineKind,

    /// Number of partitions to run in parallel [default: number of cores]
    #[arg(long, value_name = "N")]
    partitions: Option<usize>,

    /// The process's memory budget, e.g. 512MB or 4GB: operators get it less the process's
    /// footprint and the Parquet readers' row-group buffers, and spill to disk past that; a limit
    /// below what the query needs at least is reported with that minimum
    /// [default: 80% of RAM or of the cgroup limit]
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,

    /// Directory for spill files [default: the OS temp directory]
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,

    /// Register a table: NAME=PATH_OR_GLOB; the format comes from the extension
    /// (.csv .tsv .parquet .json/.ndjson/.jsonl .arrow/.feather/.ipc .avro). Repeatable.
    /// Object stores too: s3://bucket/key, gs://, az://, http(s)://, with settings and
    /// credentials from the environment (AWS_*, GOOGLE_*, AZURE_*; see the README)
    #[arg(long = "table", value_name = "NAME=PATH")]
    tables: Vec<String>,

    /// How to print results on stdout
    #[arg(long, default_value = "table", value_parser = clap::value_parser!(OutputFormat))]
    pub(crate) format: OutputFormat,

    /// Write the last query's result to this file instead of stdout (.parquet, .csv, .json/.ndjson,
    /// .arrow); written to a temporary name and renamed, so a failed run leaves no partial file
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// SQL to run [default: statements from stdin, or an interactive prompt on a terminal]
    #[arg(
        short = 'e',
        long = "execute",
        value_name = "QUERY",
        conflicts_with = "file"
    )]
    query: Option<String>,

    /// File of ;-separated SQL statements to run
    #[arg(short = 'f', long = "file", value_name = "FILE.sql")]
    file: Option<PathBuf>,

    /// The directory of the pipeline files whose model registry (DIR/.nomaly-state/models) this
    /// session uses: CREATE MODEL, DROP MODEL and SHOW MODELS act on it, and a model's name in
    /// anomaly_score('fraud', ...) or 'fraud@2' reads it. CREATE MODEL writes there
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) models_dir: PathBuf,

    /// Never draw the progress bar (drawn on a terminal for statements running over a second:
    /// rows read of the total, rows/s, ETA, memory)
    #[arg(long)]
    no_progress: bool,
}

fn report(e: &EngineError) -> i32 {
    eprintln!("error: {}", e.user_message());
    e.exit_code()
}

pub async fn run(args: SqlArgs) -> i32 {
    match run_inner(args).await {
        Ok(()) => 0,
        Err(e) => report(&e),
    }
}

async fn run_inner(args: SqlArgs) -> Result<(), EngineError> {
    let (sql, source) = match (&args.query, &args.file) {
        (Some(q), _) => (q.clone(), "-e".to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| EngineError::InvalidTableSpec {
                spec: f.display().to_string(),
                reason: format!("cannot read the SQL file: {e}"),
            })?;
            (text, f.display().to_string())
        }
        (None, None) if std::io::stdin().is_terminal() => return interactive(&args).await,
        (None, None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                EngineError::InvalidTableSpec {
                    spec: "stdin".into(),
                    reason: format!("cannot read SQL from stdin: {e}"),
                }
            })?;
            (text, "stdin".to_string())
        }
    };
    let memory_limit = memory_limit(&args)?;
    if let Some(out) = &args.output {
        crate::output::check_output_path(out)?;
    }
    let script = crate::sql_models::Script::parse(&sql, &source)?;
    if script.is_empty() {
        return Err(EngineError::DataFusion(DataFusionError::Plan(format!(
            "{source}: no SQL statement found"
        ))));
    }
    let ctx = session(&args, memory_limit).await?;
    script.run(&ctx, &args, true).await
}

fn memory_limit(args: &SqlArgs) -> Result<Option<usize>, EngineError> {
    args.memory_limit
        .as_deref()
        .map(parse_byte_size)
        .transpose()
}

/// The statements of `sql`; `source` (`-e`, the file, `stdin`, `input`) names it in errors.
pub(crate) fn parse_statements(
    sql: &str,
    source: &str,
) -> Result<std::collections::VecDeque<Statement>, EngineError> {
    DFParser::parse_sql(sql).map_err(|e| {
        EngineError::DataFusion(DataFusionError::Plan(format!(
            "{source}: cannot parse SQL: {e}"
        )))
    })
}

/// The session with the `--table` tables registered.
async fn session(
    args: &SqlArgs,
    memory_limit: Option<usize>,
) -> Result<SessionContext, EngineError> {
    let tables = args
        .tables
        .iter()
        .map(|spec| parse_table_spec(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = EngineConfig {
        engine: args.engine.clone(),
        target_partitions: args.partitions,
        memory_limit,
        spill_dir: args.spill_dir.clone(),
        ..Default::default()
    };
    // The local engine reads in this process: its Parquet readers' buffers come out of the budget.
    if config.engine == EngineKind::Local {
        let paths: Vec<&str> = tables.iter().map(|(_, p)| p.as_str()).collect();
        config.reader_buffers = nomaly_engine::parquet_read_buffers(&paths, config.partitions());
    }
    let split = config.budget_split();
    tracing::info!("{}", split.describe());
    if memory_limit.is_some()
        && let Some(warning) = split.shortfall()
    {
        eprintln!("warning: {warning}");
    }
    let ctx = build_context(&config).await?;
    crate::sql_models::open_catalog(&ctx, args);
    for (name, path) in &tables {
        register_table(&ctx, name, path).await?;
    }
    Ok(ctx)
}

/// The interactive prompt: results print; errors print and the prompt returns.
async fn interactive(args: &SqlArgs) -> Result<(), EngineError> {
    if args.output.is_some() {
        return Err(EngineError::DataFusion(DataFusionError::Plan(
            "--output writes the last statement of -e, -f or stdin; at the interactive prompt use \
             COPY (SELECT ...) TO 'file.parquet' instead"
                .into(),
        )));
    }
    let ctx = session(args, memory_limit(args)?).await?;
    crate::repl::run(&ctx, args).await
}

/// The bar is drawn on a terminal unless `--no-progress`.
fn draw_progress(args: &SqlArgs) -> bool {
    !args.no_progress && std::io::stderr().is_terminal()
}

pub(crate) async fn run_statement(
    ctx: &SessionContext,
    statement: Statement,
    is_last: bool,
    args: &SqlArgs,
) -> Result<(), EngineError> {
    // On Ballista the job is named after the statement's first words.
    if args.engine != EngineKind::Local {
        let text: String = statement.to_string().chars().take(80).collect();
        nomaly_engine::name_jobs(ctx, &text);
    }
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await?;
    let df = ctx.execute_logical_plan(plan).await?;
    let produces_rows = !df.schema().fields().is_empty();
    match (&args.output, is_last) {
        (Some(path), true) => write_output(df, path, draw_progress(args)).await,
        _ => {
            let batches = if draw_progress(args) {
                let task_ctx = Arc::new(df.task_ctx());
                let physical = df.create_physical_plan().await?;
                let progress = QueryProgress::start(physical.clone(), ctx.runtime_env());
                let result = datafusion::physical_plan::collect(physical, task_ctx).await;
                progress.finish().await;
                result?
            } else {
                df.collect().await?
            };
            if produces_rows {
                print_batches(&batches, args.format)?;
            }
            Ok(())
        }
    }
}
