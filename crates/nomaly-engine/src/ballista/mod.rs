//! Everything Ballista, in one place: where a scheduler is (`address`), the client that submits
//! physical plans as jobs (`client`), the typed client of a scheduler's REST API (`rest`), the
//! processes `nomaly scheduler` / `nomaly executor` start (`processes`) and the scheduler's port
//! as we compose it (`scheduler_server`), the cluster token (`auth`), TLS (`tls`), the
//! executor's guarded Flight service (`executor_flight`) and Flight SQL's authenticator
//! (`flight_sql_auth`).
//!
//! The physical codec that carries Nomaly's operators to executors lives with those operators;
//! the command-line flags of the processes live in the CLI.

mod address;
pub mod auth;
pub mod client;
pub mod codec;
pub mod executor_flight;
pub mod flight_sql_auth;
pub mod processes;
pub mod rest;
pub mod scheduler_server;
pub mod tls;

pub use address::{DEFAULT_SCHEDULER_PORT, scheduler_address};
pub use client::{ClusterClient, batch_bytes, check_scheduler, name_jobs, narrow_to_partition};
pub use rest::{RestError, SchedulerRest};
