//! `nomaly run | validate | explain | schema`: pipeline files.
//!
//! Exit codes: 0 ok, 1 the run failed (a retry may help), 2 invalid pipeline file or input,
//! 3 the run finished but a `[[validate]]` check failed, 130 cancelled (Ctrl-C; `nomaly resume`
//! continues from the committed chunks).

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nomaly_pipeline::faults::FaultPlan;
use nomaly_pipeline::run_context::{parse_day, parse_params};
use nomaly_pipeline::run_dir::{RUN_DIR, RunDir};
use nomaly_pipeline::{
    CompiledPipeline, PipelineError, PipelineFile, Run, RunDate, RunEvent, RunFailure, RunMode,
    RunOptions, RunReport, RunRequest, RunStatus, compile,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The pipeline file (TOML)
    #[arg(value_name = "PIPELINE.toml")]
    file: PathBuf,

    /// Override a setting: KEY=VALUE with a dotted key, e.g. --set run.chunk_rows=50000
    /// --set detect.algorithm=ecod --set resources.memory_limit=512MB. Repeatable
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,

    #[command(flatten)]
    when: RunValues,
}

/// The day a run is for and its parameters: what `${run.date}`, `${run.start}`, `${run.end}` and
/// `${param.NAME}` expand to (docs/pipelines.md, "Run dates and parameters").
#[derive(Args, Debug, Clone, Default)]
pub struct RunValues {
    /// The day this run is for (YYYY-MM-DD): the schedule's interval that starts that day, or
    /// the whole day in UTC without a schedule. Default: the schedule's latest ended interval
    /// (a nightly run is for yesterday); without a schedule, now
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,

    /// A value for ${param.NAME}: letters, digits, spaces and -_.:/+,@=% only (no quotes), at
    /// most 256 characters. Repeatable
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

impl RunValues {
    /// The run request these flags ask for.
    pub fn request(&self) -> Result<RunRequest, PipelineError> {
        let bad = |flag: &str, e: String| PipelineError::invalid(flag.to_string(), e);
        let date = match &self.date {
            Some(d) => RunDate::Day(parse_day(d).map_err(|e| bad("--date", e))?),
            None => RunDate::Latest,
        };
        let params = parse_params(&self.params).map_err(|e| bad("--param", e))?;
        Ok(RunRequest::new(date, params))
    }
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  nomaly run examples/pipelines/minimal.toml\n  nomaly run pipeline.toml --set run.chunk_rows=50000 --json > report.json\n  nomaly run --dry-run pipeline.toml      # every step on zero rows: SQL and schema errors in a second\n  nomaly run daily.toml --date 2026-12-05 --param region=eu   # ${run.date}, ${param.region}\n\n\
Exit codes: 0 ok, 1 run failed, 2 invalid pipeline file or input, 3 a [[validate]] check failed,\n\
130 cancelled by Ctrl-C (committed chunks are kept: `nomaly resume` continues).\n\
The run report (JSON) is written to <output>/_nomaly_report.json."
)]
pub struct RunArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Print the run report as JSON on stdout (progress and errors stay on stderr)
    #[arg(long)]
    json: bool,

    /// Plan and run every step on zero rows, write nothing (like dbt's --empty)
    #[arg(long)]
    dry_run: bool,

    /// Never draw a progress bar, log lines instead (the default when stderr is not a terminal)
    #[arg(long)]
    no_progress: bool,

    /// The process's memory budget, e.g. 512MB (same as --set resources.memory_limit=512MB): the
    /// operators' pool gets it less the process's footprint and the Parquet readers' buffers
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,

    /// Where to run: local, standalone or ballista://HOST[:PORT] (same as --set run.engine=...)
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,

    /// Discard an unfinished run of this output (its committed chunks) and start over
    #[arg(long, conflicts_with = "dry_run")]
    restart: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "A run records itself in <output>/_nomaly/ (inside a hidden staging directory until it is published):
the pipeline as run, the input fingerprint, the fitted model and a manifest of committed chunks.
resume checks that the pipeline and the input are unchanged, keeps every committed chunk whose files
match the manifest (size and CRC-32), removes temp and uncommitted files, reuses the model, and runs
only the remaining chunks. The output is the same, byte for byte, as an uninterrupted run's.

With no unfinished run it starts one; on a completed run it prints the report and exits 0.

Examples:
  nomaly resume pipeline.toml
  nomaly resume out/tx_scored/       # the output (or its _nomaly directory)
  nomaly resume --refit pipeline.toml # the input changed: start over instead of refusing"
)]
pub struct ResumeArgs {
    /// The pipeline file, or an output directory / run directory of an earlier run
    #[arg(value_name = "PIPELINE.toml|RUN-DIR")]
    target: PathBuf,

