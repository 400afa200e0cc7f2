//! An executor's Flight port behind the cluster token and TLS (SECURITY.md, "The cluster"). The
//! port serves the shuffle files and results in the executor's work directory to whoever asks;
//! with `nomaly executor --auth-token-file`, only callers that present the token get an answer
//! (other executors and clients send it on the connection: [`crate::ballista::auth`]), and with
//! `--tls-cert/--tls-key` it speaks TLS only. The service itself is Ballista's.

use crate::ballista::auth::{ClusterGuard, require_token};
use crate::connections::{CLUSTER_CONNECTIONS, ConnectionLimits, accept_loop};
use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;

/// A Flight server provider for `ExecutorProcessConfig::override_arrow_flight_service`: Ballista's
/// Flight service, with every call checked for `token` first (if any), over TLS with `tls` (if
/// any).
pub fn guarded_flight(
    token: Option<Arc<String>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_encoding: usize,
    max_decoding: usize,
) -> Arc<ArrowFlightServerProvider> {
    Arc::new(
        move |work_dir: String, address: SocketAddr, mut shutdown: Shutdown, _grpc| {
            let (token, tls) = (token.clone(), tls.clone());
            tokio::spawn(async move {
                let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                    .max_encoding_message_size(max_encoding)
                    .max_decoding_message_size(max_decoding);
                let mut app = tonic::service::Routes::new(flight).into_axum_router();
                if let Some(token) = token {
                    app = app.layer(axum::middleware::from_fn_with_state(
                        ClusterGuard::new(token, false),
                        require_token,
                    ));
                }
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    BallistaError::General(format!("the Flight port {address}: {e}"))
                })?;
                let failed = |e: std::io::Error| {
                    BallistaError::General(format!("the Flight port {address}: {e}"))
                };
                match tls {
                    None => axum::serve(listener, app)
                        .with_graceful_shutdown(async move { shutdown.recv().await })
                        .await
                        .map_err(failed),
                    Some(tls) => {
                        let limits = ConnectionLimits {
                            max_connections: CLUSTER_CONNECTIONS,
                            tls: Some(tls),
                            ..Default::default()
                        };
                        tokio::select! {
                            served = accept_loop(listener, app, limits) => served.map_err(failed),
                            () = shutdown.recv() => Ok(()),
                        }
                    }
                }
            })
        },
    )
}
