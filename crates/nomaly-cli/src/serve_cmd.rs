//! `nomaly serve` and its terminal clients: `submit`, `runs`, `status`, `cancel`, `retry`,
//! `schedule add|list|rm`.

pub use crate::serve_args::{LogFormat, ServeArgs};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nomaly_server::client::{ClientError, DEFAULT_SERVER, ServerClient};
use nomaly_server::{AllowedRoots, HttpConfig, Server, ServerConfig, SubmitRequest};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
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
    fn client(&self) -> ServerClient {
        let token = crate::api_token::client_token(self.token_file.as_deref(), &default_db())
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
  nomaly submit nightly.toml --priority 10 --memory-limit 4GB --follow")]
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
    #[arg(long, default_value_t = 20)]
    limit: usize,
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

fn default_db() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("nomaly").join("jobs.db")
}

fn size(flag: &str, text: &str) -> Result<u64, String> {
    nomaly_engine::memory::parse_byte_size(text)
        .map(|b| b as u64)
        .map_err(|e| format!("{flag}: {e}"))
}

/// `--max-body`: a size from 1KB (the memory sizes' parser starts at 1MB).
fn body_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("--max-body {text}: not a size; e.g. 64KB or 1MB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("--max-body {text}: use B, KB or MB")),
    };
    let bytes = n.saturating_mul(mult);
    if bytes < 1024 {
        return Err(format!("--max-body {text}: at least 1KB"));
    }
    Ok(bytes)
}

