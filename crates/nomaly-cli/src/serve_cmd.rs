//! `nomaly serve` (its terminal clients are `runs_cmd.rs`).

pub use crate::serve_args::{LogFormat, ServeArgs};
use nomaly_server::{AllowedRoots, HttpConfig, Server, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn default_db() -> PathBuf {
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
