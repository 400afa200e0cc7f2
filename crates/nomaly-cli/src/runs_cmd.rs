//! The terminal clients of `nomaly serve`: `submit`, `runs`, `status`, `cancel`, `retry`,
//! `schedule add|list|rm`. They read the server's typed answers (`nomaly_server::bodies`).

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nomaly_server::SubmitRequest;
use nomaly_server::bodies::RunView;
use nomaly_server::client::{ClientError, DEFAULT_SERVER, RunAction, RunsQuery, ServerClient};
use nomaly_server::events::{Progress, RunEventBody};
use nomaly_server::server::{QueueEntry, ScheduleView};
use nomaly_server::store::RunState;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Where a client finds the server, and its token.
#[derive(Args, Debug, Clone)]
pub struct ServerFlags {
    /// The server's URL
    #[arg(long, env = "NOMALY_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The file holding the server's API token (default: NOMALY_TOKEN, else the token a server
    /// with the default job store made, ~/.local/share/nomaly/jobs.token)
    #[arg(long, env = "NOMALY_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl ServerFlags {
    pub(crate) fn client(&self) -> ServerClient {
        let token = crate::api_token::client_token(
            self.token_file.as_deref(),
            &crate::serve_cmd::default_db(),
        )
        .unwrap_or_else(|e| {
            eprintln!("warning: {e}; sending no token");
            None
        });
        ServerClient::new(&self.server, token)
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  nomaly submit examples/pipelines/minimal.toml
  nomaly submit nightly.toml --priority 10 --memory-limit 4GB --follow
  nomaly submit daily.toml --date 2026-12-05 --param region=eu")]
pub struct SubmitArgs {
    /// The pipeline file (its absolute path is sent; it must be inside the server's roots)
    #[arg(value_name = "PIPELINE.toml")]
    file: PathBuf,
    /// Higher runs first
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// The run's memory budget, e.g. 2GB
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,
    /// Wall-clock limit, e.g. 30m (the run ends `timed_out`, resumable)
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Override a setting: KEY=VALUE, as `nomaly run --set`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(flatten)]
    when: crate::pipeline_cmd::RunValues,
    /// Send the file's text instead of its path (for a server on another machine; relative paths
    /// then start at the server's first root)
    #[arg(long)]
    text: bool,
    /// Follow the run until it ends (as `nomaly status --follow`)
    #[arg(long)]
    follow: bool,
    /// Print the server's answer as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Only runs in this state (queued, running, succeeded, failed, cancelled, timed_out, ...)
    #[arg(long)]
    state: Option<String>,
    /// Only runs of this pipeline (its name)
    #[arg(long)]
    pipeline: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Skip this many of the newest (the next page starts at --offset LIMIT)
    #[arg(long, default_value_t = 0)]
    offset: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The run id (as `nomaly submit` and `nomaly runs` print it)
    id: i64,
    /// Draw the run's progress until it ends (from its event stream)
    #[arg(long)]
    follow: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  nomaly logs 12
  nomaly logs 12 --follow      # new lines as they come, until the run ends
  nomaly logs 12 --json        # one JSON object per line: seq, at_ms, level, message")]
pub struct LogsArgs {
    /// The run id
    id: i64,
    /// Keep printing new lines until the run ends
    #[arg(long, short)]
    follow: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
pub struct RunIdArgs {
    id: i64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    id: i64,
    /// Continue from the run's committed chunks instead of starting over
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Register a pipeline file with the server: its `schedule`, `after` and `on_failure`
    Add {
        #[arg(value_name = "PIPELINE.toml")]
        file: PathBuf,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i64>,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// List registered pipelines with their next fire times
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Unregister a pipeline (by name)
    Rm {
        name: String,
        #[command(flatten)]
        server: ServerFlags,
    },
}

#[derive(Args, Debug)]
#[command(after_help = "A pipeline file says when it runs:
  schedule = \"0 */6 * * *\"     # minute hour day-of-month month day-of-week
  timezone = \"Europe/Berlin\"   # default UTC
  catch_up = \"latest\"          # fires missed while the server was down: none | latest | all
  allow_overlap = false        # skip a fire while the previous run still goes
  after = [\"ingest\"]           # run when these pipelines have succeeded
  on_failure = [\"alert\"]       # run these when this one fails")]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn submit(args: SubmitArgs) -> i32 {
    let client = args.server.client();
    let path = match std::path::absolute(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return 2;
        }
    };
    let params = match nomaly_pipeline::run_context::parse_params(&args.when.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --param: {e}");
            return 2;
        }
    };
    let mut req = SubmitRequest {
        priority: Some(args.priority),
        memory_limit: args.memory_limit.clone(),
        timeout: args.timeout.clone(),
        set: args.overrides.clone(),
        date: args.when.date.clone(),
        params,
        ..Default::default()
    };
    if args.text {
        match std::fs::read_to_string(&path) {
            Ok(t) => req.toml = Some(t),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return 2;
            }
        }
    } else {
        req.path = Some(path.to_string_lossy().to_string());
    }
    let view = match client.submit(&req).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let id = view.run.id;
    if args.json {
        print_json(&view);
    } else {
        let position = view
            .queue
            .as_ref()
            .map(|q| format!(", position {} in the queue", q.position))
            .unwrap_or_default();
        println!(
            "run {id} queued ({}{position}); watch it with: nomaly status {id} --follow",
            view.run.pipeline
        );
    }
    if args.follow {
        return follow(&client, id, args.json).await;
    }
    0
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `43% 1200 rows/s ETA 7s`, the queue position while queued, else the phase.
fn progress_text(
    state: RunState,
    progress: Option<&Progress>,
    queue: Option<&QueueEntry>,
) -> String {
    if state == RunState::Queued {
        return match queue {
            Some(q) => format!("#{} in queue ({})", q.position, q.waiting_for),
            None => "queued".into(),
        };
    }
    let Some(p) = progress else {
        return "-".into();
    };
    match p.percent {
        Some(pct) => {
            let rate = p
                .rows_per_second
                .map(|r| format!(" {r:.0} rows/s"))
                .unwrap_or_default();
            let eta = p
                .eta_seconds
                .filter(|_| state == RunState::Running)
                .map(|e| format!(" ETA {e:.0}s"))
                .unwrap_or_default();
            format!("{pct:.0}%{rate}{eta}")
        }
        None if p.phase.is_empty() => "-".into(),
        None => p.phase.clone(),
    }
}

fn view_progress(v: &RunView) -> String {
    progress_text(v.run.state, v.run.progress.as_ref(), v.queue.as_ref())
}

pub async fn runs(args: RunsArgs) -> i32 {
    let client = args.server.client();
    let query = RunsQuery {
        state: args.state.as_deref(),
        pipeline: args.pipeline.as_deref(),
        limit: args.limit,
        offset: args.offset,
    };
    let list = match client.runs(&query).await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if args.json {
        print_json(&list);
        return 0;
    }
    if list.runs.is_empty() {
        println!("no runs; submit one with: nomaly submit PIPELINE.toml");
        return 0;
    }
    println!(
        "{:>5}  {:<24} {:<18} {:>4}  {:<20} {:<19} TRIGGER",
        "ID", "PIPELINE", "STATE", "PRI", "PROGRESS", "SUBMITTED"
    );
    for v in &list.runs {
        let r = &v.run;
        println!(
            "{:>5}  {:<24} {:<18} {:>4}  {:<20} {:<19} {}",
            r.id,
            r.pipeline,
            r.state.name(),
            r.priority,
            view_progress(v),
            when(Some(r.submitted_ms)),
            r.trigger,
        );
    }
    if list.total > (args.offset + list.runs.len()) as u64 {
        println!(
            "({} of {}; the next page: --offset {})",
            list.runs.len(),
            list.total,
            args.offset + list.runs.len()
        );
    }
    0
}

/// `nomaly logs ID`: the run's log; with `--follow`, new lines until the run ends.
pub async fn logs(args: LogsArgs) -> i32 {
    let client = args.server.client();
    let mut after = 0;
    loop {
        let page = match client.logs(args.id, after).await {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        for line in &page.lines {
            if args.json {
                println!("{}", serde_json::to_string(line).unwrap_or_default());
            } else {
                println!(
                    "{}  {:<5} {}",
                    when(Some(line.at_ms)),
                    line.level,
                    line.message
                );
            }
            after = line.seq;
        }
        if !args.follow || page.finished {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn describe(v: &RunView) {
    let run = &v.run;
    println!("run {}: {} ({})", run.id, run.pipeline, run.state.name());
    println!("  file       {}", run.file);
    println!(
        "  priority   {}   memory budget {}",
        run.priority,
        nomaly_server::server::human_bytes(run.memory_bytes)
    );
    println!(
        "  submitted  {}   started {}   finished {}",
        when(Some(run.submitted_ms)),
        when(run.started_ms),
        when(run.finished_ms)
    );
    println!("  progress   {}", view_progress(v));
    if let Some(p) = &run.progress
        && let Some(total) = p.chunks_total
    {
        println!(
            "  chunks     {}/{total}   retries {}",
            p.chunks_done, p.retries
        );
    }
    if let Some(e) = &run.error {
        println!("  error      {e}");
    }
}

pub async fn status(args: StatusArgs) -> i32 {
    let client = args.server.client();
    if args.follow {
        return follow(&client, args.id, args.json).await;
    }
    match client.run(args.id).await {
        Ok(v) => {
            if args.json {
                print_json(&v);
            } else {
                describe(&v);
            }
            exit_for_state(v.run.state)
        }
        Err(e) => fail(&e),
    }
}

/// As `nomaly run`: 0 succeeded, 3 validation failed, 130 cancelled, 1 otherwise; 0 while it
/// has not ended.
fn exit_for_state(state: RunState) -> i32 {
    match state {
        RunState::Succeeded | RunState::Queued | RunState::Running => 0,
        RunState::ValidationFailed => 3,
        RunState::Cancelled => 130,
        RunState::Failed | RunState::TimedOut => 1,
    }
}

/// Draws a run's progress from its event stream until it ends.
async fn follow(client: &ServerClient, id: i64, json: bool) -> i32 {
    let draw = !json && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(100),
        if draw {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("run {id}"));
    let mut last_line = std::time::Instant::now() - Duration::from_secs(10);
    let result = client
        .follow(id, |e| {
            if json {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            }
            match &e.event {
                RunEventBody::Progress(p) => {
                    bar.set_position(p.percent.unwrap_or(0.0) as u64);
                    let msg = progress_text(RunState::Running, Some(p), None);
                    bar.set_message(msg.clone());
                    if !draw && !json && last_line.elapsed() >= Duration::from_secs(1) {
                        eprintln!("run {id}: {msg}");
                        last_line = std::time::Instant::now();
                    }
                }
                RunEventBody::Retry { place, error, .. } if !json => {
                    bar.println(format!("retry: {place} ({error})"));
                }
                _ => {}
            }
        })
        .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        return fail(&e);
    }
    match client.run(id).await {
        Ok(v) => {
            if !json {
                describe(&v);
            }
            exit_for_state(v.run.state)
        }
        Err(e) => fail(&e),
    }
}

pub async fn cancel(args: RunIdArgs) -> i32 {
    let client = args.server.client();
    match client.act(args.id, RunAction::Cancel).await {
        Ok(v) => {
            if args.json {
                print_json(&v);
            } else if v.run.state == RunState::Running {
                println!(
                    "run {}: cancelling (it stops at its next batch; committed chunks are kept)",
                    args.id
                );
            } else {
                println!("run {}: {}", args.id, v.run.state.name());
            }
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn retry(args: RetryArgs) -> i32 {
    let client = args.server.client();
    let action = if args.resume {
        RunAction::Resume
    } else {
        RunAction::Retry
    };
    match client.act(args.id, action).await {
        Ok(v) => {
            if args.json {
                print_json(&v);
            } else {
                println!("run {}: queued again ({})", args.id, action.name());
            }
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn schedule(args: ScheduleArgs) -> i32 {
    match args.command {
        ScheduleCommand::Add {
            file,
            priority,
            server,
        } => {
            let path = match std::path::absolute(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return 2;
                }
            };
            match server
                .client()
                .add_schedule(&path.to_string_lossy(), priority)
                .await
            {
                Ok(v) => {
                    let next = v
                        .next_fires_ms
                        .first()
                        .map(|t| when(Some(*t)))
                        .unwrap_or_else(|| "on its dependencies".into());
                    println!("registered {} (next run: {next})", v.pipeline.name);
                    0
                }
                Err(e) => fail(&e),
            }
        }
        ScheduleCommand::List { json, server } => match server.client().schedules().await {
            Ok(list) if json => {
                print_json(&list);
                0
            }
            Ok(list) => {
                print_schedules(&list.schedules);
                0
            }
            Err(e) => fail(&e),
        },
        ScheduleCommand::Rm { name, server } => {
            match server.client().remove_schedule(&name).await {
                Ok(()) => {
                    println!("unregistered {name}");
                    0
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn print_schedules(list: &[ScheduleView]) {
    if list.is_empty() {
        println!("no registered pipelines; add one with: nomaly schedule add PIPELINE.toml");
    }
    for s in list {
        let p = &s.pipeline;
        let after = if p.after.is_empty() {
            "-".to_string()
        } else {
            p.after.join(",")
        };
        println!(
            "{:<24} {:<16} {:<14} next {:<19} after {after}",
            p.name,
            or_dash(p.cron.as_ref()),
            or_dash(p.timezone.as_ref()),
            when(s.next_fires_ms.first().copied()),
        );
    }
}
