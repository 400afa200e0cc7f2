//! HDF5 sources (feature `hdf5`): the file is read once and written as a Parquet work file, which
//! is then chunked like any Parquet input. The conversion is deterministic (same file, same
//! bytes, same row groups), so a resumed run finds the same chunks; the run's fingerprint is the
//! HDF5 file's own.

use crate::chunk_plan::SourceReader;
use crate::error::{PipelineError, Result};
use crate::spec::FileFormat;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};

/// Converts `source` (HDF5) into `<dir>/<name>.parquet` in row groups of at most `chunk_rows`
/// rows; returns a reader of the Parquet file that keeps the source's name and path for messages.
pub fn convert(source: &SourceReader, dir: &Path, chunk_rows: u64) -> Result<SourceReader> {
    let place = format!("source '{}' ({})", source.name, source.path);
    let local = source
        .location
        .strip_prefix("file://")
        .unwrap_or(&source.location);
    let (schema, batches) = nomaly_engine::hdf5::read_table(local)
        .map_err(|e| PipelineError::engine(place.clone(), e))?;
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let target = dir.join(format!("{}.parquet", source.name));
    let tmp: PathBuf = dir.join(format!(".{}.parquet.tmp", source.name));
    let io = |e: std::io::Error| PipelineError::Io {
        path: tmp.clone(),
        source: e,
    };
    let write = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some((chunk_rows as usize).clamp(1, 128 * 1024)))
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .build();
        let file = std::fs::File::create(&tmp)?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        for b in &batches {
            w.write(b)?;
        }
        w.close()?;
        Ok(())
    };
    write().map_err(|e| io(std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, &target).map_err(io)?;
    Ok(SourceReader {
        location: target.display().to_string(),
        format: FileFormat::Parquet,
        ..source.clone()
    })
}
