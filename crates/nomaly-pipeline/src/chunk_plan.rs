//! Chunks: deterministic slices of an input, each one partition of the scan.
//!
//! Files are listed in path order; a Parquet file splits at row-group boundaries into runs of about
//! `chunk_rows` rows (DataFusion reads a row group in the byte range holding its first page), and a
//! row group of more than `chunk_rows` rows splits into equal row slices of at most `chunk_rows`,
//! read with a Parquet row selection. The reader skips the pages outside a slice when the file has
//! a page index; without one each slice reads and decompresses its whole row group, so such row
//! groups are sliced only when `chunk_rows` was set explicitly (with the default, 100k-row slices
//! of pyarrow's 1M-row row groups made a pipeline take twice as long as whole row groups); a CSV
//! or NDJSON file splits into byte ranges of about `chunk_rows` lines (the reader starts a range at
//! the first line that begins inside it), with the row width estimated from the file's first MiB;
//! Arrow IPC and Avro files are one chunk each. The same input gives the same chunks, so a chunk id
//! names the same rows on every run.
//!
//! [`ChunkTable`] scans the chunks as one file group each: partition `i` of its scan is chunk `i`.

use crate::error::{PipelineError, Result};
use crate::quarantine::{QuarantineLog, QuarantineScanExec};
use crate::spec::FileFormat;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::avro::AvroFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// How to read one source.
#[derive(Debug, Clone)]
pub struct SourceReader {
    pub name: String,
    /// As written in the pipeline file (for messages).
    pub path: String,
    /// Absolute local path or URL, glob allowed.
    pub location: String,
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: u8,
    /// Read only files no earlier run read ([`crate::incremental`]).
    pub incremental: bool,
    /// The files this run reads (object-store paths), when an incremental run took them; other
    /// files of the location are left out of every listing.
    pub only: Option<Arc<crate::incremental::TakenFiles>>,
}

impl SourceReader {
    pub fn df_format(&self) -> Arc<dyn DfFileFormat> {
        match self.format {
            FileFormat::Csv => Arc::new(
                CsvFormat::default()
                    .with_has_header(self.has_header)
                    .with_delimiter(self.delimiter),
            ),
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Ndjson => Arc::new(JsonFormat::default()),
            FileFormat::Arrow => Arc::new(ArrowFormat),
            FileFormat::Avro => Arc::new(AvroFormat),
            // HDF5 sources are read through their Parquet conversion (`hdf5_source`); this
            // format is never asked to read one.
            FileFormat::Hdf5 => Arc::new(ParquetFormat::default()),
        }
    }

    /// The listing extension filter: files of other types in a directory are ignored.
    pub fn extension_filter(&self) -> String {
        let loc = self.location.trim_end_matches('/');
        let last = loc.rsplit('/').next().unwrap_or(loc);
        // A single file or a glob with an extension: that extension; a directory: the format's.
        match last.rsplit_once('.') {
            Some((_, ext)) if FileFormat::from_extension(ext).is_some() => format!(".{ext}"),
            _ => format!(".{}", self.format.extension()),
        }
    }

    pub fn url(&self) -> Result<ListingTableUrl> {
        nomaly_engine::object_stores::listing_url(&self.location).map_err(|e| {
            PipelineError::engine(format!("source '{}' ({})", self.name, self.path), e)
        })
    }