    /// Override a setting (must match the interrupted run's, which is checked)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,

    /// With a pipeline file: the run's --date and --param values (checked against the
    /// interrupted run's). With a run directory, the recorded ones are used
    #[command(flatten)]
    when: RunValues,

    /// When the pipeline or its input changed since the run started, start over (refit the
    /// model, redo every chunk) instead of refusing
    #[arg(long)]
    refit: bool,

    /// Print the run report as JSON on stdout
    #[arg(long)]
    json: bool,

    /// Never draw a progress bar, log lines instead
    #[arg(long)]
    no_progress: bool,

    /// Where to continue: local, standalone or ballista://HOST[:PORT]; any engine may continue
    /// any run (they write the same bytes)
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
}

fn load(args: &FileArgs) -> Result<CompiledPipeline, PipelineError> {
    let request = args.when.request()?;
    compile(PipelineFile::load(&args.file, &args.overrides, &request)?)
}

fn fail(e: &PipelineError) -> i32 {
    eprintln!("error: {}", e.user_message());
    e.exit_code()
}

/// Draws progress on stderr: a bar on a terminal, a log line per second otherwise.
struct CliProgress {
    bar: Option<ProgressBar>,
    started: Instant,
    /// Rate and ETA count from here: the start of scoring, not of the process.
    scoring_started: Mutex<Option<Instant>>,
    rows: AtomicU64,
    /// Rows and chunks a resume kept: progress, but not work done at this speed.
    reused_rows: AtomicU64,
    reused_chunks: AtomicU64,
    chunks_done: AtomicU64,
    chunks_total: AtomicU64,
    last_line: Mutex<Instant>,
}

