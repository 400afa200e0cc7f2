//! The file formats Nomaly reads and writes, one enum for the engine, pipelines and sinks, with
//! the one map from file extensions to them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// File formats, for sources and sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Parquet,
    /// Newline-delimited JSON.
    #[serde(alias = "json", alias = "jsonl")]
    Ndjson,
    /// Arrow IPC file (Feather v2).
    #[serde(alias = "feather", alias = "ipc")]
    Arrow,
    Avro,
    /// HDF5 (inputs only, with the `hdf5` feature): read once into a Parquet work file.
    #[serde(alias = "h5")]
    Hdf5,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Arrow => "arrow",
            FileFormat::Avro => "avro",
            FileFormat::Hdf5 => "h5",
        }
    }

    /// The format an extension names, if any.
    pub fn from_extension(ext: &str) -> Option<FileFormat> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => FileFormat::Csv,
            "parquet" | "pq" => FileFormat::Parquet,
            "json" | "ndjson" | "jsonl" => FileFormat::Ndjson,
            "arrow" | "feather" | "ipc" => FileFormat::Arrow,
            "avro" => FileFormat::Avro,
            "h5" | "hdf5" => FileFormat::Hdf5,
            _ => return None,
        })
    }
}
