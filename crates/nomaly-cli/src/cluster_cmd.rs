//! `nomaly scheduler` and `nomaly executor`: the processes of a Ballista cluster that knows every
//! Nomaly function. The flags are Ballista's own (`ballista-scheduler --help`,
//! `ballista-executor --help`), except that both bind to 127.0.0.1 unless `--bind-host` says
//! otherwise: a process started to try things out is not reachable from the network.

use clap::Args;
use nomaly_engine::ballista::flight_sql_auth::TokenAuthenticator;
use nomaly_engine::ballista::processes::{
    ExecutorFlags, SchedulerFlags, run_executor, run_scheduler,
};
use nomaly_engine::ballista::rest::{Executor, Job, JobStages, TaskStatus};
use nomaly_engine::ballista::{RestError, SchedulerRest};
use std::path::PathBuf;

/// The address both processes bind to when `--bind-host` is not given.
pub const DEFAULT_BIND_HOST: &str = "127.0.0.1";

#[derive(Args)]
#[command(after_help = "Examples:\n  \
nomaly scheduler                                  # 127.0.0.1:50050: gRPC, REST API (/api/jobs) and health\n  \
nomaly scheduler --bind-host 0.0.0.0 --external-host sched.example --auth-token-file cluster.token\n  \
nomaly scheduler --flight-sql --flight-sql-token-file token.txt   # JDBC/ADBC clients: password = the token\n  \
nomaly sql --engine ballista://127.0.0.1:50050 -f examples/quickstart.sql\n\n\
Logs: --log-level-setting (default INFO), or NOMALY_LOG (else RUST_LOG).")]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub flags: SchedulerFlags,

    /// With --flight-sql: Flight SQL clients must present the token this file holds, as the
    /// password of the handshake (JDBC/ADBC `password`, any user name) or as a bearer token.
    /// Without it, any client that reaches the port may run queries.
    #[arg(long, value_name = "FILE", requires = "flight_sql")]
    pub flight_sql_token_file: Option<PathBuf>,
    /// Every request to this port (REST API, gRPC, Flight) must carry the token this file
    /// holds: executors are started with the same --auth-token-file, clients send it from
    /// NOMALY_CLUSTER_TOKEN or NOMALY_CLUSTER_TOKEN_FILE, Flight SQL clients as the password
    /// (unless --flight-sql-token-file gives Flight SQL its own). Only health checks and the
    /// Cluster page's files stay open. Executors then pull their tasks (the push policy is
    /// overridden). Required when --bind-host is not a loopback address. Default: none, and any
    /// client that reaches 127.0.0.1 may submit (SECURITY.md)
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub tls: ClusterTlsArgs,
}