pub async fn serve(args: ServeArgs) -> i32 {
    match serve_inner(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

async fn serve_inner(args: ServeArgs) -> Result<(), String> {
    let db_path = args.db.clone().unwrap_or_else(default_db);
    let token = crate::api_token::server_token(
        args.token_file.as_deref(),
        args.no_auth,
        args.bind,
        &db_path,
    )?;
    if let Some(path) = &token.generated {
        tracing::info!(token_file = %path.display(), "API token");
        if args.log_format == LogFormat::Text {
            eprintln!(
                "nomaly serve: API token in {} (the terminal clients on this machine read it)",
                path.display()
            );
        }
    }
    let token = token.token;
    let roots = if args.allow_roots.is_empty() {
        vec![std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?]
    } else {
        args.allow_roots.clone()
    };
    let roots = AllowedRoots::with_rules(&roots, &args.allow_locations, &args.allow_env)
        .map_err(|e| e.to_string())?;
    let budget = match &args.memory_limit {
        Some(m) => size("--memory-limit", m)?,
        None => nomaly_engine::memory::default_budget() as u64,
    };
    if args.max_runs == 0 {
        return Err("--max-runs must be at least 1".into());
    }
    let default_run_memory = match &args.run_memory {
        Some(m) => size("--run-memory", m)?,
        None => budget / args.max_runs as u64,
    };
    let aging = nomaly_pipeline::compile::parse_duration(&args.aging)
        .map_err(|e| format!("--aging: {e}"))?;
    let max_body = body_size(&args.max_body)?;
    let config = ServerConfig {
        db: db_path,
        memory_budget: budget,
        max_concurrent: args.max_runs,
        default_run_memory: default_run_memory.min(budget),
        aging,
        engine: args.engine.clone(),
        roots,
        allow_notify_commands: args.allow_notify_commands,
        tick: Duration::from_millis(500),
    };
    let db = config.db.clone();
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = Server::start(config).map_err(|e| e.to_string())?;
    tracing::info!(%addr, db = %db.display(), "nomaly serve listening");
    // JSON logs stay JSON: the log line above says the same.
    if args.log_format == LogFormat::Text {
        eprintln!(
            "nomaly serve: listening on {}://{addr} (job store {}, memory budget {}, {} runs at once)",
            if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            db.display(),
            nomaly_server::server::human_bytes(budget),
            args.max_runs
        );
    }
    let scheduler = match &args.scheduler {
        Some(s) => Some(Arc::new(
            nomaly_server::cluster_view::scheduler_rest(s).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let http = HttpConfig {
        token: token.map(Arc::new),
        max_body_bytes: max_body,
        scheduler,
        hosts: nomaly_server::http_guard::HostRule::for_bind(args.bind, &args.allow_hosts),
        max_streams_per_client: args.max_streams_per_client,
        connections: nomaly_server::connections::ConnectionLimits {
            max_connections: args.max_connections.max(1),
            header_timeout: nomaly_pipeline::compile::parse_duration(&args.header_timeout)
                .map_err(|e| format!("--header-timeout: {e}"))?,
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(nomaly_server::connections::tls_config(cert, key)?),
                _ => None,
            },
        },
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        eprintln!(
            "nomaly serve: stopping; running runs continue from their committed chunks at the next start"
        );
    };
    nomaly_server::serve(server, http, listener, shutdown)
        .await
        .map_err(|e| format!("serving: {e}"))
}

fn print_json(v: &Value) {
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
    let mut req = SubmitRequest {
        priority: Some(args.priority),
        memory_limit: args.memory_limit.clone(),
        timeout: args.timeout.clone(),
        set: args.overrides.clone(),
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
    let run = match client.submit(&req).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let id = run["id"].as_i64().unwrap_or(0);
    if args.json {
        print_json(&run);
    } else {
        let position = run["queue"]["position"]
            .as_u64()
            .map(|p| format!(", position {p} in the queue"))
            .unwrap_or_default();
        println!(
            "run {id} queued ({}{position}); watch it with: nomaly status {id} --follow",
            run["pipeline"].as_str().unwrap_or("?")
        );
    }
    if args.follow {
        return follow(&client, id, args.json).await;
    }
    0
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn progress_text(run: &Value) -> String {
    let p = &run["progress"];
    match run["state"].as_str() {
        Some("queued") => {
            let q = &run["queue"];
            match q["position"].as_u64() {
                Some(pos) => format!("#{pos} in queue ({})", cell(&q["waiting_for"])),
                None => "queued".into(),
            }
        }
        _ => match p["percent"].as_f64() {
            Some(pct) => {
                let rate = p["rows_per_second"]
                    .as_f64()
                    .map(|r| format!(" {:.0} rows/s", r))
                    .unwrap_or_default();
                let eta = p["eta_seconds"]
                    .as_f64()
                    .filter(|_| run["state"] == "running")
                    .map(|e| format!(" ETA {:.0}s", e))
                    .unwrap_or_default();
                format!("{pct:.0}%{rate}{eta}")
            }
            None => cell(&p["phase"]),
        },
    }
}

pub async fn runs(args: RunsArgs) -> i32 {
    let client = args.server.client();
    let v = match client.runs(args.state.as_deref(), args.limit).await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if args.json {
        print_json(&v);
        return 0;
    }
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("no runs; submit one with: nomaly submit PIPELINE.toml");
        return 0;
    }
    println!(
        "{:>5}  {:<24} {:<18} {:>4}  {:<20} {:<19} TRIGGER",
        "ID", "PIPELINE", "STATE", "PRI", "PROGRESS", "SUBMITTED"
    );
    for r in runs {
        println!(
            "{:>5}  {:<24} {:<18} {:>4}  {:<20} {:<19} {}",
            cell(&r["id"]),
            cell(&r["pipeline"]),
            cell(&r["state"]),
            cell(&r["priority"]),
            progress_text(&r),
            when(&r["submitted_ms"]),
            cell(&r["trigger"]),
        );
    }
    0
}

fn describe(run: &Value) {
    println!(
        "run {}: {} ({})",
        cell(&run["id"]),
        cell(&run["pipeline"]),
        cell(&run["state"])
    );
    println!("  file       {}", cell(&run["file"]));
    println!(
        "  priority   {}   memory budget {}",
        cell(&run["priority"]),
        run["memory_bytes"]
            .as_u64()
            .map(nomaly_server::server::human_bytes)
            .unwrap_or_default()
    );
    println!(
        "  submitted  {}   started {}   finished {}",
        when(&run["submitted_ms"]),
        when(&run["started_ms"]),
        when(&run["finished_ms"])
    );
    println!("  progress   {}", progress_text(run));
    let p = &run["progress"];
    if let (Some(done), Some(total)) = (p["chunks_done"].as_u64(), p["chunks_total"].as_u64()) {
        println!(
            "  chunks     {done}/{total}   retries {}",
            cell(&p["retries"])
        );
    }
    if let Some(e) = run["error"].as_str() {
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
            exit_for_state(v["state"].as_str())
        }
        Err(e) => fail(&e),
    }
}

/// As `nomaly run`: 0 succeeded, 3 validation failed, 130 cancelled, 1 otherwise; 0 while it
/// has not ended.
fn exit_for_state(state: Option<&str>) -> i32 {
    match state {
        Some("succeeded") | Some("queued") | Some("running") => 0,
        Some("validation_failed") => 3,
        Some("cancelled") => 130,
        _ => 1,
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
    let mut state = None;
    let mut last_line = std::time::Instant::now() - Duration::from_secs(10);
    let result = client
        .follow(id, |e| {
            if json {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            }
            match e.kind.as_str() {
                "snapshot" => {
                    if let Some(s) = e.data["state"].as_str() {
                        state = Some(s.to_string());
                    }
                }
                "progress" => {
                    let pct = e.data["percent"].as_f64().unwrap_or(0.0);
                    bar.set_position(pct as u64);
                    let msg =
                        progress_text(&serde_json::json!({"state": "running", "progress": e.data}));
                    bar.set_message(msg.clone());
                    if !draw && !json && last_line.elapsed() >= Duration::from_secs(1) {
                        eprintln!("run {id}: {msg}");
                        last_line = std::time::Instant::now();
                    }
                }
                "retry" if !json => {
                    bar.println(format!(
                        "retry: {} ({})",
                        cell(&e.data["place"]),
                        cell(&e.data["error"])
                    ));
                }
                "finished" => {
                    state = e.data["state"].as_str().map(str::to_string);
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
        Ok(run) => {
            if !json {
                describe(&run);
            }
            exit_for_state(run["state"].as_str().or(state.as_deref()))
        }
        Err(e) => fail(&e),
    }
}

pub async fn cancel(args: RunIdArgs) -> i32 {
    let client = args.server.client();
    match client.act(args.id, "cancel").await {
        Ok(v) => {
            if args.json {
                print_json(&v);
            } else if v["state"] == "running" {
                println!(
                    "run {}: cancelling (it stops at its next batch; committed chunks are kept)",
                    args.id
                );
            } else {
                println!("run {}: {}", args.id, cell(&v["state"]));
            }
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn retry(args: RetryArgs) -> i32 {
    let client = args.server.client();
    let action = if args.resume { "resume" } else { "retry" };
    match client.act(args.id, action).await {
        Ok(v) => {
            if args.json {
                print_json(&v);
            } else {
                println!("run {}: queued again ({action})", args.id);
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
                    let next = v["next_fires_ms"]
                        .as_array()
                        .and_then(|a| a.first())
                        .map(when)
                        .unwrap_or_else(|| "on its dependencies".into());
                    println!("registered {} (next run: {next})", cell(&v["name"]));
                    0
                }
                Err(e) => fail(&e),
            }
        }
        ScheduleCommand::List { json, server } => match server.client().get("/api/schedules").await
        {
            Ok(v) => {
                if json {
                    print_json(&v);
                    return 0;
                }
                let list = v["schedules"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!(
                        "no registered pipelines; add one with: nomaly schedule add PIPELINE.toml"
                    );
                }
                for s in list {
                    let next = s["next_fires_ms"]
                        .as_array()
                        .and_then(|a| a.first())
                        .map(when);
                    println!(
                        "{:<24} {:<16} {:<14} next {:<19} after {}",
                        cell(&s["name"]),
                        cell(&s["cron"]),
                        cell(&s["timezone"]),
                        next.unwrap_or_else(|| "-".into()),
                        s["after"]
                            .as_array()
                            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "-".into()),
                    );
                }
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
