//! Registering input files as tables, with the format taken from the extension.

use crate::error::{EngineError, Result};
use crate::file_format::FileFormat;
use crate::object_stores::{self, RemoteStore, listing_url, register_object_store};
use datafusion::datasource::file_format::options::ReadOptions;
use datafusion::datasource::file_format::options::{
    ArrowReadOptions, AvroReadOptions, CsvReadOptions, JsonReadOptions, ParquetReadOptions,
};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use std::path::Path;
use std::sync::Arc;

/// Why an HDF5 input is refused by a binary built without the `hdf5` feature, and the ways out.
pub const HDF5_NOT_BUILT: &str = "HDF5 input is not built into this binary (build with --features \
    hdf5, which needs the system's libhdf5, e.g. Debian's libhdf5-dev); or convert it, e.g. \
    pandas.read_hdf(p).to_parquet('data.parquet')";

/// The format of `path` by its extension (and the extension), or why it is not read.
pub fn format_of(path: &str) -> Result<(FileFormat, String)> {
    let ext = Path::new(path.trim_end_matches('/'))
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let refused = |reason: String| EngineError::UnsupportedFormat {
        path: path.to_string(),
        reason,
    };
    match FileFormat::from_extension(&ext) {
        Some(FileFormat::Hdf5) if !cfg!(feature = "hdf5") => Err(refused(HDF5_NOT_BUILT.into())),
        Some(format) => Ok((format, ext)),
        None if ext == "pkl" || ext == "pickle" => Err(refused(
            "Pickle files are refused: loading one runs arbitrary code. Convert it once in \
             Python, e.g. pandas.read_pickle(p).to_parquet('data.parquet'), and read the \
             Parquet file"
                .into(),
        )),
        None => Err(EngineError::UnknownFormat {
            path: path.to_string(),
            extension: ext,
        }),
    }
}

fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Registers `path` (a file, a directory of files, or a glob) as table `name`.
pub async fn register_table(ctx: &SessionContext, name: &str, path: &str) -> Result<()> {
    let mut location = path.to_string();
    let local = !path.contains("://");
    let mut format_source = path.to_string();
    if local && !has_glob(path) {
        let p = Path::new(path);
        if !p.exists() {
            // A wrong extension is the more useful message, even for a missing file.
            if p.extension().is_some() {
                format_of(path)?;
            }
            return Err(EngineError::InputNotFound {
                path: path.to_string(),
            });
        }
        if p.is_dir() {
            // A directory: the format of its first data file decides.
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .map_err(|source| EngineError::Io {
                    path: p.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|e| e.is_file())
                .filter(|e| {
                    let n = e
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    !n.starts_with('.') && !n.starts_with('_')
                })
                .collect();
            entries.sort();
            let first = entries.first().ok_or_else(|| EngineError::InputNotFound {
                path: path.to_string(),
            })?;
            format_source = first.to_string_lossy().to_string();
            if !location.ends_with('/') {
                location.push('/');
            }
        }
    } else if let Some(kind) = RemoteStore::of(path) {
        register_object_store(ctx, path)?;
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if !last.contains('.') && !has_glob(path) {
            // A prefix ("directory"): the format of its first data file decides.
            format_source = first_remote_file(ctx, path, kind).await?;
            if !location.ends_with('/') {
                location.push('/');
            }
        }
    } else if local && has_glob(path) {
        let dir = Path::new(path)
            .ancestors()
            .find(|a| !has_glob(&a.to_string_lossy()))
            .map(|a| a.to_path_buf())
            .unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            dir
        };
        if !dir.exists() {
            return Err(EngineError::InputNotFound {
                path: path.to_string(),
            });
        }
    }
    let (format, ext) = format_of(&format_source)?;
    let ext = format!(".{ext}");
    if format == FileFormat::Hdf5 {
        return register_hdf5(ctx, name, path);
    }
    register_by_format(ctx, name, &location, format, &ext)
        .await
        .map_err(|e| remote_registration_error(path, e))
}

