//! The budget is the process's: `--memory-limit X` bounds the peak resident set, not only
//! DataFusion's memory pool. X is split three ways:
//!
//! 1. the process itself — code, thread stacks, the allocator's arenas — measured from the OS when
//!    the process builds its first session, and never taken as less than [`PROCESS_FOOTPRINT_FLOOR`] (the peak RSS
//!    of an empty query in the release build: the code a query pages in is not resident yet when
//!    the session is built);
//! 2. Parquet reader buffers, which DataFusion does not count: each partition that reads a file
//!    holds a whole row group's compressed column chunks while it decodes them, so their size comes
//!    from the files' footers ([`parquet_read_buffers`]);
//! 3. the operators' pool: the rest, never less than [`MIN_POOL_PER_PARTITION`] per partition (or
//!    the whole budget, when that is smaller).
//!
//! When 1 + 2 + the smallest pool exceed X the query still runs (on that smallest pool), and the
//! CLI states the minimum it could have kept to: [`BudgetSplit::minimum`].

use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use std::path::{Path, PathBuf};

/// The least the process itself is taken to occupy. Measured: `nomaly sql -e "SELECT 1"` peaks at
/// 59 MiB resident (release build, x86-64 Linux).
pub const PROCESS_FOOTPRINT_FLOOR: usize = 64 << 20;

/// The smallest pool each partition's operators are given, whatever the budget. An ECOD or COPOD
/// fit over 8 features holds a ~17 MB state per partition, which cannot spill; with 32 MiB for two
/// partitions those fits failed for memory and completed only on a retry (a pipeline at
/// `--memory-limit 256MB` retried 8 times). Sorts and joins need a batch per partition and a merge
/// buffer besides.
pub const MIN_POOL_PER_PARTITION: usize = 32 << 20;

/// A reader's resident bytes per byte of compressed row group. Measured on a 10M × 8 Parquet file
/// of 1M-row row groups (64.6 MB compressed each): 85 MB of RSS per reading partition — the
/// compressed chunks plus decoded pages and the batch being built.
const READER_BYTES_PER_ROW_GROUP_BYTE: f64 = 1.25;

/// Per reading partition on top of the row group: decoder state and one output batch.
const READER_FIXED_BYTES: usize = 4 << 20;

/// How a memory budget is shared out; all figures in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSplit {
    /// The whole budget (`--memory-limit`, or 80% of RAM / the cgroup limit).
    pub budget: usize,
    /// The process's own footprint (part 1 above).
    pub process: usize,
    /// Parquet reader buffers outside the pool (part 2).
    pub readers: usize,
    /// What DataFusion's pool gets.
    pub pool: usize,
    /// The smallest pool it could get: [`MIN_POOL_PER_PARTITION`] per partition.
    pub smallest_pool: usize,
}

impl BudgetSplit {
    pub fn new(budget: usize, process: usize, readers: usize, partitions: usize) -> Self {
        let smallest_pool = MIN_POOL_PER_PARTITION.saturating_mul(partitions.max(1));
        // Never more than the budget itself: a budget below the smallest pool (tests of spilling
        // use a few hundred KB) is the pool, as it was before the budget was the process's.
        let pool = budget
            .saturating_sub(process.saturating_add(readers))
            .max(smallest_pool.min(budget));
        Self {
            budget,
            process,
            readers,
            pool,
            smallest_pool,
        }
    }

    /// The smallest budget this split can keep to.
    pub fn minimum(&self) -> usize {
        self.process + self.readers + self.smallest_pool
    }

    /// Whether peak RSS can be expected to stay within the budget.
    pub fn honoured(&self) -> bool {
        self.budget >= self.minimum()
    }

    /// One line for logs and `--verbose`: where the budget goes.
    pub fn describe(&self) -> String {
        format!(
            "memory budget {}: {} process + {} Parquet reader buffers + {} operator pool",
            mib(self.budget),
            mib(self.process),
            mib(self.readers),
            mib(self.pool)
        )
    }

    /// The warning (without a "warning:" prefix) when the budget is below [`Self::minimum`], with
    /// what to change.
    pub fn shortfall(&self) -> Option<String> {
        (!self.honoured()).then(|| {
            format!(
                "a memory limit of {} is below the {} this run can keep to ({} process + \
                 {} Parquet reader buffers + {} smallest operator pool); it runs, but its peak \
                 RSS may exceed the limit. Raise --memory-limit to {}, or lower --partitions, or \
                 rewrite the input with smaller row groups",
                mib(self.budget),
                mib(self.minimum()),
                mib(self.process),
                mib(self.readers),
                mib(self.smallest_pool),
                mib(self.minimum()),
            )
        })
    }
}

/// What an executor sets aside per task slot outside the pool: it cannot know its inputs when it
/// starts, so it assumes a Parquet row group of about 64 MB compressed (1M rows × 8 doubles) per
/// reading task, 85 MB resident (see [`READER_BYTES_PER_ROW_GROUP_BYTE`]), plus shuffle fetches
/// in flight and stage buffers: 118 MiB per slot was measured outside a full pool on such a file,
/// and with 128 MiB set aside 10,000 segments still peaked 4-6% above the budget; at 160 MiB
/// every measured peak was within it (benchmarks/README.md, "A cluster on this machine").
pub const EXECUTOR_READER_ALLOWANCE: usize = 160 << 20;

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// This process's resident set now (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The process's own footprint: its resident set when its first session was built, at least
/// [`PROCESS_FOOTPRINT_FLOOR`]. Measured once: in `nomaly serve` later sessions share the process
/// with running jobs, whose memory is their own budgets' and not footprint.
pub fn process_footprint() -> usize {
    static FOOTPRINT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FOOTPRINT.get_or_init(|| resident_bytes().unwrap_or(0).max(PROCESS_FOOTPRINT_FLOOR))
}

