//! A Ballista cluster that runs physical plans built by a local session.
//!
//! Pipelines plan on a local `SessionContext` (chunk tables, steps, the fit and score plans) and
//! need each chunk's rows back as one stream to write part `i`. Ballista 55 accepts an
//! already-built physical plan (`execute_physical_plan`), so a pipeline on Ballista submits the
//! fit plan as one job and, per chunk, the scoring plan narrowed to that chunk's file group as
//! another: every operator in them is a standard DataFusion one that Ballista's codec carries, and
//! our functions travel by name (the scheduler and executors are built from the same state, so
//! they have them).

use super::rest::SchedulerRest;
use crate::error::{EngineError, Result};
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_expr::Partitioning;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A Ballista scheduler that runs physical plans as jobs: one started in this process with an
/// executor ([`ClusterClient::start`], `engine = "standalone"`) or the scheduler of a cluster of
/// `nomaly scheduler` / `nomaly executor` processes ([`ClusterClient::connect`]).
pub struct ClusterClient {
    scheduler_url: String,
    session_id: String,
    config: SessionConfig,
    ballista: BallistaConfig,
    /// Jobs submitted so far (reported, so a run shows it really ran on Ballista).
    jobs: AtomicUsize,
    /// Bytes of Arrow data received from the jobs (what the client moved over the network).
    received: Arc<AtomicU64>,
    /// Task slots of the cluster's executors when the client connected (0: unknown).
    slots: usize,
    /// Ends the name of every job this client submits (`... [tag]`): tells one run's jobs from
    /// another's in the scheduler's job list, and finds them to cancel.
    tag: String,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("scheduler_url", &self.scheduler_url)
            .finish()
    }
}

impl ClusterClient {
    /// Starts the scheduler and an executor with `task_slots` slots. The executor shares the
    /// state's runtime (memory pool, object stores, spill directory); the scheduler and executor
    /// know the state's functions. The state's config must carry Ballista's settings
    /// (`SessionConfig::new_with_ballista`).
    pub async fn start(state: &SessionState, task_slots: usize) -> Result<ClusterClient> {
        let fail = |what: &str, e: String| EngineError::Ballista(format!("{what}: {e}"));
        let addr = ballista_scheduler::standalone::new_standalone_scheduler_from_state(state)
            .await
            .map_err(|e| fail("scheduler", e.to_string()))?;
        let scheduler_url = format!("http://127.0.0.1:{}", addr.port());
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match SchedulerGrpcClient::connect(scheduler_url.clone()).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    return Err(fail("connecting to the scheduler", e.to_string()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        ballista_executor::new_standalone_executor_from_state(client, task_slots.max(1), state)
            .await
            .map_err(|e| fail("executor", e.to_string()))?;
        Ok(ClusterClient::new(
            scheduler_url,
            state,
            task_slots.max(1),
            false,
        ))
    }

    /// A client of the scheduler at `address` (`host:port`), submitting jobs in `state`'s session.
    /// The executors must read the paths the plans name (a shared filesystem or object stores).
    pub async fn connect(address: &str, state: &SessionState) -> Result<ClusterClient> {
        check_scheduler(address).await?;
        let rest = SchedulerRest::new(address).map_err(|e| EngineError::Ballista(e.to_string()))?;
        let slots = executor_slots(&rest).await;
        Ok(ClusterClient::new(
            rest.base().to_string(),
            state,
            slots,
            true,
        ))
    }

    /// `remote`: a cluster of other processes (TLS with the client's cluster CA, if set), not
    /// the in-process one of `standalone`.
    fn new(
        scheduler_url: String,
        state: &SessionState,
        slots: usize,
        remote: bool,
    ) -> ClusterClient {
        let config = crate::ballista::auth::with_client_credentials(state.config().clone(), remote);
        ClusterClient {
            scheduler_url,
            session_id: state.session_id().to_string(),
            ballista: config.ballista_config(),
            config,
            jobs: AtomicUsize::new(0),
            received: Arc::new(AtomicU64::new(0)),
            slots,
            tag: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        }
    }

    /// Jobs submitted so far.
    pub fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Tasks the cluster's executors run at once (summed over the executors registered when the
    /// client connected; 0 when the scheduler did not say): how many single-task jobs keep it busy.
    pub fn task_slots(&self) -> usize {
        self.slots
    }

    /// Bytes of Arrow data received from jobs so far ([`batch_bytes`]).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The tag that ends every job name this client submits.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Cancels this client's jobs that are still queued or running (a run that stopped does not
    /// leave work on the cluster); returns how many. Best effort: a scheduler that cannot be asked
    /// (no REST API on an in-process scheduler) leaves them to finish.
    pub async fn cancel_unfinished(&self) -> usize {
        let listed = async {
            SchedulerRest::at_base(self.scheduler_url.clone())?
                .jobs()
                .await
        };
        let jobs = match listed.await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!("could not list the jobs to cancel: {e}");
                return 0;
            }
        };
        let suffix = format!("[{}]", self.tag);
        let unfinished: Vec<String> = jobs
            .into_iter()
            .filter(|j| {
                j.job_name.ends_with(&suffix) && matches!(j.status.as_str(), "Queued" | "Running")
            })
            .map(|j| j.job_id)
            .collect();
        let mut client =
            match crate::ballista::auth::scheduler_client(self.scheduler_url.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("could not connect to cancel the jobs: {e}");
                    return 0;
                }
            };
        let mut cancelled = 0;
        for job_id in unfinished {
            let request = CancelJobParams {
                job_id: job_id.clone(),
            };
            match client.cancel_job(request).await {
                Ok(r) if r.get_ref().cancelled => cancelled += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(%job_id, "could not cancel the job: {e}"),
            }
        }
        cancelled
    }

    /// Runs `plan` as one Ballista job named `job_name [tag]` (what the scheduler's `/api/jobs`
    /// and Ballista's TUI show); the stream yields its output partitions' rows, in the plan's own
    /// schema (rows come back through shuffle files, whose schema may differ in field nullability
    /// and metadata; the data types are the plan's).
    pub async fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        job_name: &str,
    ) -> DfResult<SendableRecordBatchStream> {
        let codec = self.config.ballista_physical_extension_codec();
        let schema = plan.schema();
        self.jobs.fetch_add(1, Ordering::Relaxed);
        let stream = execute_physical_plan::<PhysicalPlanNode>(
            self.scheduler_url.clone(),
            &self.ballista,
            plan,
            codec.as_ref(),
            self.session_id.clone(),
            self.config
                .clone()
                .with_ballista_job_name(&format!("{job_name} [{}]", self.tag)),
        )
        .await?;
        let target = schema.clone();
        let received = self.received.clone();
        let conformed = stream.map(move |batch| {
            let batch = batch?;
            received.fetch_add(batch_bytes(&batch), Ordering::Relaxed);
            // Shuffle files may also hydrate dictionary columns: cast back to the plan's types.
            let columns = batch
                .columns()
                .iter()
                .zip(target.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c.clone())
                    } else {
                        datafusion::arrow::compute::cast(c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new_with_options(
                target.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, conformed)))
    }
}

