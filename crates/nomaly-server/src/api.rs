//! The HTTP API: a thin axum shell over [`Server`]. Every route is in the generated OpenAPI
//! document (`openapi.rs`, served at `/api/openapi.json`); errors are `{"error": "..."}` with a
//! 4xx status that says whose fault it is. Every route but `/health` needs the bearer token when
//! the server has one (SECURITY.md).

use crate::backfills::{BackfillList, BackfillRequest, BackfillView};
use crate::bodies::{
    ChunkList, ErrorBody, Health, History, RunList, RunView, ScheduleList, ScheduleRequest,
};
use crate::cluster_view::ClusterOverview;
use crate::dashboard;
use crate::error::ServerError;
use crate::events::RunEventBody;
use crate::metrics::Snapshot;
use crate::models::ModelList;
use crate::run_logs::{LogLine, LogList};
use crate::run_results::{PipelineHistory, TopRows};
use crate::server::{Server, StreamEvent, SubmitRequest};
use crate::store::{RunFilter, RunState, StartMode};
use crate::stream_limits::{Live, StreamSlots, live};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use nomaly_engine::ballista::SchedulerRest;
use nomaly_engine::ballista::rest;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ServerError>;

/// What the HTTP layer needs besides the server.
#[derive(Clone)]
pub struct HttpConfig {
    /// Required as `Authorization: Bearer <token>` on every route but `/health`.
    pub token: Option<Arc<String>>,
    pub max_body_bytes: usize,
    /// `--scheduler`: the Ballista scheduler the Cluster view reads.
    pub scheduler: Option<Arc<SchedulerRest>>,
    /// The `Host` names answered to; foreign origins and non-JSON bodies are refused too
    /// ([`crate::http_guard`]).
    pub hosts: crate::http_guard::HostRule,
    /// The most event streams one client (IP address) holds open at once.
    pub max_streams_per_client: usize,
    /// Open connections at most, and how long a client may take to send its headers.
    pub connections: crate::connections::ConnectionLimits,
}

#[derive(Clone)]
struct AppState {
    server: Server,
    http: HttpConfig,
    streams: Arc<StreamSlots>,
}

/// The router for a server.
pub fn router(server: Server, http: HttpConfig) -> Router {
    let state = AppState {
        server,
        streams: StreamSlots::new(http.max_streams_per_client),
        http: http.clone(),
    };
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/runs", post(submit).get(list_runs))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/chunks", get(chunks))
        .route("/api/runs/{id}/history", get(history))
        .route("/api/runs/{id}/report", get(report))
        .route("/api/runs/{id}/logs", get(logs))
        .route("/api/runs/{id}/top", get(top_rows))
        .route("/api/pipelines/{name}/history", get(pipeline_history))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/retry", post(retry))
        .route("/api/runs/{id}/resume", post(resume))
        .route("/api/events", get(all_events))
        .route("/api/queue", get(queue))
        .route("/api/cluster", get(cluster))
        .route("/api/cluster/executors", get(cluster_executors))
        .route("/api/cluster/jobs", get(cluster_jobs))
        .route("/api/cluster/jobs/{id}", get(cluster_job))
        .route("/api/cluster/jobs/{id}/stages", get(cluster_stages))
        .route("/api/cluster/jobs/{id}/dot", get(cluster_dot))
        .route("/api/cluster/jobs/{id}/cancel", post(cluster_cancel))
        .route("/api/backfills", post(add_backfill).get(list_backfills))
        .route("/api/backfills/{id}", get(get_backfill))
        .route("/api/backfills/{id}/cancel", post(cancel_backfill))
        .route("/api/models", get(list_models))
        .route("/api/models/{name}", get(get_model))
        .route("/api/schedules", get(list_schedules).post(add_schedule))
        .route(
            "/api/schedules/{name}",
            get(get_schedule).delete(remove_schedule),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        // The dashboard's files hold no data: served without the token (the API calls it makes
        // send it).
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::asset))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            http.hosts.clone(),
            crate::http_guard::guard,
        ))
        .with_state(state)
}

async fn not_found() -> ServerError {
    ServerError::NotFound("no such route; the API is described at /api/openapi.json".to_string())
}

/// Compares the bearer token in constant time.
async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.http.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(
                    serde_json::json!({"error": "this server needs its token: send \
                    `Authorization: Bearer <token>` (the CLI reads NOMALY_TOKEN)"}),
                ),
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        schema_version: state.server.store().schema_version()?,
    }))
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let server = &state.server;
    let q = server.queue()?;
    let text = server.inner.metrics.render(&Snapshot {
        runs_by_state: server.store().count_by_state()?,
        queue_depth: q.queued.len(),
        running: q.running.len(),
        memory_budget: q.memory_budget_bytes,
        memory_reserved: q.memory_reserved_bytes,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::openapi_json(),
    )
        .into_response()
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ServerError::BadRequest(format!("'{id}' is not a run id; run ids are numbers"))
    })
}

