//! `nomaly serve`'s flags: where it listens, what submitted pipelines may touch (SECURITY.md),
//! its budget and queue, its token and limits.

use clap::{Args, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The server keeps its runs in a SQLite file (--db). Submit with `nomaly submit FILE`, watch
with `nomaly runs` / `nomaly status ID --follow`, or through the API (GET /api/openapi.json).

A run starts when its memory budget fits in what the server has left (--memory-limit, default
80% of RAM) and fewer than --max-runs are running; until then it waits in the queue, higher
--priority first, and every --aging it waits raises its priority by one. A server stopped or
killed mid-run continues its runs from their committed chunks when it starts again.

Every route but /health and the dashboard's files needs `Authorization: Bearer <token>`. On
loopback the token is made at first start beside the job store (jobs.db -> jobs.token, mode 0600;
its path is printed) unless NOMALY_TOKEN or --token-file gives one; off loopback one must be
given. --no-auth (loopback only) turns it off. Who is trusted with what: SECURITY.md.

Examples:
  nomaly serve
  nomaly serve --port 9000 --allow-root /data --memory-limit 16GB --max-runs 4
  NOMALY_TOKEN=s3cret nomaly serve --bind 0.0.0.0 --allow-root /data --log-format json"
)]
pub struct ServeArgs {
    /// Address to listen on (a non-loopback address needs a token)
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,

    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,

    /// The job store (SQLite). Default: $XDG_DATA_HOME/nomaly/jobs.db (~/.local/share/...)
    #[arg(long, value_name = "PATH")]
    pub(crate) db: Option<PathBuf>,

    /// Directories pipelines and their data may live in (repeatable). Default: the current
    /// directory. Paths are checked after resolving symlinks and `..`
    #[arg(long = "allow-root", value_name = "DIR")]
    pub(crate) allow_roots: Vec<PathBuf>,

    /// Remote locations submitted pipelines may read, write or notify (repeatable), as
    /// patterns where * matches anything: s3://bucket/team/*, https://hooks.example.com/*,
    /// smtps://smtp.example.com* (email alerts: submitters may then mail anyone through it).
    /// Default: none. An http(s) or smtp(s) URL to loopback, link-local or private addresses is
    /// allowed only by a pattern naming that host without a wildcard. Opens network access:
    /// SECURITY.md
    #[arg(long = "allow-location", value_name = "PATTERN")]
    pub(crate) allow_locations: Vec<String>,

    /// Environment variables submitted pipelines may expand as ${NAME} (repeatable), as
    /// patterns: NOMALY_DATA_*, BUCKET. Default: none (any ${NAME} is refused, naming it and
    /// this flag, never its value); also the names `[[notify]] password_env` may read. Exposes
    /// those variables' values: SECURITY.md
    #[arg(long = "allow-env", value_name = "PATTERN")]
    pub(crate) allow_env: Vec<String>,

    /// Memory all running runs may reserve together, e.g. 16GB (default: 80% of RAM or the
    /// cgroup limit)
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory_limit: Option<String>,

    /// The most runs at once
    #[arg(long, default_value_t = 2)]
    pub(crate) max_runs: usize,

    /// The memory budget of a run whose pipeline sets none (default: the server's budget
    /// divided by --max-runs)
    #[arg(long, value_name = "SIZE")]
    pub(crate) run_memory: Option<String>,

    /// A queued run's priority rises by one for every this long it waits (e.g. 5m)
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub(crate) aging: String,

    /// Where runs whose pipeline names no [run] engine execute: local, standalone or
    /// ballista://HOST:PORT
    #[arg(long, value_name = "ENGINE")]
    pub(crate) engine: Option<String>,

    /// A Ballista scheduler to show in the dashboard's Cluster view (ballista://HOST:PORT):
    /// executors, jobs, stages, plans, cancel
    #[arg(long, value_name = "ENGINE")]
    pub(crate) scheduler: Option<String>,

    /// A file holding the API token (else NOMALY_TOKEN). Default on loopback: a token made at
    /// first start in <db>.token (mode 0600), which the terminal clients on this machine read;
    /// off loopback a token must be given
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// Serve the API without a token (loopback only). Opens every route to any local process
    /// and user: SECURITY.md
    #[arg(long)]
    pub(crate) no_auth: bool,

    /// Host names the API answers to besides loopback names and the --bind address
    /// (repeatable), e.g. nomaly.internal. Requests naming another Host are refused (421), which
    /// stops DNS rebinding; a server bound to 0.0.0.0 without this flag answers to any name
    #[arg(long = "allow-host", value_name = "NAME")]
    pub(crate) allow_hosts: Vec<String>,

    /// Let pipelines' [[notify]] type = "command" run shell commands on the server
    #[arg(long)]
    pub(crate) allow_notify_commands: bool,

    /// Event streams (/api/events, /api/runs/ID/events) one client address may hold open at
    /// once; more are refused with 429
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) max_streams_per_client: usize,

    /// Connections open at once; one more is closed before anything is read
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub(crate) max_connections: usize,

    /// How long a client may take to send a request's headers before its connection is closed
    /// (slow clients cannot hold connections open), e.g. 10s
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub(crate) header_timeout: String,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Clients then use
    /// https://HOST:PORT; plain HTTP is refused
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Largest request body accepted, e.g. 1MB
    #[arg(long, default_value = "1MB", value_name = "SIZE")]
    pub(crate) max_body: String,

    /// Log lines as text or as JSON objects (one per line)
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
