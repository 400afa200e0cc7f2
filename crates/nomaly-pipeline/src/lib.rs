//! # nomaly-pipeline
//!
//! Pipeline files (TOML) run by the `nomaly` CLI: sources → SQL steps → detect → validate → sinks →
//! notify. A file is parsed ([`spec`]), resolved and checked without touching data ([`compile`]),
//! then checked against the data, explained, dry-run or run ([`run`], or [`Run`] for a handle with
//! events ([`events`]) and cancellation). Inputs split into
//! deterministic chunks ([`chunks`]) that are the partitions of the scan; each chunk's output is one
//! part file per sink ([`sink`]), committed by rename and published when the run succeeds.

pub mod chunk_plan;
pub mod codec;
pub mod compile;
pub mod error;
pub mod events;
pub mod faults;
#[cfg(test)]
mod fuzz_tests;
#[cfg(feature = "hdf5")]
pub mod hdf5_source;
pub mod incremental;
pub mod model_statements;
pub mod models;
pub mod notify;
pub mod output_lock;
pub mod quarantine;
#[cfg(test)]
mod reference_tests;
pub mod report;
pub mod run;
pub mod run_context;
pub mod run_dir;
pub mod sandbox;
pub mod sink_writer;
pub mod spec;
pub mod substitute;

pub use codec::{NomalyPhysicalCodec, physical_codec};
pub use compile::{CompiledPipeline, compile, compile_in};
pub use error::{ErrorKind, PipelineError, Result, RunPlace};
pub use events::{NoObserver, RunEvent, RunObserver};
pub use report::{ChunkingMode, RunReport, RunStatus};
pub use run::{
    Run, RunFailure, RunMode, RunOptions, RunOutcome, completed_run, explain,
    register_published_output, run, validate,
};
pub use run_context::{RunContext, RunDate, RunRequest};
pub use sandbox::Sandbox;
pub use spec::{PipelineFile, json_schema};
