//! `nomaly`: anomaly detection with SQL on DataFusion and Ballista.

mod api_token;
mod backfill_cmd;
mod cluster_cmd;
mod models_cmd;
mod output;
mod pipeline_cmd;
mod query_progress;
mod repl;
mod runs_cmd;
mod serve_args;
mod serve_cmd;
mod sql_cmd;
mod sql_models;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nomaly",
    version,
    about = "Find anomalies in tables with SQL, on one machine or a Ballista cluster",
    long_about = "Find anomalies in tables with SQL, on one machine (DataFusion) or a Ballista cluster.\n\n\
Detectors are SQL functions: detect_anomalies('iforest', amount, latency_ms) scores every row;\n\
fit_detector(...) / anomaly_score(model, ...) fit once and score many.\n\
Algorithms: zscore, robust_zscore, iqr, hbos, ecod, copod, iforest, pca, mahalanobis, mcd, knn, \
lof, loda, eif.",
    after_help = "Examples:\n  nomaly sql -f examples/quickstart.sql\n  nomaly run examples/pipelines/minimal.toml\n  nomaly sql --table tx=data/tx.parquet -e \"SELECT id, detect_anomalies('ecod', amount) AS a FROM tx\"\n  nomaly scheduler & nomaly executor & nomaly sql --engine ballista://127.0.0.1:50050 -f examples/quickstart.sql\n  nomaly serve & nomaly submit examples/pipelines/minimal.toml --follow\n\n\
Exit codes: 0 success, 1 runtime failure, 2 invalid input (SQL, options, files, pipeline), 3 a pipeline [[validate]] check failed, 130 a pipeline run cancelled by Ctrl-C."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run SQL with the Nomaly functions (one -e query or a -f file of ;-separated statements)
    Sql(sql_cmd::SqlArgs),
    /// Run a pipeline file: sources -> SQL steps -> detect -> validate -> sinks -> notify
    Run(pipeline_cmd::RunArgs),
    /// Continue an interrupted run: skip committed chunks, reuse the model, finish the output
    Resume(pipeline_cmd::ResumeArgs),
    /// Check a pipeline file against the real data (paths, schemas, columns, SQL) without running it
    Validate(pipeline_cmd::FileArgs),
    /// Print a pipeline's chunk plan and physical plan
    Explain(pipeline_cmd::FileArgs),
    /// Print the JSON Schema of pipeline files (for editor completion)
    Schema,
    /// Start a Ballista scheduler that knows the Nomaly functions (flags as ballista-scheduler's)
    Scheduler(cluster_cmd::SchedulerArgs),
    /// Start a Ballista executor that knows the Nomaly functions (flags as ballista-executor's)
    Executor(cluster_cmd::ExecutorArgs),
    /// List a Ballista scheduler's jobs (with progress) and executors, from its REST API
    Jobs(cluster_cmd::JobsArgs),
    /// Show one Ballista job: its stages and their tasks
    Job(cluster_cmd::JobArgs),
    /// Serve runs as a service: a job store, a queue, schedules, and a REST/SSE API
    Serve(serve_cmd::ServeArgs),
    /// Submit a pipeline file to a nomaly server; prints the run id
    Submit(runs_cmd::SubmitArgs),
    /// List a nomaly server's runs with their state and progress
    Runs(runs_cmd::RunsArgs),
    /// Show a server run; --follow draws its progress until it ends
    Status(runs_cmd::StatusArgs),
    /// Print a server run's log (--follow: until it ends)
    Logs(runs_cmd::LogsArgs),
    /// Cancel a server run (a queued one at once; a running one keeps its committed chunks)
    Cancel(runs_cmd::RunIdArgs),
    /// Queue an ended server run again (--resume: from its committed chunks)
    Retry(runs_cmd::RetryArgs),
    /// Register pipelines with a server: cron schedules and dependencies
    Schedule(runs_cmd::ScheduleArgs),
    /// Run a pipeline once per interval between two days (here, or queued on a server)
    Backfill(backfill_cmd::BackfillArgs),
    /// List a server's backfills, or show (--cancel: cancel) one
    Backfills(backfill_cmd::BackfillsArgs),
    /// The model registry: models kept between runs ([detect] model, train)
    Models(models_cmd::ModelsArgs),
}

