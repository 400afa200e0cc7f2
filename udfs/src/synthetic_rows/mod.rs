//! `SELECT * FROM synthetic_rows(<rows>, <features> [, <seed> [, <planted_fraction>]])`: rows made
//! by the engine from a seed, read from no file. Columns `id` (BIGINT, 0..rows), `f0` … `f{k-1}`
//! (DOUBLE; feature j has mean 10·j and standard deviation 1 + j) and `planted` (BOOLEAN: the row
//! is one of the anomalies put in, a `planted_fraction` of rows, default 0.01, whose features lie
//! 6 deviations out).
//!
//! For measuring at any size without disk: every value is a pure function of (seed, row,
//! feature) ([`values`]), so each partition makes its own row range, a cluster's executors make
//! theirs where they run, and the rows are the same bits for any partitioning, engine or CPU.

mod exec;
mod table;
pub mod values;

pub use exec::SyntheticRowsExec;
pub use table::{SyntheticRowsFunction, SyntheticRowsTable};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use std::sync::Arc;

pub const NAME: &str = "synthetic_rows";
pub const USAGE: &str = "synthetic_rows(<rows>, <features> [, <seed> [, <planted_fraction>]])";
/// At most this many rows (2^48, about 2.8·10^14): ids stay exact in a DOUBLE too.
pub const MAX_ROWS: u64 = 1 << 48;
/// At most this many feature columns.
pub const MAX_FEATURES: u32 = 1024;
/// At most this many partitions (row ranges) in a scan.
const MAX_PARTITIONS: u32 = 1 << 16;

/// What `synthetic_rows(...)` makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticRows {
    pub rows: u64,
    pub features: u32,
    pub seed: u64,
    pub planted_fraction: f64,
}

impl SyntheticRows {
    /// Checks the bounds (what a decoded plan or a query may ask for).
    pub fn new(rows: u64, features: u32, seed: u64, planted_fraction: f64) -> Result<Self> {
        if rows > MAX_ROWS {
            return Err(DataFusionError::Plan(format!(
                "{NAME}: {rows} rows is more than the {MAX_ROWS} it can make. Usage: {USAGE}"
            )));
        }
        if !(1..=MAX_FEATURES).contains(&features) {
            return Err(DataFusionError::Plan(format!(
                "{NAME}: features must be 1 to {MAX_FEATURES}, got {features}. Usage: {USAGE}"
            )));
        }
        if !(0.0..=1.0).contains(&planted_fraction) {
            return Err(DataFusionError::Plan(format!(
                "{NAME}: planted_fraction must be between 0 and 1, got {planted_fraction}. Usage: {USAGE}"
            )));
        }
        Ok(Self {
            rows,
            features,
            seed,
            planted_fraction,
        })
    }

    /// `id`, `f0` … `f{features-1}`, `planted`.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new("id", DataType::Int64, false)];
        fields.extend(
            (0..self.features).map(|j| Field::new(format!("f{j}"), DataType::Float64, false)),
        );
        fields.push(Field::new("planted", DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    }

    /// The generator column at schema index `i`.
    fn column(&self, i: usize) -> values::Column {
        match i {
            0 => values::Column::Id,
            i if i <= self.features as usize => values::Column::Feature(i as u32 - 1),
            _ => values::Column::Planted,
        }
    }

    /// 28 bytes: rows, features, seed, planted_fraction (little-endian).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.rows.to_le_bytes());
        buf.extend_from_slice(&self.features.to_le_bytes());
        buf.extend_from_slice(&self.seed.to_le_bytes());
        buf.extend_from_slice(&self.planted_fraction.to_le_bytes());
    }

    /// Reads what [`Self::encode`] wrote at the start of `buf`, checking the bounds; returns the
    /// rest of `buf`.
    pub fn decode(buf: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = Reader(buf);
        let spec = Self::new(r.u64()?, r.u32()?, r.u64()?, f64::from_bits(r.u64()?))?;
        Ok((spec, r.0))
    }
}

/// Reads fixed-width little-endian fields, failing on a short buffer instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.0.len() < N {
            return Err(DataFusionError::Internal(format!(
                "decoding {NAME}: the plan ends {} bytes early",
                N - self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests;
