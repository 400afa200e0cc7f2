//! Arrow columns → contiguous `f64` feature columns plus a row-validity mask.
//!
//! Missing-value policy (the same everywhere in Nomaly): a row whose features include a null, NaN or
//! ±Infinity is *skipped by the fit* (counted as skipped) and *gets a null score* (and null
//! `is_anomaly`). Nothing panics and no such value ever reaches a sketch.

use crate::error::{DetectorError, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use std::borrow::Cow;

/// A batch of feature columns as `f64`.
pub struct Features<'a> {
    pub columns: Vec<Cow<'a, [f64]>>,
    /// `categorical[j]`: column j was text, and holds category codes ([`crate::categorical`]).
    pub categorical: Vec<bool>,
    /// `valid[i]` is true when every feature of row i is present and finite.
    pub valid: Vec<bool>,
    pub len: usize,
}

impl<'a> Features<'a> {
    pub fn from_arrays(arrays: &'a [ArrayRef]) -> Result<Self> {
        let len = arrays.first().map(|a| a.len()).unwrap_or(0);
        let mut columns = Vec::with_capacity(arrays.len());
        let mut categorical = Vec::with_capacity(arrays.len());
        let mut valid = vec![true; len];
        for (index, array) in arrays.iter().enumerate() {
            if array.len() != len {
                return Err(DetectorError::ColumnLengthMismatch {
                    first: len,
                    other: array.len(),
                });
            }
            categorical.push(is_categorical(array.data_type()));
            let col = to_f64(index + 1, array.as_ref())?;
            if let Some(nulls) = array.logical_nulls().filter(|n| n.null_count() > 0) {
                for (v, ok) in valid.iter_mut().zip(nulls.iter()) {
                    *v &= ok;
                }
            }
            // A read-only check first (a fold, so it vectorises): columns are almost always all
            // finite, and then the mask is not rewritten.
            if !col.iter().fold(true, |all, x| all & x.is_finite()) {
                for (v, x) in valid.iter_mut().zip(col.iter()) {
                    *v &= x.is_finite();
                }
            }
            columns.push(col);
        }
        Ok(Self {
            columns,
            categorical,
            valid,
            len,
        })
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    pub fn valid_count(&self) -> usize {
        self.valid.iter().filter(|v| **v).count()
    }
}

/// True for text types: categorical features ([`crate::categorical`]).
pub fn is_categorical(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_categorical(v),
        _ => false,
    }
}

/// Category codes of a text column (any value for a null row: the mask excludes it).
fn category_codes(index: usize, array: &dyn Array) -> Result<Vec<f64>> {
    use crate::categorical::category_code;
    let code = |v: Option<&str>| v.map_or(0.0, category_code);
    Ok(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(code).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(code).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(code).collect(),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            // Each dictionary value hashed once, then looked up by key.
            let values = category_codes(index, dict.values().as_ref())?;
            dict.normalized_keys()
                .iter()
                .map(|k| values.get(*k).copied().unwrap_or(0.0))
                .collect()
        }
        other => {
            return Err(DetectorError::NonNumericColumn {
                index,
                data_type: other.to_string(),
            });
        }
    })
}

/// True for the Arrow types a feature column may have.
pub fn is_numeric(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float64
            | DataType::Float32
            | DataType::Float16
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Null
    )
}

fn to_f64<'a>(index: usize, array: &'a dyn Array) -> Result<Cow<'a, [f64]>> {
    macro_rules! convert {
        ($t:ty) => {
            Cow::Owned(
                array
                    .as_primitive::<$t>()
                    .values()
                    .iter()
                    .map(|v| *v as f64)
                    .collect(),
            )
        };
    }
    Ok(match array.data_type() {
        DataType::Float64 => Cow::Borrowed(array.as_primitive::<Float64Type>().values().as_ref()),
        DataType::Float32 => convert!(Float32Type),
        DataType::Float16 => Cow::Owned(
            array
                .as_primitive::<Float16Type>()
                .values()
                .iter()
                .map(|v| v.to_f64())
                .collect(),
        ),
        DataType::Int8 => convert!(Int8Type),
        DataType::Int16 => convert!(Int16Type),
        DataType::Int32 => convert!(Int32Type),
        DataType::Int64 => convert!(Int64Type),
        DataType::UInt8 => convert!(UInt8Type),
        DataType::UInt16 => convert!(UInt16Type),
        DataType::UInt32 => convert!(UInt32Type),
        DataType::UInt64 => convert!(UInt64Type),
        // An all-null column (e.g. a NULL literal): every row is invalid.
        DataType::Null => Cow::Owned(vec![f64::NAN; array.len()]),
        dt if is_categorical(dt) => Cow::Owned(category_codes(index, array)?),
        other => {
            return Err(DetectorError::NonNumericColumn {
                index,
                data_type: other.to_string(),
            });
        }
    })
}
