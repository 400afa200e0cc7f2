//! The processes of a Ballista cluster that knows Nomaly's functions: `nomaly scheduler` and
//! `nomaly executor`.
//!
//! Ballista carries function calls by name, so every process must have the functions: the client
//! plans the SQL (its session comes from [`crate::build_context`]), the scheduler decodes the
//! logical plan and plans it physically (its session comes from [`session_state`], through the
//! scheduler's session builder) and the executors decode and run the stages (their function
//! registry comes from the same state). The command-line flags are Ballista's own
//! ([`SchedulerFlags`], [`ExecutorFlags`]) so that a Ballista user's deployment carries over.

use crate::ballista::flight_sql_auth::TokenAuthenticator;
use crate::error::{EngineError, Result};
use crate::object_stores::EnvObjectStoreRegistry;
use crate::session::tune_session_config;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A cluster process's TLS: the configuration its own port is served with (if any) and the CA
/// it trusts for the connections it opens to the others (if any).
#[derive(Clone, Debug, Default)]
pub struct ProcessTls {
    pub serve: Option<Arc<rustls::ServerConfig>>,
    pub ca: Option<Arc<Vec<u8>>>,
}

impl ProcessTls {
    fn is_on(&self) -> bool {
        self.serve.is_some() || self.ca.is_some()
    }
}

/// `nomaly scheduler`'s flags: Ballista's scheduler flags.
pub use ballista_scheduler::config::Config as SchedulerFlags;

/// `nomaly executor`'s flags: Ballista's executor flags.
pub use ballista_executor::config::Config as ExecutorFlags;

/// A Ballista session state with Nomaly's functions and rules on top of Ballista's defaults (its
/// optimizer rules and function lists), for the session `config`.
pub fn session_state(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    // Ballista's adaptive planner runs a fixed list of physical rules, without the per-segment
    // fusion: `OVER (PARTITION BY ...)` would join every segment's model again. The static
    // planner runs the session's rules.
    let config = config.with_ballista_adaptive_query_planner(false);
    let builder = SessionStateBuilder::new()
        .with_default_features()
        .with_config(tune_session_config(config))
        // The scheduler plans queries over s3://... tables (listing, schemas): it builds the
        // stores it needs from its environment, as executors do.
        .with_runtime_env(Arc::new(
            RuntimeEnvBuilder::new()
                .with_object_store_registry(Arc::new(EnvObjectStoreRegistry::default()))
                .build()?,
        ))
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        // `OVER (PARTITION BY ...)` one segment at a time on the executors, as locally.
        .with_physical_optimizer_rules(nomaly_physical::cluster_optimizer_rules())
        .with_scalar_functions(ballista_scalar_functions())
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions());
    Ok(nomaly_udfs::with_nomaly(builder).build())
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Ballista(format!("{what}: {e}"))
}

/// Runs a scheduler until the process is stopped: gRPC, the REST API (`/api/jobs`, ...) and
/// health checks on one port. `codec` decodes the physical plans clients submit and encodes the
/// stages (Ballista's, wrapped by one that knows the client's own operators). With `--flight-sql`,
/// `flight_sql_auth` (if any) decides which Flight SQL clients may run queries.
pub async fn run_scheduler(
    flags: SchedulerFlags,
    codec: Arc<dyn PhysicalExtensionCodec>,
    flight_sql_auth: Option<TokenAuthenticator>,
    page: Option<axum::Router>,
    token: Option<Arc<String>>,
    tls: ProcessTls,
) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", flags.bind_host, flags.bind_port)
        .parse()
        .map_err(|e| failed("--bind-host/--bind-port", e))?;
    let config: SchedulerConfig = flags.try_into().map_err(|e| failed("scheduler flags", e))?;
    // The cluster reads the session builder when it is created: set it first.
    let mut config = config.with_override_session_builder(Arc::new(session_state));
    config.override_physical_codec = Some(codec);
    // Clients send logical plans; ours may scan `synthetic_rows(...)`.
    config.override_logical_codec = Some(Arc::new(crate::ballista::codec::LogicalCodec::default()));
    // Flight SQL checks the cluster token in its handshake unless it has a token of its own.
    let flight_sql_auth =
        flight_sql_auth.or_else(|| token.as_ref().map(|t| TokenAuthenticator::new(t.as_str())));
    if let Some(auth) = flight_sql_auth {
        config = config.with_flight_sql_authenticator(Arc::new(auth));
    }
    if token.is_some() || tls.is_on() {
        // Executors pull their tasks: pushing would need the executors' gRPC port, which
        // Ballista 55 serves without a hook for the token or TLS. The scheduler's own
        // connections to executors (its Flight proxy among them) carry the token and TLS.
        config = config.with_scheduler_policy(TaskSchedulingPolicy::PullStaged);
        let link = crate::ballista::auth::ClusterLink {
            token: token.clone(),
            ca: tls.ca.clone(),
        };
        if let Some(f) = link.endpoint_override() {
            config = config.with_override_create_grpc_client_endpoint(f);
        }
    }
    if page.is_some() {
        config.web_tui_route = crate::ballista::scheduler_server::BALLISTA_TUI_ROUTE.to_string();
    }
    config
        .validate()
        .map_err(|e| failed("scheduler flags", e))?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| failed("scheduler", e))?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| failed("scheduler", e))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| failed(&format!("scheduler on {addr}"), e))?;
    tracing::info!(%addr, "nomaly scheduler listening");
    crate::ballista::scheduler_server::serve_scheduler(listener, scheduler, page, token, tls.serve)
        .await
}