/// TLS on a cluster process's port (SECURITY.md, "The cluster").
#[derive(Args, Debug, Clone)]
pub struct ClusterTlsArgs {
    /// Serve this process's port (the scheduler's; an executor's Flight port) over TLS with this
    /// PEM certificate chain (with --tls-key). Clients then trust its CA with NOMALY_CLUSTER_CA.
    /// Default: plain text
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connect to the other cluster processes over TLS, trusting the CA in this PEM file
    /// (executors: the scheduler and other executors; the scheduler: its Flight proxy to
    /// executors). Default: plain text
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl ClusterTlsArgs {
    fn load(&self) -> Result<nomaly_engine::ballista::processes::ProcessTls, String> {
        let serve = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(nomaly_engine::connections::tls_config(cert, key)?),
            _ => None,
        };
        let ca = match &self.tls_ca {
            Some(f) => Some(nomaly_engine::ballista::tls::read_ca(f, "--tls-ca")?),
            None => None,
        };
        Ok(nomaly_engine::ballista::processes::ProcessTls { serve, ca })
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
nomaly executor                                   # joins 127.0.0.1:50050; ports 50051 (flight), 50052 (gRPC), 50053 (health)\n  \
nomaly executor --scheduler-host sched.example --bind-host 0.0.0.0 --auth-token-file cluster.token\n\n\
Every executor must read the inputs and write the outputs at the paths the client names: share the\n\
filesystem (or use an object store). Logs: --log-level-setting (default INFO), or NOMALY_LOG (else RUST_LOG).")]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub flags: ExecutorFlags,

    /// The cluster token (the scheduler's --auth-token-file): the executor presents it to the
    /// scheduler and to other executors, and its Flight port (shuffle files and results)
    /// answers only callers that present it. The executor then pulls its tasks and opens no
    /// gRPC port. Required when --bind-host is not a loopback address. Default: none, and the
    /// Flight port answers anyone that reaches 127.0.0.1 (SECURITY.md)
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// The executor's memory budget, e.g. 4GB: its operators' pool is this less the process's
    /// own footprint and 160 MiB per task slot for reading (row groups, shuffle fetches), shared
    /// by its concurrent tasks, and they spill to the work directory to stay within it. Default: 80% of RAM or the cgroup limit, as for `nomaly run`. Ballista's
    /// --memory-pool-size sets the pool itself instead (not both)
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,

    #[command(flatten)]
    pub tls: ClusterTlsArgs,
}

/// The operators' pool of an executor: `--memory-pool-size` as given, else the budget
/// (`--memory-limit`, default 80% of RAM or the cgroup limit) less the process's footprint,
/// with the line that says so.
fn executor_pool(
    memory_limit: Option<&str>,
    pool_size: Option<u64>,
    vcores: usize,
) -> Result<(u64, String), String> {
    match (memory_limit, pool_size) {
        (Some(_), Some(_)) => Err(
            "--memory-limit and --memory-pool-size both size the executor's memory: give one \
             (--memory-limit is the whole process's budget, --memory-pool-size the operators' \
             pool alone)"
                .into(),
        ),
        (None, Some(pool)) => Ok((
            pool,
            format!("operator pool {pool} bytes (--memory-pool-size)"),
        )),
        (limit, None) => {
            let budget = match limit {
                Some(text) => nomaly_engine::parse_byte_size(text)
                    .map_err(|e| format!("--memory-limit {text}: {}", e.user_message()))?,
                None => nomaly_engine::default_budget(),
            };
            // Each task slot may hold a row group being read (and shuffle blocks being fetched)
            // outside the pool, as a local run's readers are.
            let readers = vcores.saturating_mul(nomaly_engine::budget::EXECUTOR_READER_ALLOWANCE);
            let split = nomaly_engine::BudgetSplit::new(
                budget,
                nomaly_engine::budget::process_footprint(),
                readers,
                vcores,
            );
            let mut line = format!("{}, shared by {vcores} task slots", split.describe());
            if let Some(short) = split.shortfall() {
                line.push_str(&format!("; warning: {short}"));
            }
            Ok((split.pool as u64, line))
        }
    }
}

/// Whether `host` (an address or a name) is reachable from this machine only: a name counts
/// when every address it resolves to is loopback.
pub fn is_loopback_host(host: &str) -> bool {
    use std::net::ToSocketAddrs;
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Ballista's `--log-dir` writes log files from its own binaries' logger, which these processes
/// do not use: refused rather than silently ignored.
fn refuse_log_dir(log_dir: &Option<String>) -> Result<(), String> {
    match log_dir {
        Some(dir) => Err(format!(
            "--log-dir {dir}: nomaly's cluster processes log to standard error (filter with \
             --log-level-setting, NOMALY_LOG or RUST_LOG); redirect it, or let the service \
             manager (systemd, Docker, Kubernetes) collect and rotate it"
        )),
        None => Ok(()),
    }
}

/// What a cluster process starts with, or why it must not start (exit 2): no `--log-dir`, the
/// token (required off loopback) and TLS.
fn security(
    log_dir: &Option<String>,
    token_file: Option<&std::path::Path>,
    bind_host: &str,
    tls: &ClusterTlsArgs,
) -> Result<
    (
        Option<std::sync::Arc<String>>,
        nomaly_engine::ballista::processes::ProcessTls,
    ),
    String,
> {
    refuse_log_dir(log_dir)?;
    Ok((cluster_token(token_file, bind_host)?, tls.load()?))
}

/// The token from `--auth-token-file`; refused (exit 2) when missing off loopback.
fn cluster_token(
    file: Option<&std::path::Path>,
    bind_host: &str,
) -> Result<Option<std::sync::Arc<String>>, String> {
    match file {
        Some(f) => nomaly_engine::ballista::auth::read_token_file(f, "--auth-token-file")
            .map(|t| Some(std::sync::Arc::new(t))),
        None if is_loopback_host(bind_host) => Ok(None),
        None => Err(format!(
            "--bind-host {bind_host} is reachable from the network, so the cluster needs a \
             token: give --auth-token-file FILE (the same file to the scheduler and every \
             executor; e.g. `openssl rand -hex 32 > FILE`), or bind 127.0.0.1 (SECURITY.md)"
        )),
    }
}

/// The log filter the environment asks for: `NOMALY_LOG`, else `RUST_LOG` (the convention of
/// Rust programs), if either is set and not empty.
pub fn env_log_filter() -> Option<String> {
    ["NOMALY_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// The log filter for a cluster process: the environment's ([`env_log_filter`]), else the
/// `--log-level-setting` flag.
pub fn log_filter(args_filter: &str) -> String {
    env_log_filter().unwrap_or_else(|| args_filter.to_string())
}

pub async fn scheduler(args: SchedulerArgs) -> i32 {
    let auth = match args
        .flight_sql_token_file
        .as_deref()
        .map(TokenAuthenticator::from_file)
    {
        None => None,
        Some(Ok(auth)) => Some(auth),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let loaded = security(
        &args.flags.log_dir,
        args.auth_token_file.as_deref(),
        &args.flags.bind_host,
        &args.tls,
    );
    let (token, tls) = match loaded {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let addr = format!("{}:{}", args.flags.bind_host, args.flags.bind_port);
    if token.is_none() {
        eprintln!(
            "warning: no --auth-token-file: any client that reaches {addr} can run plans on the \
             cluster (SECURITY.md)"
        );
    }
    let flight = match (args.flags.flight_sql, &auth, &token) {
        (false, _, _) => String::new(),
        (true, None, None) => format!(", Flight SQL on {addr} for any client"),
        (true, _, _) => format!(", Flight SQL on {addr} with a token"),
    };
    eprintln!("nomaly scheduler on {addr} (REST API: http://{addr}/api/jobs{flight})");
    report(
        run_scheduler(
            args.flags,
            nomaly_pipeline::physical_codec(),
            auth,
            Some(nomaly_server::dashboard::scheduler_page()),
            token,
            tls,
        )
        .await,
    )
}

pub async fn executor(args: ExecutorArgs) -> i32 {
    let f = &args.flags;
    let loaded = security(
        &f.log_dir,
        args.auth_token_file.as_deref(),
        &f.bind_host,
        &args.tls,
    );
    let (token, tls) = match loaded {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let vcores = f.concurrent_tasks.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (pool, memory) =
        match executor_pool(args.memory_limit.as_deref(), f.memory_pool_size, vcores) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
    eprintln!(
        "nomaly executor on {}:{} joining the scheduler at {}:{}{}; {memory}",
        f.bind_host,
        f.bind_port,
        f.scheduler_host,
        f.scheduler_port,
        if token.is_some() { " with a token" } else { "" }
    );
    let mut flags = args.flags;
    flags.memory_pool_size = Some(pool);
    report(run_executor(flags, nomaly_pipeline::physical_codec(), token, tls).await)
}

fn report(result: nomaly_engine::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", e.user_message());
            e.exit_code()
        }
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
nomaly jobs                                       # the scheduler at 127.0.0.1:50050\n  \
nomaly jobs --scheduler ballista://sched.example:50050\n  \
NOMALY_SCHEDULER=sched.example:50050 nomaly jobs --json\n\n\
Finished jobs drop out of the scheduler's list after its --finished-job-state-clean-up-interval-seconds (3600).")]
pub struct JobsArgs {
    /// The scheduler: ballista://HOST:PORT, HOST:PORT or http://HOST:PORT
    #[arg(
        long,
        env = "NOMALY_SCHEDULER",
        default_value = "127.0.0.1:50050",
        value_name = "ADDRESS"
    )]
    scheduler: String,

    /// Print the scheduler's JSON (its REST API: /api/jobs, /api/job/ID/stages, /api/executors)
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct JobArgs {
    /// The job's id (first column of `nomaly jobs`)
    #[arg(value_name = "JOB_ID")]
    id: String,

    #[command(flatten)]
    jobs: JobsArgs,
}

impl JobsArgs {
    /// The client of the scheduler's REST API.
    fn rest(&self) -> Result<SchedulerRest, String> {
        SchedulerRest::new(&self.scheduler).map_err(|e| format!("--scheduler {e}"))
    }
}

/// The request's error, with where the address came from.
fn from_flag(e: RestError) -> String {
    format!("{e} (--scheduler or NOMALY_SCHEDULER)")
}

/// Milliseconds since the epoch to seconds elapsed (to `end`, or to now while running).
fn elapsed(job: &Job) -> String {
    let end = match job.end_time {
        e if e > 0 => e,
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    if job.start_time == 0 {
        return "-".into();
    }
    format!(
        "{:.1} s",
        end.saturating_sub(job.start_time) as f64 / 1000.0
    )
}

/// `nomaly jobs --json`: the scheduler's answers, as it sent them.
#[derive(serde::Serialize)]
struct JobsJson {
    jobs: Vec<Job>,
    executors: Vec<Executor>,
}

/// `nomaly job ID --json`.
#[derive(serde::Serialize)]
struct JobJson {
    job: Job,
    stages: JobStages,
}

pub async fn jobs(args: JobsArgs) -> i32 {
    let answers = async {
        let rest = args.rest()?;
        let jobs = rest.jobs().await.map_err(from_flag)?;
        let executors = rest.executors().await.map_err(from_flag)?;
        Ok::<_, String>(JobsJson { jobs, executors })
    };
    let JobsJson { jobs, executors } = match answers.await {
        Ok(answers) if args.json => return print_json(&answers),
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    println!(
        "{:<10} {:<40} {:<10} {:>7} {:>9} {:>9}",
        "JOB", "NAME", "STATUS", "STAGES", "PROGRESS", "ELAPSED"
    );
    for j in &jobs {
        let name: String = j.job_name.chars().take(40).collect();
        println!(
            "{:<10} {:<40} {:<10} {:>7} {:>8}% {:>9}",
            j.job_id,
            name,
            j.status,
            format!("{}/{}", j.completed_stages, j.num_stages),
            j.percent_complete,
            elapsed(j)
        );
    }
    println!("\n{} job(s); {} executor(s):", jobs.len(), executors.len());
    for e in &executors {
        println!(
            "  {}  {}:{}  {} task slots",
            e.id, e.host, e.port, e.specification.vcores
        );
    }
    0
}

pub async fn job(args: JobArgs) -> i32 {
    let answers = async {
        let rest = args.jobs.rest()?;
        let job = rest.job(&args.id).await.map_err(from_flag)?;
        let stages = rest.stages(&args.id).await.map_err(from_flag)?;
        Ok::<_, String>(JobJson { job, stages })
    };
    let JobJson { job, stages } = match answers.await {
        Ok(answers) if args.jobs.json => return print_json(&answers),
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    println!(
        "job {} \"{}\": {} ({}), {} of {} stages, {}",
        job.job_id,
        job.job_name,
        job.status,
        job.job_status,
        job.completed_stages,
        job.num_stages,
        elapsed(&job)
    );
    for s in &stages.stages {
        let done = s
            .tasks
            .iter()
            .flatten()
            .filter(|t| matches!(t.status, TaskStatus::Successful))
            .count();
        println!(
            "  stage {}: {}, {done}/{} tasks done, {} rows in, {} rows out",
            s.stage_id,
            s.stage_status,
            s.tasks.len(),
            s.input_rows,
            s.output_rows
        );
    }
    0
}

fn print_json(value: &impl serde::Serialize) -> i32 {
    match serde_json::to_string(value) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::executor_pool;

    #[test]
    fn an_executors_pool_is_its_budget_less_the_process_or_the_pool_given() {
        let (pool, line) = executor_pool(Some("512MB"), None, 2).unwrap();
        let footprint = nomaly_engine::budget::process_footprint() as u64;
        let readers = 2 * nomaly_engine::budget::EXECUTOR_READER_ALLOWANCE as u64;
        assert_eq!(pool, (512 << 20) - footprint - readers);
        assert!(line.starts_with("memory budget 512 MiB: "), "{line}");
        assert!(line.ends_with("shared by 2 task slots"), "{line}");
        assert_eq!(executor_pool(None, Some(1 << 30), 2).unwrap().0, 1 << 30);
        let e = executor_pool(Some("1GB"), Some(1 << 30), 2).unwrap_err();
        assert!(e.contains("give one"), "{e}");
        let e = executor_pool(Some("lots"), None, 2).unwrap_err();
        assert!(e.starts_with("--memory-limit lots: "), "{e}");
        let (pool, _) = executor_pool(None, None, 2).unwrap();
        assert!(pool > 0 && pool < nomaly_engine::default_budget() as u64);
    }
}
