//! The cluster token (SECURITY.md, "The cluster"): `nomaly scheduler --auth-token-file F` makes
//! its port refuse every request without `authorization: Bearer <token>`, but for health checks,
//! the Cluster page's static files, the executors' own calls and Flight (which has its own
//! token with `--flight-sql-token-file`). Clients (`nomaly sql --engine ballista://`, pipelines on
//! a cluster, `nomaly jobs`, `nomaly serve --scheduler`) send the token from
//! `NOMALY_CLUSTER_TOKEN` or the file named by `NOMALY_CLUSTER_TOKEN_FILE`: in gRPC metadata
//! (Ballista's interceptor) and in REST headers.
//!
//! Ballista 55's executors cannot send metadata on their calls to the scheduler, so the five
//! executor methods stay open; a host that can reach the scheduler's port can still register as
//! an executor. Keep the port on a network only the cluster reaches until that is closed.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ballista_core::extension::{BallistaGrpcMetadataInterceptor, SessionConfigExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_connection};
use datafusion::prelude::SessionConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The token a client sends.
pub const TOKEN_ENV: &str = "NOMALY_CLUSTER_TOKEN";
/// A file holding the token a client sends (when `NOMALY_CLUSTER_TOKEN` is not set).
pub const TOKEN_FILE_ENV: &str = "NOMALY_CLUSTER_TOKEN_FILE";

/// Requests that pass without the token: health, the page's files, what executors call (they
/// cannot send it), and Flight (its own authentication).
const OPEN_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/ballista.protobuf.SchedulerGrpc/RegisterExecutor",
    "/ballista.protobuf.SchedulerGrpc/HeartBeatFromExecutor",
    "/ballista.protobuf.SchedulerGrpc/PollWork",
    "/ballista.protobuf.SchedulerGrpc/UpdateTaskStatus",
    "/ballista.protobuf.SchedulerGrpc/ExecutorStopped",
];

fn is_open(path: &str) -> bool {
    path == "/"
        || path.starts_with("/ui/")
        || path.starts_with("/arrow.flight.protocol.")
        || OPEN_PATHS.contains(&path)
}

/// A token file's token; an empty or unreadable file is an error naming it.
pub fn read_token_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{flag} {}: the file is empty; put the token in it",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// The token this client sends, if any.
pub fn client_token() -> Result<Option<String>, String> {
    if let Some(t) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    match std::env::var_os(TOKEN_FILE_ENV) {
        Some(f) => read_token_file(std::path::Path::new(&f), TOKEN_FILE_ENV).map(Some),
        None => Ok(None),
    }
}

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `config` with the client's token in the metadata of every gRPC call Ballista makes.
pub fn with_client_token(config: SessionConfig) -> SessionConfig {
    match client_token() {
        Ok(Some(t)) => config
            .with_ballista_grpc_metadata(HashMap::from([("authorization".into(), bearer(&t))])),
        Ok(None) => config,
        Err(e) => {
            tracing::warn!("{e}; sending no cluster token");
            config
        }
    }
}

/// A client of the scheduler at `url` whose every call carries the client's token.
pub async fn scheduler_client(
    url: String,
) -> Result<SchedulerGrpcClient<InterceptedService<Channel, BallistaGrpcMetadataInterceptor>>, String>
{
    let channel = create_grpc_client_connection(url.clone(), &GrpcClientConfig::default())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let metadata = match client_token()? {
        Some(t) => HashMap::from([("authorization".to_string(), bearer(&t))]),
        None => HashMap::new(),
    };
    Ok(SchedulerGrpcClient::with_interceptor(
        channel,
        BallistaGrpcMetadataInterceptor::new(metadata),
    ))
}

/// Compares in time that depends on the lengths only, not on where the bytes first differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scheduler port's middleware: refuses guarded requests without the token (REST: 401,
/// gRPC: `UNAUTHENTICATED`).
pub async fn require_token(
    State(token): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if is_open(path) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    let message = "this scheduler needs its token: clients set NOMALY_CLUSTER_TOKEN (or \
                   NOMALY_CLUSTER_TOKEN_FILE); REST calls send `Authorization: Bearer <token>`";
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unauthenticated(message).into_http::<axum::body::Body>()
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_pages_executors_and_flight_are_open() {
        for open in [
            "/healthz",
            "/",
            "/ui/app.js",
            "/ballista.protobuf.SchedulerGrpc/PollWork",
            "/arrow.flight.protocol.FlightService/DoGet",
        ] {
            assert!(is_open(open), "{open}");
        }
        for guarded in [
            "/api/jobs",
            "/api/job/x",
            "/ballista.protobuf.SchedulerGrpc/ExecuteQuery",
            "/ballista.protobuf.SchedulerGrpc/CancelJob",
            "/ballista.protobuf.SchedulerGrpc/NewMethod",
            "/ballista-tui",
        ] {
            assert!(!is_open(guarded), "{guarded}");
        }
    }
}