/// Reads a JSON body with our error shape (axum's own rejections are plain text).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ServerError::BadRequest(format!("the request needs a JSON body: {e}")));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ServerError::BadRequest(format!("the JSON body is not valid: {e}")))
}

async fn submit(
    State(state): State<AppState>,
    bytes: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let req: SubmitRequest = body(&bytes)?;
    let run = state.server.submit(req, "api")?;
    let q = state.server.queue()?;
    Ok((
        StatusCode::CREATED,
        Json(RunView::of(&state.server, run, Some(&q.queued))),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    pipeline: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<RunList>> {
    // axum's own rejection is plain text; ours is the API's JSON error.
    let Query(q) =
        query.map_err(|e| ServerError::BadRequest(format!("the query: {}", e.body_text())))?;
    let filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ServerError::BadRequest(format!(
                "state '{s}' is not one of {}",
                RunState::ALL.map(|s| s.name()).join(", ")
            ))
        })?),
    };
    let filter = RunFilter {
        state: filter,
        pipeline: q.pipeline.filter(|p| !p.is_empty()),
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    let (runs, total) = state.server.store().runs_page(
        &filter,
        q.limit.unwrap_or(100).min(10_000),
        q.offset.unwrap_or(0),
    )?;
    let queue = state.server.queue()?;
    let runs: Vec<RunView> = runs
        .into_iter()
        .map(|r| RunView::of(&state.server, r, Some(&queue.queued)))
        .collect();
    Ok(Json(RunList { runs, total }))
}

async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = state.server.get(parse_id(&id)?)?;
    let queue = state.server.queue()?;
    Ok(Json(RunView::of(&state.server, run, Some(&queue.queued))))
}

async fn chunks(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ChunkList>> {
    let id = parse_id(&id)?;
    state.server.get(id)?;
    let chunks = state.server.store().chunks(id)?;
    Ok(Json(ChunkList { run: id, chunks }))
}

async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<History>> {
    let id = parse_id(&id)?;
    state.server.get(id)?;
    let events = state.server.store().events(id)?;
    Ok(Json(History { run: id, events }))
}

async fn report(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let run = state.server.get(id)?;
    match state.server.store().report(id)? {
        Some(r) => Ok(([(header::CONTENT_TYPE, "application/json")], r).into_response()),
        None => Err(ServerError::NotFound(format!(
            "run {id} has no report yet (it is {})",
            run.state.name()
        ))),
    }
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    let run = state.server.cancel(parse_id(&id)?)?;
    Ok(Json(RunView::of(&state.server, run, None)))
}

async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    let run = state.server.requeue(parse_id(&id)?, StartMode::Restart)?;
    Ok(Json(RunView::of(&state.server, run, None)))
}

async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    let run = state.server.requeue(parse_id(&id)?, StartMode::Resume)?;
    Ok(Json(RunView::of(&state.server, run, None)))
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<i64>,
}

async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<AfterQuery>, QueryRejection>,
) -> ApiResult<Json<LogList>> {
    let Query(q) =
        query.map_err(|e| ServerError::BadRequest(format!("the query: {}", e.body_text())))?;
    let id = parse_id(&id)?;
    let run = state.server.get(id)?;
    let events = state.server.store().events(id)?;
    // Ended once the end is both recorded and logged (the state is written first).
    let finished = run.state.is_finished()
        && events
            .last()
            .is_some_and(|e| matches!(e.event, RunEventBody::Finished { .. }));
    let after = q.after.unwrap_or(0);
    let lines = events
        .iter()
        .filter(|e| e.seq > after)
        .map(LogLine::of)
        .collect();
    Ok(Json(LogList {
        run: id,
        lines,
        finished,
    }))
}

