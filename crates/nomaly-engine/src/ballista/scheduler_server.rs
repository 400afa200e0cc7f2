//! The scheduler's one port, composed here rather than by Ballista's `start_server`, so that `/`
//! can be a page of our own (the Cluster view) instead of Ballista 55's redirect to an externally
//! hosted TUI that an offline cluster cannot reach. Everything else is Ballista's, as its
//! `start_grpc_service_with_listener` mounts it: the scheduler's gRPC service, Flight SQL or the
//! embedded Flight proxy, the REST API (`/api/...`), `/healthz` and `/readyz`. Ballista's redirect
//! moves to `/ballista-tui`.

use crate::error::{EngineError, Result};
use arrow_flight::flight_service_server::FlightServiceServer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ballista_core::extension::BallistaConfigGrpcEndpoint;
use ballista_core::flight_proxy_service::BallistaFlightProxyService;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_scheduler::api::get_routes;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::net::SocketAddr;
use std::sync::Arc;

/// Where Ballista's own `/` redirect (to its hosted TUI) is moved.
pub const BALLISTA_TUI_ROUTE: &str = "/ballista-tui";

type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Ballista(format!("{what}: {e}"))
}

/// Serves `scheduler` on `listener` until the process stops; `page` (if any) answers the routes
/// it has (`/`, `/ui/...`) before Ballista's.
pub async fn serve_scheduler(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    page: Option<axum::Router>,
    token: Option<Arc<String>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let config = scheduler.state.config.clone();
    let max_decoding = config.grpc_server_max_decoding_message_size as usize;
    let max_encoding = config.grpc_server_max_encoding_message_size as usize;
    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(max_encoding)
        .max_decoding_message_size(max_decoding);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(grpc);
    let endpoint = config
        .override_create_grpc_client_endpoint
        .clone()
        .map(|f| Arc::new(BallistaConfigGrpcEndpoint::new(f)));
    let proxy =
        BallistaFlightProxyService::new(max_decoding, max_encoding, config.use_tls, endpoint);
    let scheduler = Arc::new(scheduler);
    // Flight SQL and the proxy both serve FlightService: one or the other (Flight SQL forwards
    // Ballista's partition tickets too).
    if config.flight_sql_enabled() {
        let mut flight_sql =
            ballista_flight_sql::BallistaFlightSqlService::new(scheduler.clone(), proxy.clone());
        if let Some(auth) = config.override_flight_sql_authenticator.clone() {
            flight_sql = flight_sql.with_authenticator(auth);
        }
        if flight_sql.allows_anonymous() {
            tracing::warn!(
                "Flight SQL is on with no token: any client that reaches the scheduler port can \
                 run queries (give --flight-sql-token-file)"
            );
        }
        routes.add_service(
            FlightServiceServer::new(flight_sql)
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
        );
    } else if config.enable_embedded_flight_proxy {
        routes.add_service(
            FlightServiceServer::new(proxy)
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
        );
    }
    let grpc = routes.routes().into_axum_router().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"http_code": 404, "reason": "Not Found"})),
        )
            .into_response()
    });
    let health_state = scheduler.clone();
    let health = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let s = health_state.clone();
                async move {
                    if s.is_ready() {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: too few executors\n",
                        )
                            .into_response()
                    }
                }
            }),
        );
    let rest = if config.disable_rest_api {
        axum::Router::new()
    } else {
        get_routes(scheduler.clone())
    };
    let mut app = page
        .unwrap_or_default()
        .merge(rest)
        .merge(grpc)
        .merge(health);
    if let Some(token) = token {
        let flight_checks_itself =
            config.flight_sql_enabled() && config.override_flight_sql_authenticator.is_some();
        app = app.layer(axum::middleware::from_fn_with_state(
            crate::ballista::auth::ClusterGuard::new(token, flight_checks_itself),
            crate::ballista::auth::require_token,
        ));
    }
    match tls {
        // Our accept loop: TLS, with each request's peer address as `ConnectInfo`.
        Some(tls) => {
            let limits = crate::connections::ConnectionLimits {
                max_connections: crate::connections::CLUSTER_CONNECTIONS,
                tls: Some(tls),
                ..Default::default()
            };
            crate::connections::accept_loop(listener, app, limits)
                .await
                .map_err(|e| failed("the scheduler's server", e))
        }
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(|e| failed("the scheduler's server", e)),
    }
}