/// The bytes a batch's rows occupy in its Arrow buffers (values, offsets, validity; not the
/// capacity of the allocations): what moving the rows costs, whatever the transport adds.
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// Names the Ballista jobs `ctx` submits from now on (what the scheduler's `/api/jobs` and
/// Ballista's TUI show); local sessions have no jobs and are left alone.
pub fn name_jobs(ctx: &datafusion::prelude::SessionContext, name: &str) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let options = state.config_mut().options_mut();
    if options.extensions.get::<BallistaConfig>().is_some() {
        // A name is a label: a key the session does not know is not worth failing the query.
        let _ = options.set(ballista_core::config::BALLISTA_JOB_NAME, name);
    }
}

/// The task slots of the executors registered at the scheduler, from its REST API
/// (`/api/executors`); 0 if it cannot be read.
async fn executor_slots(rest: &SchedulerRest) -> usize {
    match rest.executors().await {
        Ok(executors) => executors
            .iter()
            .map(|e| e.specification.vcores as usize)
            .sum(),
        Err(e) => {
            tracing::warn!("could not read the cluster's task slots: {e}");
            0
        }
    }
}

/// Fails with a message saying how to start one unless a scheduler answers at `address`
/// (`host:port`) within 10 seconds: a session on an unreachable cluster would otherwise fail only
/// at its first query, with a transport error.
pub async fn check_scheduler(address: &str) -> Result<()> {
    let url = crate::ballista::tls::rest_base(address).map_err(EngineError::Ballista)?;
    let connect = crate::ballista::auth::connect(&url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(EngineError::Ballista(format!(
            "no scheduler answers at ballista://{address} ({e}); start one with `nomaly scheduler --bind-port {port}` and executors with `nomaly executor --scheduler-port {port}`",
            port = address.rsplit(':').next().unwrap_or("50050")
        ))),
        Err(_) => Err(EngineError::Ballista(format!(
            "the scheduler at ballista://{address} did not answer within 10 s"
        ))),
    }
}

/// `plan` narrowed to partition `partition` of the file scan `is_target` picks: that scan keeps
/// file group `partition` only. For plans whose partitions never mix (a pipeline's scoring plan
/// over its chunks), partition 0 of the result is partition `partition` of `plan`.
pub fn narrow_to_partition(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    is_target: impl Fn(&FileScanConfig) -> bool,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let narrowed = plan
        .transform_up(|node| {
            let Some(scan) = node.as_ref().downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = scan.data_source().as_ref().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            if !is_target(config) || partition >= config.file_groups.len() {
                return Ok(Transformed::no(node));
            }
            let group = config.file_groups[partition].clone();
            // A declared partitioning (segment buckets) stays true of one of its partitions.
            let declared = match &config.output_partitioning {
                Some(Partitioning::Hash(keys, _)) => Some(Partitioning::Hash(keys.clone(), 1)),
                _ => None,
            };
            let one = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![group])
                .with_output_partitioning(declared)
                .build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(one) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data;
    let n = narrowed.output_partitioning().partition_count();
    if n != 1 {
        return Err(DataFusionError::Internal(format!(
            "narrowing the plan to partition {partition} left {n} partitions"
        )));
    }
    Ok(narrowed)
}