/// Runs an executor until the process is stopped (Ctrl-C or SIGTERM: it tells the scheduler and
/// drains), with `/healthz` and `/readyz` on `--bind-health-port`. `codec` decodes the stages (the
/// scheduler's codec). With a `token`, the executor presents it on every connection it opens
/// (to the scheduler, to other executors' Flight ports) and its own Flight port requires it; it
/// then pulls its tasks, so it opens no gRPC port (see [`run_scheduler`]).
pub async fn run_executor(
    flags: ExecutorFlags,
    codec: Arc<dyn PhysicalExtensionCodec>,
    token: Option<Arc<String>>,
    tls: ProcessTls,
) -> Result<()> {
    let health_addr: SocketAddr = format!("{}:{}", flags.bind_host, flags.bind_health_port)
        .parse()
        .map_err(|e| failed("--bind-host/--bind-health-port", e))?;
    let mut config: ExecutorProcessConfig =
        flags.try_into().map_err(|e| failed("executor flags", e))?;
    // Tasks read s3://, gs://, az:// and http(s):// inputs through stores built from this
    // process's environment on first use; spill files go to the work directory, as Ballista's do.
    let work_dir = match &config.work_dir {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join(format!("nomaly-executor-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| failed(&dir.display().to_string(), e))?;
            config.work_dir = Some(dir.display().to_string());
            dir
        }
    };
    let stores = Arc::new(EnvObjectStoreRegistry::default());
    // Ballista gives each task a FairSpillPool of its slots' share of `--memory-pool-size`. One
    // pool shared by all tasks (Nomaly's `budget_pool`) was measured to let one task's sort starve
    // another task's segment operator (`benchmarks/README.md`, "A cluster on this machine"), so
    // executors keep Ballista's pools.
    config.override_runtime_producer = Some(Arc::new(move |_: &SessionConfig| {
        Ok(Arc::new(
            RuntimeEnvBuilder::new()
                .with_temp_file_path(work_dir.clone())
                .with_object_store_registry(stores.clone())
                .build()?,
        ))
    }));
    let state = session_state(SessionConfig::new())?;
    config.override_function_registry = Some(Arc::new(BallistaFunctionRegistry::from(&state)));
    config.override_physical_codec = Some(codec);
    if token.is_some() || tls.is_on() {
        config.task_scheduling_policy = TaskSchedulingPolicy::PullStaged;
        let link = crate::ballista::auth::ClusterLink {
            token: token.clone(),
            ca: tls.ca.clone(),
        };
        if let Some(endpoint) = link.endpoint_override() {
            config.override_create_grpc_client_endpoint = Some(endpoint.clone());
            config.override_config_producer = Some(Arc::new(move || {
                SessionConfig::new_with_ballista()
                    .with_ballista_override_create_grpc_client_endpoint(endpoint.clone())
            }));
        }
        config.override_arrow_flight_service =
            Some(crate::ballista::executor_flight::guarded_flight(
                token,
                tls.serve,
                config.grpc_max_encoding_message_size as usize,
                config.grpc_max_decoding_message_size as usize,
            ));
    }
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let health = ballista_executor::health::spawn_health_server(
        health_addr,
        config.health.clone(),
        health_stopped,
    );
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    let _ = health.await;
    result.map_err(|e| failed("executor", e))
}
