//! # nomaly-server
//!
//! `nomaly serve`: pipeline runs as a service. Runs are submitted (a pipeline file or its text),
//! wait in a queue ordered by priority with aging, start when their memory budget fits what the
//! server has left ([`queue`]), execute in-process through the pipeline run library (or on a
//! Ballista cluster when their engine says so), and are recorded in a SQLite job store
//! ([`store`]): state, per-chunk progress, events, reports. Registered pipelines fire on cron
//! schedules ([`schedule`]) and after one another ([`deps`]). [`api`] is the REST/SSE shell,
//! [`client`] the terminal side (`nomaly submit | runs | status | cancel`), [`dashboard`] the
//! web page at `/`.
//!
//! A server killed at any instant restarts with its queue intact: queued runs stay queued and
//! runs that were running go back to the queue to resume from their committed chunks.

pub mod api;
pub mod backfills;
pub mod bodies;
pub mod client;
pub mod cluster_view;
/// The accept loop and TLS (shared with the cluster's ports: `nomaly_engine::connections`).
pub use nomaly_engine::connections;
pub mod dashboard;
pub mod deps;
pub mod error;
pub mod events;
mod file_triggers;
pub mod http_guard;
pub mod metrics;
pub mod models;
pub mod openapi;
mod output_wait;
pub mod queue;
pub mod roots;
pub mod run_logs;
pub mod run_results;
pub mod run_state;
pub mod schedule;
pub mod server;
pub mod store;
pub mod stream_limits;
pub mod triggers;

pub use api::{HttpConfig, router};
pub use error::{Result, ServerError};
pub use roots::AllowedRoots;
pub use server::{Server, ServerConfig, SubmitRequest};

/// Serves `server` on `addr` until `shutdown` completes; then stops the runs (they resume on the
/// next start).
pub async fn serve(
    server: Server,
    http: HttpConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = http.connections.clone();
    let app = router(server.clone(), http);
    // No graceful shutdown: event streams never end on their own, so it would wait forever.
    // The runs are what must stop cleanly, and `Server::shutdown` sees to them.
    let serving = connections::accept_loop(listener, app, limits);
    let result = tokio::select! {
        r = serving => r,
        _ = shutdown => Ok(()),
    };
    server.shutdown().await;
    result
}