    /// The files of this source in path order, as the store describes them.
    pub async fn list_objects(&self, ctx: &SessionContext) -> Result<Vec<ObjectMeta>> {
        let url = self.url()?;
        let state = ctx.state();
        let store = state
            .runtime_env()
            .object_store(&url)
            .map_err(|e| self.read_error(e))?;
        let mut files: Vec<ObjectMeta> = url
            .list_all_files(&state, store.as_ref(), &self.extension_filter())
            .await
            .map_err(|e| self.read_error(e))?
            .try_collect()
            .await
            .map_err(|e| self.read_error(e))?;
        if let Some(only) = &self.only {
            files.retain(|f| only.files.contains(f.location.as_ref()));
        }
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    /// A failure to list or read the source while planning. For an object store it names the URL
    /// and the environment variables its settings come from, and is the user's to fix (exit 2).
    pub fn read_error(&self, e: DataFusionError) -> PipelineError {
        let place = format!("source '{}' ({})", self.name, self.path);
        match nomaly_engine::object_stores::planning_error(&self.location, &e) {
            Some(err) => PipelineError::engine(place, err),
            None => PipelineError::engine(place, e),
        }
    }

    /// The files of this source in path order, with their sizes.
    pub async fn list_files(&self, ctx: &SessionContext) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_objects(ctx)
            .await?
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect())
    }

    /// The schema the files share (inferred like DataFusion's listing tables).
    pub async fn infer_schema(&self, ctx: &SessionContext) -> Result<SchemaRef> {
        let url = self.url()?;
        ListingOptions::new(self.df_format())
            .with_file_extension(self.extension_filter())
            .infer_schema(&ctx.state(), &url)
            .await
            .map_err(|e| self.read_error(e))
    }
}

/// One slice of the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chunk {
    pub id: usize,
    /// Object-store path of the file (relative to the store root).
    pub file: String,
    pub file_size: u64,
    /// Byte range `[start, end)`; `None` = the whole file.
    pub range: Option<(u64, u64)>,
    /// Rows, when known before reading (Parquet).
    pub rows: Option<u64>,
    /// Rows `[start, end)` of the file, counted from its first row, when the chunk is part of one
    /// row group (Parquet row groups larger than `chunk_rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<RowSlice>,
}

/// A run of rows inside one Parquet row group, as file-level row numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowSlice {
    pub start: u64,
    pub end: u64,
    /// Rows in the whole file: a row selection covers all of them.
    pub file_rows: u64,
}

impl RowSlice {
    /// The file-level row selection reading exactly this slice.
    pub fn selection(&self) -> ParquetRowSelection {
        let mut selectors = Vec::with_capacity(3);
        if self.start > 0 {
            selectors.push(RowSelector::skip(self.start as usize));
        }
        selectors.push(RowSelector::select((self.end - self.start) as usize));
        if self.end < self.file_rows {
            selectors.push(RowSelector::skip((self.file_rows - self.end) as usize));
        }
        ParquetRowSelection::new(RowSelection::from(selectors))
    }
}

impl Chunk {
    pub fn describe(&self) -> String {
        if let Some(slice) = &self.slice {
            return format!("/{} rows {}..{}", self.file, slice.start, slice.end);
        }
        match self.range {
            Some((s, e)) => format!("/{} bytes {s}..{e}", self.file),
            None => format!("/{}", self.file),
        }
    }

    fn partitioned_file(&self) -> PartitionedFile {
        let file = match self.range {
            Some((s, e)) => PartitionedFile::new_with_range(
                self.file.clone(),
                self.file_size,
                s as i64,
                e as i64,
            ),
            None => PartitionedFile::new(self.file.clone(), self.file_size),
        };
        match &self.slice {
            Some(slice) => file.with_extension(slice.selection()),
            None => file,
        }
    }
}

/// The chunks of a source.
#[derive(Debug, Clone)]
pub struct ChunkPlan {
    pub source: SourceReader,
    pub schema: SchemaRef,
    pub store: ObjectStoreUrl,
    pub chunks: Vec<Chunk>,
    /// Files with row groups larger than `chunk_rows` kept whole: they have no page index, so a
    /// slice would read its whole row group (`explain` says so, with how to slice them anyway).
    pub unsliced: Vec<String>,
}

