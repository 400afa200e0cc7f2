//! Shared helpers for Nomaly's end-to-end tests.

use std::path::PathBuf;

/// The workspace root (tests run with their crate directory as the working directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Bundled example data.
pub fn data_dir() -> PathBuf {
    workspace_root().join("examples").join("data")
}

pub mod data;
