//! End-to-end tests over real Parquet files, on local DataFusion and Ballista standalone.

mod determinism;
mod one_pass;