/// Plans the chunks of `source` at about `chunk_rows` rows each; `slice_unindexed`: slice row
/// groups larger than that even in Parquet files without a page index (see the module docs).
pub async fn plan_chunks(
    ctx: &SessionContext,
    source: &SourceReader,
    chunk_rows: u64,
    slice_unindexed: bool,
) -> Result<ChunkPlan> {
    let files = source.list_files(ctx).await?;
    let place = format!("source '{}' ({})", source.name, source.path);
    if files.is_empty() {
        return Err(PipelineError::invalid(
            place,
            format!(
                "no {} files match this path; check the path or glob (relative paths are relative to the pipeline file)",
                source.format.extension()
            ),
        ));
    }
    let schema = source.infer_schema(ctx).await?;
    let url = source.url()?;
    let mut chunks = Vec::new();
    let mut unsliced = Vec::new();
    let store = ctx
        .state()
        .runtime_env()
        .object_store(&url)
        .map_err(|e| PipelineError::engine(place.clone(), e))?;
    for (file, size) in files {
        let local = local_path(&url, &file);
        let shown = local
            .as_ref()
            .map(|l| l.display().to_string())
            .unwrap_or_else(|| {
                format!(
                    "{}/{file}",
                    url.object_store().as_str().trim_end_matches('/')
                )
            });
        match source.format {
            FileFormat::Parquet => {
                let meta = parquet_metadata(
                    source,
                    store.as_ref(),
                    &place,
                    &shown,
                    &file,
                    size,
                    local.as_ref(),
                )
                .await?;
                let groups = row_group_starts(&meta);
                let split = RowGroupSplit {
                    file: &file,
                    size,
                    chunk_rows,
                    slice: slice_unindexed || has_page_index(&meta),
                };
                if split.chunks(&groups, &mut chunks) {
                    unsliced.push(shown.clone());
                }
            }
            FileFormat::Csv | FileFormat::Ndjson if !is_compressed(&file) => {
                let head = match &local {
                    Some(local) => read_head(local)?,
                    None => store
                        .get_range(&StorePath::from(file.as_str()), 0..size.min(HEAD_BYTES))
                        .await
                        .map_err(|e| source.read_error(e.into()))?
                        .to_vec(),
                };
                let row_bytes = average_line_bytes(&head);
                let chunk_bytes = (row_bytes * chunk_rows).max(1);
                let n = size.div_ceil(chunk_bytes).max(1);
                for i in 0..n {
                    let start = i * chunk_bytes;
                    let end = if i + 1 == n {
                        size
                    } else {
                        (i + 1) * chunk_bytes
                    };
                    chunks.push(Chunk {
                        id: chunks.len(),
                        file: file.clone(),
                        file_size: size,
                        range: (n > 1).then_some((start, end)),
                        rows: None,
                        slice: None,
                    });
                }
            }
            _ => chunks.push(Chunk {
                id: chunks.len(),
                file: file.clone(),
                file_size: size,
                range: None,
                rows: None,
                slice: None,
            }),
        }
    }
    Ok(ChunkPlan {
        source: source.clone(),
        schema,
        store: url.object_store(),
        chunks,
        unsliced,
    })
}

/// The Parquet footer of one file, local or in an object store.
async fn parquet_metadata(
    source: &SourceReader,
    store: &dyn ObjectStore,
    place: &str,
    shown: &str,
    file: &str,
    size: u64,
    local: Option<&PathBuf>,
) -> Result<ParquetMetaData> {
    let meta = match local {
        Some(local) => std::fs::File::open(local)
            .map_err(|e| PipelineError::Io {
                path: local.to_path_buf(),
                source: e,
            })
            .and_then(|f| {
                SerializedFileReader::new(f)
                    .map(|r| r.metadata().clone())
                    .map_err(|e| not_parquet(place, shown, e))
            })?,
        None => remote_parquet_metadata(store, file, size)
            .await
            .map_err(|e| match e {
                RemoteRead::Store(e) => source.read_error(e.into()),
                RemoteRead::Parquet(e) => not_parquet(place, shown, e),
            })?,
    };
    Ok(meta)
}

/// (byte offset of the first page, rows) of every row group.
fn row_group_starts(meta: &ParquetMetaData) -> Vec<(u64, u64)> {
    meta.row_groups()
        .iter()
        .map(|rg| {
            let col = rg.column(0);
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            (start.max(0) as u64, rg.num_rows().max(0) as u64)
        })
        .collect()
}

/// Whether every column chunk has an offset index (where its pages start), so a row selection
/// reads only the pages it needs.
fn has_page_index(meta: &ParquetMetaData) -> bool {
    meta.row_groups().iter().all(|rg| {
        rg.columns()
            .iter()
            .all(|c| c.offset_index_offset().is_some())
    })
}

