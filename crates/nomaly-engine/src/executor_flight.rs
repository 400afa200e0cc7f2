//! An executor's Flight port behind the cluster token (SECURITY.md, "The cluster"). The port
//! serves the shuffle files and results in the executor's work directory to whoever asks; with
//! `nomaly executor --auth-token-file`, only callers that present the token get an answer
//! (other executors and clients send it on the connection: [`crate::cluster_auth`]). The service
//! itself is Ballista's.

use crate::cluster_auth::{ClusterGuard, require_token};
use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;

/// A Flight server provider for `ExecutorProcessConfig::override_arrow_flight_service`: Ballista's
/// Flight service, with every call checked for `token` first.
pub fn guarded_flight(
    token: Arc<String>,
    max_encoding: usize,
    max_decoding: usize,
) -> Arc<ArrowFlightServerProvider> {
    Arc::new(
        move |work_dir: String, address: SocketAddr, mut shutdown: Shutdown, _grpc| {
            let guard = ClusterGuard::new(token.clone(), false);
            tokio::spawn(async move {
                let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                    .max_encoding_message_size(max_encoding)
                    .max_decoding_message_size(max_decoding);
                let app = tonic::service::Routes::new(flight)
                    .into_axum_router()
                    .layer(axum::middleware::from_fn_with_state(guard, require_token));
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    BallistaError::General(format!("the Flight port {address}: {e}"))
                })?;
                tracing::info!(%address, "executor Flight port, token required");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.recv().await })
                    .await
                    .map_err(|e| BallistaError::General(format!("the Flight port {address}: {e}")))
            })
        },
    )
}