impl CliProgress {
    fn new(draw: bool) -> Self {
        let bar = draw.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:12} [{bar:30}] {pos}/{len} chunks  {prefix}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self {
            bar,
            started: Instant::now(),
            scoring_started: Mutex::new(None),
            rows: AtomicU64::new(0),
            reused_rows: AtomicU64::new(0),
            reused_chunks: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            chunks_total: AtomicU64::new(0),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn status(&self, memory: Option<usize>) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        let done = self.chunks_done.load(Ordering::Relaxed);
        let total = self.chunks_total.load(Ordering::Relaxed);
        let secs = self
            .scoring_started
            .lock()
            .expect("not poisoned")
            .unwrap_or(self.started)
            .elapsed()
            .as_secs_f64()
            .max(1e-3);
        let worked_rows = rows - self.reused_rows.load(Ordering::Relaxed);
        let worked_chunks = done - self.reused_chunks.load(Ordering::Relaxed);
        let rate = worked_rows as f64 / secs;
        let eta = if worked_chunks > 0 && total > done {
            let per_chunk = secs / worked_chunks as f64;
            format!("ETA {:.0}s", per_chunk * (total - done) as f64)
        } else {
            "ETA -".into()
        };
        let mem = memory
            .map(|m| format!("  mem {:.0} MiB", m as f64 / 1048576.0))
            .unwrap_or_default();
        format!("{rows} rows  {rate:.0} rows/s  {eta}{mem}")
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl CliProgress {
    fn on_event(&self, event: &RunEvent) {
        match event {
            RunEvent::Phase(p) => match &self.bar {
                Some(b) => b.set_message(p.clone()),
                None => eprintln!("[{:7.1}s] {p}", self.started.elapsed().as_secs_f64()),
            },
            RunEvent::ScoringStarted { chunks, rows } => {
                *self.scoring_started.lock().expect("not poisoned") = Some(Instant::now());
                self.chunks_total.store(*chunks as u64, Ordering::Relaxed);
                match &self.bar {
                    Some(b) => b.set_length(*chunks as u64),
                    None => eprintln!(
                        "[{:7.1}s] scoring {chunks} chunks{}",
                        self.started.elapsed().as_secs_f64(),
                        rows.map(|r| format!(" (~{r} rows)")).unwrap_or_default()
                    ),
                }
            }
            RunEvent::ChunkReused { rows, .. } => {
                self.rows.fetch_add(*rows, Ordering::Relaxed);
                self.reused_rows.fetch_add(*rows, Ordering::Relaxed);
                self.reused_chunks.fetch_add(1, Ordering::Relaxed);
                let done = self.chunks_done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(b) = &self.bar {
                    b.set_position(done);
                }
            }
            RunEvent::ChunkCommitted { rows, .. } => {
                self.rows.fetch_add(*rows, Ordering::Relaxed);
                let done = self.chunks_done.fetch_add(1, Ordering::Relaxed) + 1;
                match &self.bar {
                    Some(b) => {
                        b.set_position(done);
                        b.set_prefix(self.status(None));
                    }
                    None => {
                        let total = self.chunks_total.load(Ordering::Relaxed);
                        let mut last = self.last_line.lock().expect("not poisoned");
                        if last.elapsed() >= Duration::from_secs(1) || done == total {
                            *last = Instant::now();
                            eprintln!(
                                "[{:7.1}s] chunks {done}/{total} ({:.0}%)  {}",
                                self.started.elapsed().as_secs_f64(),
                                100.0 * done as f64 / total.max(1) as f64,
                                self.status(None)
                            );
                        }
                    }
                }
            }
            RunEvent::Progress { memory, .. } => {
                if let Some(b) = &self.bar {
                    b.set_prefix(self.status(Some(*memory)));
                }
            }
            RunEvent::Warning(w) => match &self.bar {
                Some(b) => b.println(format!("warning: {w}")),
                None => eprintln!("warning: {w}"),
            },
            _ => {}
        }
    }
}

fn summary(r: &RunReport) -> String {
    let mut s = format!(
        "{}: {} in {:.1}s — {} rows in, {} rows out, {} anomalies ({:.2}%), {} chunks ({}), peak memory {:.0} MiB pool / {:.0} MiB RSS, spilled {} bytes",
        r.pipeline,
        r.status.name(),
        r.seconds,
        r.input_rows,
        r.output_rows,
        r.anomalies,
        100.0 * r.anomaly_rate,
        r.chunks,
        r.chunking,
        r.peak_pool_bytes as f64 / 1048576.0,
        r.peak_rss_bytes as f64 / 1048576.0,
        r.spill_bytes
    );
    if r.rows_with_missing_features > 0 {
        s.push_str(&format!(
            "\n  {} rows had a null/NaN/Inf feature: not used to fit, scored null",
            r.rows_with_missing_features
        ));
    }
    if r.quarantined_rows > 0 {
        s.push_str(&format!(
            "\n  {} input lines could not be parsed and were quarantined in {}",
            r.quarantined_rows,
            r.quarantine_dir.as_deref().unwrap_or("_nomaly/quarantine")
        ));
    }
    for sink in &r.sinks {
        s.push_str(&format!(
            "\n  wrote {} ({} files, {} rows, {} bytes)",
            sink.path, sink.files, sink.rows, sink.bytes
        ));
    }
    for c in &r.checks {
        s.push_str(&format!(
            "\n  check {}: {} — {}",
            c.check,
            if c.passed { "passed" } else { "FAILED" },
            c.detail
        ));
    }
    for w in &r.warnings {
        s.push_str(&format!("\n  warning: {w}"));
    }
    s
}

pub async fn run(mut args: RunArgs) -> i32 {
    if let Some(m) = &args.memory_limit {
        args.file
            .overrides
            .push(format!("resources.memory_limit=\"{m}\""));
    }
    if let Some(e) = &args.engine {
        args.file.overrides.push(format!("run.engine=\"{e}\""));
    }
    let p = match load(&args.file) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mode = if args.restart {
        RunMode::Restart
    } else {
        RunMode::Run
    };
    execute(&p, mode, args.dry_run, args.json, args.no_progress).await
}

/// The pipeline file a `resume` target names: the file itself, or the one recorded in a run
/// directory (`<output>`, `<output>/_nomaly`, or a staging directory).
fn resume_target(
    target: &std::path::Path,
    overrides: &[String],
    when: &RunValues,
) -> Result<PipelineFile, PipelineError> {
    // An output a first run never published exists only as its staging directory.
    let staged = nomaly_pipeline::sink_writer::staging_dir(target).is_dir();
    if !target.is_dir() && !staged {
        return PipelineFile::load(target, overrides, &when.request()?);
    }
    if when.date.is_some() || !when.params.is_empty() {
        return Err(PipelineError::invalid(
            target.display().to_string(),
            "is a run directory, which records its run's --date and --param values; pass \
             neither",
        ));
    }
    // The run directory sits in the staging directory while the run is unfinished.
    let output = if target.file_name() == Some(std::ffi::OsStr::new(RUN_DIR)) {
        target.parent().unwrap_or(target).to_path_buf()
    } else {
        target.to_path_buf()
    };
    for dir in [
        nomaly_pipeline::sink_writer::staging_dir(&output),
        output.clone(),
    ] {
        let run = RunDir::at(&dir);
        if run.exists() {
            let record = run.read_record()?;
            let text = run.read_pipeline_text()?;
            let request = match &record.context {
                Some(context) => context.request(),
                None => RunRequest::default(),
            };
            return PipelineFile::parse(
                std::path::Path::new(&record.pipeline_file),
                &text,
                overrides,
                &|name| Ok(std::env::var(name).ok()),
                &request,
            );
        }
    }
    Err(PipelineError::invalid(
        target.display().to_string(),
        "is a directory with no Nomaly run in it (no _nomaly/run.json); pass the pipeline file, or the output directory of a run",
    ))
}

pub async fn resume(mut args: ResumeArgs) -> i32 {
    if let Some(e) = &args.engine {
        args.overrides.push(format!("run.engine=\"{e}\""));
    }
    let p = match resume_target(&args.target, &args.overrides, &args.when).and_then(compile) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match nomaly_pipeline::completed_run(&p).await {
        Ok(Some(report)) => {
            if args.json {
                println!("{report}");
            }
            eprintln!(
                "{}: already complete; its output is {} (report in {})",
                p.name,
                p.sinks[0].location(),
                p.sinks[0]
                    .path
                    .join(nomaly_pipeline::sink_writer::REPORT_FILE)
                    .display()
            );
            return 0;
        }
        Ok(None) => {}
        Err(e) => return fail(&e),
    }
    let mode = RunMode::Resume { refit: args.refit };
    execute(&p, mode, false, args.json, args.no_progress).await
}

/// Runs through the library's [`Run`] handle: its events drive the progress bar, Ctrl-C (or
/// SIGTERM) cancels it — in-flight chunks stop, committed chunks stay for `nomaly resume` — and a
/// second Ctrl-C exits at once.
pub(crate) async fn execute(
    p: &CompiledPipeline,
    mode: RunMode,
    dry_run: bool,
    json: bool,
    no_progress: bool,
) -> i32 {
    let draw = !no_progress && std::io::stderr().is_terminal();
    let progress = CliProgress::new(draw);
    let faults = FaultPlan::from_env().unwrap_or_else(|e| {
        // A test knob, not user input: say so loudly and run without faults.
        eprintln!("warning: {e}; running without fault injection");
        None
    });
    let opts = RunOptions {
        dry_run,
        mode,
        faults,
        ..Default::default()
    };
    let mut run = Run::start(p.clone(), opts);
    let signals = tokio::spawn(cancel_on_signal(run.cancellation()));
    while let Some(event) = run.next_event().await {
        progress.on_event(&event);
    }
    signals.abort();
    let result = run.wait().await;
    progress.finish();
    match result {
        Ok(report) => succeeded(p, &report, json),
        Err(RunFailure { error, report }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report is JSON")
                );
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            fail(&error)
        }
    }
}

/// Cancels the run on the first Ctrl-C or SIGTERM; exits with 130 on a second Ctrl-C.
async fn cancel_on_signal(cancel: tokio_util::sync::CancellationToken) {
    let interrupted = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    _ = term.recv() => true,
                },
                Err(_) => tokio::signal::ctrl_c().await.is_ok(),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    };
    if !interrupted.await {
        return;
    }
    eprintln!(
        "\ninterrupted: stopping the run; committed chunks are kept (Ctrl-C again to exit at once)"
    );
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!(
            "interrupted again: exiting; `nomaly resume` continues from the committed chunks"
        );
        std::process::exit(130);
    }
}

fn succeeded(p: &CompiledPipeline, report: &RunReport, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("a report is JSON")
        );
    }
    eprintln!("{}", summary(report));
    if report.status != RunStatus::ValidationFailed {
        return 0;
    }
    eprintln!(
        "error: a [[validate]] check failed; the output was not published (the run's files are in {})",
        p.sinks
            .first()
            .map(|s| nomaly_pipeline::sink_writer::staging_dir(&s.path)
                .display()
                .to_string())
            .unwrap_or_default()
    );
    3
}

pub async fn validate(args: FileArgs) -> i32 {
    let p = match load(&args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match nomaly_pipeline::validate(&p).await {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn explain(args: FileArgs) -> i32 {
    let p = match load(&args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match nomaly_pipeline::explain(&p).await {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => fail(&e),
    }
}

pub fn schema() -> i32 {
    println!(
        "{}",
        serde_json::to_string_pretty(&nomaly_pipeline::json_schema()).expect("JSON")
    );
    0
}
