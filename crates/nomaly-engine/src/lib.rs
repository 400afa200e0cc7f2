//! # nomaly-engine
//!
//! Builds the sessions Nomaly runs on — local DataFusion, Ballista standalone or a Ballista
//! cluster (everything Ballista is in `ballista/`) — with every Nomaly
//! function, the `detect_anomalies` rewrite rule, a memory pool sized to the budget (default 80% of
//! RAM or the cgroup limit) and a spill directory; registers input files as tables by extension.

pub mod ballista;
pub mod budget;
pub mod confined_store;
pub mod connections;
pub mod error;
pub mod file_format;
#[cfg(feature = "hdf5")]
pub mod hdf5;
pub mod memory;
pub mod object_stores;
pub mod session;
pub mod tables;

pub use ballista::{ClusterClient, batch_bytes, name_jobs, narrow_to_partition};
pub use budget::{BudgetSplit, parquet_read_buffers};
pub use error::{EngineError, Result};
pub use file_format::FileFormat;
pub use memory::{default_budget, parse_byte_size};
pub use object_stores::{RemoteStore, register_object_store};
pub use session::{EngineConfig, EngineKind, build_context, tune_session_config};
pub use tables::{HDF5_NOT_BUILT, parse_table_spec, register_table};