/// How one Parquet file splits into chunks of whole row groups.
struct RowGroupSplit<'a> {
    file: &'a str,
    size: u64,
    chunk_rows: u64,
    /// Row groups larger than `chunk_rows` split into row slices (else each is one chunk).
    slice: bool,
}

impl RowGroupSplit<'_> {
    /// Appends runs of whole row groups of about `chunk_rows` rows, and row slices of at most
    /// `chunk_rows` rows of every row group larger than that (or, without `slice`, that row group
    /// whole). True when a row group larger than `chunk_rows` was kept whole.
    fn chunks(&self, groups: &[(u64, u64)], chunks: &mut Vec<Chunk>) -> bool {
        let mut kept_whole = false;
        let (file, size, chunk_rows) = (self.file, self.size, self.chunk_rows.max(1));
        let file_rows: u64 = groups.iter().map(|g| g.1).sum();
        // The byte range of row groups `first..last`: from the first one's first page to where the
        // next one starts (or the end of the file, footer included).
        let span = |first: usize, last: usize| {
            let start = if first == 0 { 0 } else { groups[first].0 };
            let end = if last < groups.len() {
                groups[last].0
            } else {
                size
            };
            (start, end)
        };
        let mut first_row = 0;
        let mut at = 0;
        while at < groups.len() {
            let rows = groups[at].1;
            if rows > chunk_rows && self.slice {
                // Equal slices, so the last one is not a sliver.
                let n = rows.div_ceil(chunk_rows);
                for i in 0..n {
                    let (start, end) = (rows * i / n, rows * (i + 1) / n);
                    chunks.push(Chunk {
                        id: chunks.len(),
                        file: file.to_string(),
                        file_size: size,
                        range: Some(span(at, at + 1)),
                        rows: Some(end - start),
                        slice: Some(RowSlice {
                            start: first_row + start,
                            end: first_row + end,
                            file_rows,
                        }),
                    });
                }
                first_row += rows;
                at += 1;
                continue;
            }
            // A run starts with any row group (one larger than `chunk_rows` is not sliced here, so
            // it is a run of its own) and takes the next ones while they fit.
            let first = at;
            let mut run = 0;
            while at < groups.len() && (at == first || run + groups[at].1 <= chunk_rows) {
                run += groups[at].1;
                at += 1;
            }
            kept_whole |= run > chunk_rows;
            first_row += run;
            if run == 0 && groups.len() > 1 {
                continue;
            }
            chunks.push(Chunk {
                id: chunks.len(),
                file: file.to_string(),
                file_size: size,
                range: Some(span(first, at)),
                rows: Some(run),
                slice: None,
            });
        }
        if groups.is_empty() {
            chunks.push(Chunk {
                id: chunks.len(),
                file: file.to_string(),
                file_size: size,
                range: None,
                rows: Some(0),
                slice: None,
            });
        }
        kept_whole
    }
}

fn is_compressed(file: &str) -> bool {
    [".gz", ".bz2", ".xz", ".zst", ".zstd"]
        .iter()
        .any(|e| file.ends_with(e))
}

/// The local path of a listed file, for `file://` sources.
fn local_path(url: &ListingTableUrl, file: &str) -> Option<PathBuf> {
    (url.scheme() == "file").then(|| PathBuf::from(format!("/{file}")))
}

/// How much of a CSV/NDJSON file's start estimates its row width.
const HEAD_BYTES: u64 = 1 << 20;