/// An HDF5 file as an in-memory table.
#[cfg(feature = "hdf5")]
fn register_hdf5(ctx: &SessionContext, name: &str, path: &str) -> Result<()> {
    if path.contains("://") || has_glob(path) || Path::new(path).is_dir() {
        return Err(EngineError::UnsupportedFormat {
            path: path.to_string(),
            reason: "HDF5 is read from one local file; name the file".to_string(),
        });
    }
    let (schema, batches) = crate::hdf5::read_table(path)?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn register_hdf5(_: &SessionContext, _: &str, path: &str) -> Result<()> {
    // `format_of` names HDF5 only with the feature; kept an error, not a panic.
    Err(EngineError::UnsupportedFormat {
        path: path.to_string(),
        reason: HDF5_NOT_BUILT.to_string(),
    })
}

/// A failure to register a remote location, said in terms of the store and its settings.
fn remote_registration_error(path: &str, e: EngineError) -> EngineError {
    let (EngineError::DataFusion(df), Some(kind)) = (&e, RemoteStore::of(path)) else {
        return e;
    };
    if let Some(store_error) = object_stores::planning_error(path, df) {
        return store_error;
    }
    if df.find_root().to_string().contains("No files found") {
        return EngineError::ObjectStore {
            location: path.to_string(),
            reason: "nothing there: the object does not exist or the prefix holds no files"
                .to_string(),
            hint: kind.settings_hint().to_string(),
        };
    }
    e
}

async fn register_by_format(
    ctx: &SessionContext,
    name: &str,
    location: &str,
    format: FileFormat,
    ext: &str,
) -> Result<()> {
    let config = ctx.copied_config();
    let table_options = ctx.copied_table_options();
    let options = match format {
        FileFormat::Csv => {
            let mut opts = CsvReadOptions::new().file_extension(ext);
            if ext == ".tsv" {
                opts = opts.delimiter(b'\t');
            }
            opts.to_listing_options(&config, table_options)
        }
        FileFormat::Parquet => ParquetReadOptions::default()
            .file_extension(ext)
            .to_listing_options(&config, table_options),
        FileFormat::Ndjson => JsonReadOptions::default()
            .file_extension(ext)
            .to_listing_options(&config, table_options),
        FileFormat::Arrow => ArrowReadOptions {
            file_extension: ext,
            ..Default::default()
        }
        .to_listing_options(&config, table_options),
        FileFormat::Avro => AvroReadOptions {
            file_extension: ext,
            ..Default::default()
        }
        .to_listing_options(&config, table_options),
        FileFormat::Hdf5 => {
            return Err(EngineError::UnsupportedFormat {
                path: location.to_string(),
                reason: "HDF5 is not a listing format".to_string(),
            });
        }
    };
    // As `SessionContext::register_listing_table`, with our URL (globs in object stores).
    let url = listing_url(location)?;
    let schema = options.infer_schema(&ctx.state(), &url).await?;
    let table = ListingTable::try_new(
        ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema),
    )?
    .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// The first data file under a remote prefix (its extension decides the format).
async fn first_remote_file(ctx: &SessionContext, path: &str, kind: RemoteStore) -> Result<String> {
    use futures::TryStreamExt;
    let fail = |e: &(dyn std::error::Error + 'static)| {
        object_stores::planning_error(path, e).unwrap_or_else(|| EngineError::ObjectStore {
            location: path.to_string(),
            reason: object_stores::root_message(e),
            hint: kind.settings_hint().to_string(),
        })
    };
    let url =
        ListingTableUrl::parse(format!("{}/", path.trim_end_matches('/'))).map_err(|e| fail(&e))?;
    let state = ctx.state();
    let store = state
        .runtime_env()
        .object_store(&url)
        .map_err(|e| fail(&e))?;
    let mut files: Vec<String> = url
        .list_all_files(&state, store.as_ref(), "")
        .await
        .map_err(|e| fail(&e))?
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    files.retain(|f| {
        let n = f.rsplit('/').next().unwrap_or(f);
        !n.starts_with('.') && !n.starts_with('_')
    });
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| EngineError::ObjectStore {
            location: path.to_string(),
            reason: "no files under this prefix".to_string(),
            hint: kind.settings_hint().to_string(),
        })
}

/// Parses `NAME=PATH`.
pub fn parse_table_spec(spec: &str) -> Result<(String, String)> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| EngineError::InvalidTableSpec {
            spec: spec.to_string(),
            reason: "missing '='".to_string(),
        })?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(EngineError::InvalidTableSpec {
            spec: spec.to_string(),
            reason: format!("'{name}' is not a valid table name (letters, digits, _)"),
        });
    }
    Ok((name.to_string(), path.trim().to_string()))
}
