//! Shared helpers for Nomaly's end-to-end tests.

use std::path::PathBuf;

/// The workspace root (tests run with their crate directory as the working directory).
pub fn workspace_root() -> PathBuf {
    manifest_dir()
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Bundled example data.
pub fn data_dir() -> PathBuf {
    workspace_root().join("examples").join("data")
}

pub mod cluster;
pub mod data;
pub mod http;
pub mod netns;

pub use http::free_port;

/// The package's directory, read when the test runs: cargo sets `CARGO_MANIFEST_DIR` for test
/// processes. The compile-time `env!` would keep the path of whichever checkout first built the
/// binary, and cargo reuses test binaries across checkouts that share a target directory.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