/// The first MiB of a local file.
fn read_head(path: &PathBuf) -> Result<Vec<u8>> {
    let io = |source| PipelineError::Io {
        path: path.clone(),
        source,
    };
    let mut buf = Vec::with_capacity(HEAD_BYTES as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(HEAD_BYTES)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

/// Average bytes per line (at least 1).
fn average_line_bytes(head: &[u8]) -> u64 {
    let lines = head.iter().filter(|b| **b == b'\n').count() as u64;
    (head.len() as u64 / lines.max(1)).max(1)
}

enum RemoteRead {
    Store(datafusion::object_store::Error),
    Parquet(datafusion::parquet::errors::ParquetError),
}

/// A remote Parquet file's footer, fetched from its tail (64 KiB first; more if the footer says so).
async fn remote_parquet_metadata(
    store: &dyn ObjectStore,
    file: &str,
    size: u64,
) -> std::result::Result<ParquetMetaData, RemoteRead> {
    use datafusion::parquet::errors::ParquetError;
    let path = StorePath::from(file);
    let mut want = size.min(64 << 10);
    loop {
        let tail = store
            .get_range(&path, size - want..size)
            .await
            .map_err(RemoteRead::Store)?;
        let mut reader = ParquetMetaDataReader::new();
        match reader.try_parse_sized(&tail, size) {
            Ok(()) => return reader.finish().map_err(RemoteRead::Parquet),
            Err(ParquetError::NeedMoreData(n)) if (n as u64) > want && (n as u64) <= size => {
                want = n as u64;
            }
            Err(e) => return Err(RemoteRead::Parquet(e)),
        }
    }
}

fn not_parquet(place: &str, shown: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::invalid(
        format!("{place}: {shown}"),
        format!("not a readable Parquet file: {e}"),
    )
}

/// A table whose scan has one partition per chunk.
#[derive(Debug)]
pub struct ChunkTable {
    plan: ChunkPlan,
    /// Set under `on_bad_rows = "quarantine"`: scan with [`QuarantineScanExec`].
    quarantine: Option<Arc<QuarantineLog>>,
    /// Columns no two chunks share a value of (segment buckets): the scan declares itself
    /// hash-partitioned by them, so a per-segment plan needs no exchange and keeps chunks apart.
    keys: Vec<String>,
}

impl ChunkTable {
    pub fn new(plan: ChunkPlan) -> Self {
        Self {
            plan,
            quarantine: None,
            keys: vec![],
        }
    }

    pub fn with_quarantine(plan: ChunkPlan, log: Arc<QuarantineLog>) -> Self {
        Self {
            quarantine: Some(log),
            ..Self::new(plan)
        }
    }

    /// Chunks that each hold every row of their values of `keys` (see the field).
    pub fn partitioned_by(plan: ChunkPlan, keys: Vec<String>) -> Self {
        Self {
            keys,
            ..Self::new(plan)
        }
    }

    pub fn plan(&self) -> &ChunkPlan {
        &self.plan
    }
}

impl ChunkTable {
    /// `Hash(keys)` over the table's schema, one partition per chunk, when keys are set.
    fn declared_partitioning(&self) -> Option<Partitioning> {
        if self.keys.is_empty() {
            return None;
        }
        let schema = &self.plan.schema;
        let exprs = self
            .keys
            .iter()
            .map(|k| {
                let i = schema.index_of(k).ok()?;
                Some(Arc::new(Column::new(k, i)) as Arc<dyn PhysicalExpr>)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Partitioning::Hash(exprs, self.plan.chunks.len()))
    }
}

#[async_trait]
impl TableProvider for ChunkTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(log) = &self.quarantine {
            // Object-store paths of local files are relative to the filesystem root.
            let files = self
                .plan
                .chunks
                .iter()
                .map(|c| PathBuf::from("/").join(&c.file))
                .collect();
            return Ok(Arc::new(QuarantineScanExec::new(
                self.plan.clone(),
                files,
                projection.cloned(),
                log.clone(),
            )?));
        }
        let format = self.plan.source.df_format();
        let source = format.file_source(TableSchema::from(self.plan.schema.clone()));
        let groups: Vec<FileGroup> = self
            .plan
            .chunks
            .iter()
            .map(|c| FileGroup::new(vec![c.partitioned_file()]))
            .collect();
        let config = FileScanConfigBuilder::new(self.plan.store.clone(), source)
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            // Partition i must read chunk i and nothing else: no stealing of sibling files.
            .with_preserve_order(true)
            .with_output_partitioning(self.declared_partitioning())
            .build();
        format.create_physical_plan(state, config).await
    }
}