/// The reader buffers `partitions` partitions hold while scanning the local Parquet inputs at
/// `paths` (files or directories of files) together: per input, the largest row group's
/// compressed bytes for each partition that can be reading one. Inputs that are not local Parquet
/// (CSV and JSON read a batch at a time; remote stores are not inspected) add nothing.
pub fn parquet_read_buffers<P: AsRef<Path>>(paths: &[P], partitions: usize) -> usize {
    paths
        .iter()
        .filter_map(|p| largest_row_group(p.as_ref()))
        .map(|(largest, row_groups)| {
            let readers = partitions.clamp(1, row_groups.max(1));
            readers
                * ((largest as f64 * READER_BYTES_PER_ROW_GROUP_BYTE) as usize + READER_FIXED_BYTES)
        })
        .sum()
}

/// (largest row group's compressed bytes, number of row groups) over the Parquet files at `path`.
fn largest_row_group(path: &Path) -> Option<(usize, usize)> {
    if path.to_string_lossy().contains("://") {
        return None;
    }
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        v.sort();
        // Footers of a few hundred files are read in milliseconds; past that the first ones
        // stand for the rest (files of one dataset share a writer and its row-group size).
        v.truncate(256);
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut largest = 0usize;
    let mut count = 0usize;
    for f in files {
        let Ok(file) = std::fs::File::open(&f) else {
            continue;
        };
        let Ok(meta) = ParquetMetaDataReader::new().parse_and_finish(&file) else {
            continue;
        };
        for rg in meta.row_groups() {
            count += 1;
            largest = largest.max(rg.compressed_size().max(0) as usize);
        }
    }
    (count > 0).then_some((largest, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_the_budget_less_process_and_readers() {
        let s = BudgetSplit::new(512 << 20, 64 << 20, 170 << 20, 2);
        assert_eq!(s.pool, 278 << 20);
        assert!(s.honoured());
        assert_eq!(s.minimum(), (64 + 170 + 64) << 20);
        assert!(s.shortfall().is_none());
    }

    #[test]
    fn a_budget_below_the_minimum_keeps_the_smallest_pool_and_says_so() {
        let s = BudgetSplit::new(256 << 20, 64 << 20, 170 << 20, 2);
        assert_eq!(s.pool, 2 * MIN_POOL_PER_PARTITION);
        assert!(!s.honoured());
        let w = s.shortfall().expect("a shortfall");
        assert!(w.contains("below the 298 MiB"), "{w}");
        assert!(w.contains("+ 64 MiB smallest operator pool"), "{w}");
        assert!(w.contains("--memory-limit to 298 MiB"), "{w}");
        // The smallest pool grows with the partitions that hold state at once.
        assert_eq!(
            BudgetSplit::new(256 << 20, 64 << 20, 170 << 20, 4).pool,
            128 << 20
        );
        // A budget below the smallest pool is all pool.
        assert_eq!(BudgetSplit::new(400 << 10, 64 << 20, 0, 2).pool, 400 << 10);
    }

    #[test]
    fn non_parquet_and_remote_inputs_add_no_reader_buffers() {
        assert_eq!(parquet_read_buffers(&["s3://bucket/x.parquet"], 2), 0);
        assert_eq!(parquet_read_buffers(&["/no/such/file.parquet"], 2), 0);
    }

    #[test]
    fn reader_buffers_follow_the_largest_row_group_and_the_reading_partitions() {
        use datafusion::arrow::array::{Float64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::basic::Compression;
        use datafusion::parquet::file::properties::WriterProperties;
        use std::sync::Arc;

        let dir = std::env::temp_dir().join(format!("nomaly-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .build();
        let file = std::fs::File::create(&path).expect("create");
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("writer");
        let x = Float64Array::from_iter_values((0..3000).map(|i| i as f64 * 0.37));
        w.write(&RecordBatch::try_new(schema, vec![Arc::new(x)]).expect("batch"))
            .expect("write");
        w.close().expect("close");

        let one = parquet_read_buffers(&[&path], 1);
        // 1000 plain f64 values per row group: 8000 bytes and the page header.
        assert!(
            (8000 * 5 / 4 + READER_FIXED_BYTES..9000 * 5 / 4 + READER_FIXED_BYTES).contains(&one),
            "{one}"
        );
        assert_eq!(parquet_read_buffers(&[&path], 2), 2 * one);
        // Three row groups: no more than three partitions can be reading one.
        assert_eq!(parquet_read_buffers(&[&path], 16), 3 * one);
        assert_eq!(parquet_read_buffers(&[&dir], 1), one);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_resident_set_is_read_from_the_os() {
        let rss = resident_bytes().expect("Linux /proc");
        assert!(rss > 1 << 20, "{rss}");
        assert!(process_footprint() >= PROCESS_FOOTPRINT_FLOOR);
    }
}