async fn top_rows(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult<Json<TopRows>> {
    let Query(q) =
        query.map_err(|e| ServerError::BadRequest(format!("the query: {}", e.body_text())))?;
    let id = parse_id(&id)?;
    Ok(Json(
        state.server.top_rows(id, q.limit.unwrap_or(20)).await?,
    ))
}

async fn pipeline_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult<Json<PipelineHistory>> {
    let Query(q) =
        query.map_err(|e| ServerError::BadRequest(format!("the query: {}", e.body_text())))?;
    Ok(Json(
        state
            .server
            .history(&name, q.limit.unwrap_or(50).min(1000))?,
    ))
}

async fn add_backfill(
    State(state): State<AppState>,
    bytes: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<BackfillView>)> {
    let req: BackfillRequest = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(state.server.backfill(req)?)))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn list_backfills(
    State(state): State<AppState>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult<Json<BackfillList>> {
    let Query(q) =
        query.map_err(|e| ServerError::BadRequest(format!("the query: {}", e.body_text())))?;
    Ok(Json(
        state.server.backfills(q.limit.unwrap_or(50).min(1000))?,
    ))
}

async fn get_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackfillView>> {
    Ok(Json(state.server.backfill_view(parse_id(&id)?)?))
}

async fn cancel_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackfillView>> {
    Ok(Json(state.server.cancel_backfill(parse_id(&id)?)?))
}

async fn list_models(State(state): State<AppState>) -> ApiResult<Json<ModelList>> {
    Ok(Json(state.server.models(None)?))
}

async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ModelList>> {
    Ok(Json(state.server.models(Some(&name))?))
}

async fn queue(State(state): State<AppState>) -> ApiResult<Json<crate::server::QueueView>> {
    Ok(Json(state.server.queue()?))
}

fn sse_event(e: &StreamEvent) -> Event {
    Event::default()
        .event(e.event.kind())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The `error` event a stream ends with when it fell behind.
fn lag_event(missed: u64, reread: &str) -> Event {
    let body = ErrorBody {
        error: format!(
            "this stream fell {missed} events behind the server and ends here; read {reread} \
             for the current state and open the stream again"
        ),
    };
    Event::default()
        .event("error")
        .data(serde_json::to_string(&body).unwrap_or_default())
}

/// Every run's events (ending with an `error` event if the client falls behind).
async fn all_events(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let slot = state.streams.take(client.ip())?;
    let stream = live(BroadcastStream::new(state.server.subscribe()), slot).map(|item| {
        Ok(match item {
            Live::Event(e) => sse_event(&e),
            Live::Lagged(n) => lag_event(n, "/api/runs"),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// One run's events: a `snapshot` of the run first, then what happens, ending after `finished`.
async fn run_events(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = parse_id(&id)?;
    let slot = state.streams.take(client.ip())?;
    // Subscribe before reading the snapshot, so nothing falls between them.
    let events = live(BroadcastStream::new(state.server.subscribe()), slot);
    let run = state.server.get(id)?;
    let finished = run.state.is_finished();
    let snapshot = StreamEvent {
        run: id,
        at_ms: crate::server::now_ms(),
        event: RunEventBody::Snapshot(Box::new(RunView::of(&state.server, run, None))),
    };
    let first = tokio_stream::iter(vec![Ok(sse_event(&snapshot))]);
    let events = events.filter(move |item| !matches!(item, Live::Event(e) if e.run != id));
    // Ends right after the `finished` event (or at once when the run had already ended), or
    // with an `error` event when it fell behind.
    let reread = format!("/api/runs/{id}");
    let rest = futures::stream::unfold((Box::pin(events), finished), move |(mut events, done)| {
        let reread = reread.clone();
        async move {
            if done {
                return None;
            }
            match events.next().await? {
                Live::Event(e) => {
                    let last = matches!(e.event, RunEventBody::Finished { .. });
                    Some((Ok(sse_event(&e)), (events, last)))
                }
                Live::Lagged(n) => Some((Ok(lag_event(n, &reread)), (events, true))),
            }
        }
    });
    Ok(Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<ScheduleList>> {
    Ok(Json(ScheduleList {
        schedules: state.server.schedules()?,
    }))
}

async fn add_schedule(
    State(state): State<AppState>,
    bytes: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<crate::server::ScheduleView>)> {
    let req: ScheduleRequest = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(state.server.register(&req.path, req.priority)?),
    ))
}

async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<crate::server::ScheduleView>> {
    Ok(Json(state.server.schedule(&name)?))
}

async fn remove_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.server.unregister(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the Cluster view (a Ballista scheduler's REST API, read through this server) ----------

fn scheduler(state: &AppState) -> ApiResult<&SchedulerRest> {
    state.http.scheduler.as_deref().ok_or_else(|| {
        ServerError::NotFound(
            "this server was started without --scheduler, so it shows no cluster; start it \
             with --scheduler ballista://HOST:PORT"
                .to_string(),
        )
    })
}

async fn cluster(State(state): State<AppState>) -> ApiResult<Json<ClusterOverview>> {
    let s = scheduler(&state)?;
    Ok(Json(ClusterOverview {
        scheduler: s.base().to_string(),
        state: s.state().await?,
    }))
}

async fn cluster_executors(State(state): State<AppState>) -> ApiResult<Json<Vec<rest::Executor>>> {
    Ok(Json(scheduler(&state)?.executors().await?))
}

async fn cluster_jobs(State(state): State<AppState>) -> ApiResult<Json<Vec<rest::Job>>> {
    Ok(Json(scheduler(&state)?.jobs().await?))
}

async fn cluster_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<rest::Job>> {
    Ok(Json(scheduler(&state)?.job(&id).await?))
}

async fn cluster_stages(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<rest::JobStages>> {
    Ok(Json(scheduler(&state)?.stages(&id).await?))
}

async fn cluster_dot(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let dot = scheduler(&state)?.dot(&id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        dot,
    )
        .into_response())
}

async fn cluster_cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<rest::CancelJob>> {
    Ok(Json(scheduler(&state)?.cancel(&id).await?))
}