/// The command line, with the cluster processes bound to 127.0.0.1 unless told otherwise
/// (Ballista's own binaries bind to 0.0.0.0), and Flight SQL's help naming our token flag.
fn command_line() -> Cli {
    let command = Cli::command()
        .mut_subcommand("scheduler", |c| {
            c.mut_arg("bind_host", |a| {
                a.default_value(cluster_cmd::DEFAULT_BIND_HOST)
            })
            .mut_arg("flight_sql", |a| {
                a.long_help(
                    "Serve Arrow Flight SQL on the scheduler port: JDBC/ODBC/ADBC clients run SQL \
                     (detect_anomalies included) on the cluster. Any client that reaches the port \
                     may, unless --flight-sql-token-file or --auth-token-file is given (the password \
                     is then that token); with --tls-cert/--tls-key it speaks TLS.",
                )
            })
        })
        .mut_subcommand("executor", |c| {
            c.mut_arg("bind_host", |a| {
                a.default_value(cluster_cmd::DEFAULT_BIND_HOST)
            })
        });
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// glibc gives each thread that allocates its own arena (up to 8 per core); with tokio's and
/// DataFusion's threads each keeping freed row-group buffers, the process's resident set grows far
/// past what it holds. Two arenas keep RSS near the memory budget. `NOMALY_MALLOC_ARENAS=N` sets
/// another limit (0: glibc's default). Process-wide by nature: it is the binary's choice, made
/// before any thread starts, and holds for every run in the process; the pipeline library does not
/// touch the allocator.
fn limit_malloc_arenas() {
    let arenas: i32 = std::env::var("NOMALY_MALLOC_ARENAS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if arenas > 0 {
        // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = command_line();
    // Commands log warnings only; the cluster's processes log what Ballista's binaries log.
    let filter = match &cli.command {
        Command::Scheduler(a) => cluster_cmd::log_filter(&a.flags.log_level_setting),
        Command::Executor(a) => cluster_cmd::log_filter(&a.flags.log_level_setting),
        _ => cluster_cmd::env_log_filter().unwrap_or_else(|| "warn".into()),
    };
    let json_logs =
        matches!(&cli.command, Command::Serve(a) if a.log_format == serve_cmd::LogFormat::Json);
    let filter = match &cli.command {
        // The server logs what it does (runs admitted, requeued, finished) unless told otherwise.
        Command::Serve(_) => cluster_cmd::env_log_filter().unwrap_or_else(|| "info".into()),
        _ => filter,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    // Deep plans recurse; Ballista's binaries use 32 MiB stacks too.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Sql(args) => sql_cmd::run(args).await,
            Command::Run(args) => pipeline_cmd::run(args).await,
            Command::Resume(args) => pipeline_cmd::resume(args).await,
            Command::Validate(args) => pipeline_cmd::validate(args).await,
            Command::Explain(args) => pipeline_cmd::explain(args).await,
            Command::Schema => pipeline_cmd::schema(),
            Command::Scheduler(args) => cluster_cmd::scheduler(args).await,
            Command::Executor(args) => cluster_cmd::executor(args).await,
            Command::Jobs(args) => cluster_cmd::jobs(args).await,
            Command::Job(args) => cluster_cmd::job(args).await,
            Command::Serve(args) => serve_cmd::serve(args).await,
            Command::Submit(args) => runs_cmd::submit(args).await,
            Command::Runs(args) => runs_cmd::runs(args).await,
            Command::Status(args) => runs_cmd::status(args).await,
            Command::Logs(args) => runs_cmd::logs(args).await,
            Command::Cancel(args) => runs_cmd::cancel(args).await,
            Command::Retry(args) => runs_cmd::retry(args).await,
            Command::Schedule(args) => runs_cmd::schedule(args).await,
            Command::Backfill(args) => backfill_cmd::backfill(args).await,
            Command::Backfills(args) => backfill_cmd::backfills(args).await,
            Command::Models(args) => models_cmd::models(args),
        }
    });
    // Ballista's in-process cluster keeps background tasks; do not wait for them.
    runtime.shutdown_background();
    ExitCode::from(code as u8)
}
