//! HDF5 inputs (cargo feature `hdf5`, through the system's libhdf5).
//!
//! Two layouts are tables:
//! - a group of 1-D datasets of equal length, one per column (what `h5py` writes with
//!   `f.create_dataset(name, data=column)`); numbers, booleans and strings;
//! - a pandas DataFrame written with `to_hdf(..., format="fixed")`: `axis0` names the columns and
//!   `block<i>_items` / `block<i>_values` hold them by dtype.
//!
//! The table is the file's root group when it holds datasets, else its only group. Rows are read
//! whole into Arrow arrays: HDF5 files are read once, like a CSV header-to-footer, and large ones
//! belong in Parquet (the error for a file that holds no table says how to convert).

use crate::error::{EngineError, Result};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use hdf5::types::VarLenUnicode;
use hdf5::types::{FixedAscii, FixedUnicode, FloatSize, IntSize, TypeDescriptor, VarLenAscii};
use hdf5::{Dataset, Group};
use std::sync::Arc;

/// Rows per batch of the table (the scan's unit).
const BATCH_ROWS: usize = 65_536;

fn bad(path: &str, reason: impl Into<String>) -> EngineError {
    EngineError::UnsupportedFormat {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn h5(path: &str, what: &str, e: hdf5::Error) -> EngineError {
    bad(path, format!("{what}: {e}"))
}

/// Reads the table in an HDF5 file: its schema and its rows in batches.
pub fn read_table(path: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = hdf5::File::open(path).map_err(|e| h5(path, "cannot open as HDF5", e))?;
    let root: Group = (*file).clone();
    let group = table_group(path, &root)?;
    let columns = if group.link_exists("axis0") && group.link_exists("block0_values") {
        pandas_fixed(path, &group)?
    } else {
        dataset_columns(path, &group)?
    };
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(name, array.data_type().clone(), true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let rows = columns.first().map(|c| c.1.len()).unwrap_or(0);
    let mut batches = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = BATCH_ROWS.min(rows - start);
        let arrays = columns.iter().map(|(_, a)| a.slice(start, len)).collect();
        batches.push(
            RecordBatch::try_new(schema.clone(), arrays)
                .map_err(|e| bad(path, format!("cannot build rows: {e}")))?,
        );
        start += len;
    }
    Ok((schema, batches))
}

/// The group holding the table: the root when it holds datasets, else its only group.
fn table_group(path: &str, root: &Group) -> Result<Group> {
    let datasets = root
        .datasets()
        .map_err(|e| h5(path, "listing datasets", e))?;
    if !datasets.is_empty() {
        return Ok(root.clone());
    }
    let groups = root.groups().map_err(|e| h5(path, "listing groups", e))?;
    match groups.len() {
        1 => Ok(groups[0].clone()),
        0 => Err(bad(
            path,
            "the file holds no datasets; write one 1-D dataset per column (h5py), or a pandas \
             DataFrame with to_hdf(p, key=..., format=\"fixed\")",
        )),
        _ => Err(bad(
            path,
            format!(
                "the file holds {} groups ({}); keep one table per file, e.g. \
                 pandas.read_hdf(p, key).to_parquet('data.parquet') for each key",
                groups.len(),
                groups
                    .iter()
                    .map(|g| g.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// One column per 1-D dataset, in name order.
fn dataset_columns(path: &str, group: &Group) -> Result<Vec<(String, ArrayRef)>> {
    let mut names = group
        .member_names()
        .map_err(|e| h5(path, "listing members", e))?;
    names.sort();
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    for name in names {
        let Ok(ds) = group.dataset(&name) else {
            continue; // a subgroup, not a column
        };
        if ds.ndim() != 1 {
            return Err(bad(
                path,
                format!(
                    "dataset '{name}' has shape {:?}; a column must be 1-D (one value per row)",
                    ds.shape()
                ),
            ));
        }
        let array = read_1d(path, &name, &ds)?;
        if let Some((first, a)) = columns.first()
            && a.len() != array.len()
        {
            return Err(bad(
                path,
                format!(
                    "dataset '{name}' has {} rows but '{first}' has {}; columns must have equal lengths",
                    array.len(),
                    a.len()
                ),
            ));
        }
        columns.push((name, array));
    }
    if columns.is_empty() {
        return Err(bad(path, "the table group holds no 1-D datasets"));
    }
    Ok(columns)
}

fn read_1d(path: &str, name: &str, ds: &Dataset) -> Result<ArrayRef> {
    let what = format!("reading dataset '{name}'");
    let err = |e| h5(path, &what, e);
    let ty = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| h5(path, &format!("the type of dataset '{name}'"), e))?;
    macro_rules! numbers {
        ($t:ty, $arr:ty) => {
            Arc::new(<$arr>::from(ds.read_raw::<$t>().map_err(err)?)) as ArrayRef
        };
    }
    Ok(match ty {
        TypeDescriptor::Integer(IntSize::U1) => numbers!(i8, Int8Array),
        TypeDescriptor::Integer(IntSize::U2) => numbers!(i16, Int16Array),
        TypeDescriptor::Integer(IntSize::U4) => numbers!(i32, Int32Array),
        TypeDescriptor::Integer(IntSize::U8) => numbers!(i64, Int64Array),
        TypeDescriptor::Unsigned(IntSize::U1) => numbers!(u8, UInt8Array),
        TypeDescriptor::Unsigned(IntSize::U2) => numbers!(u16, UInt16Array),
        TypeDescriptor::Unsigned(IntSize::U4) => numbers!(u32, UInt32Array),
        TypeDescriptor::Unsigned(IntSize::U8) => numbers!(u64, UInt64Array),
        TypeDescriptor::Float(FloatSize::U4) => numbers!(f32, Float32Array),
        TypeDescriptor::Float(_) => numbers!(f64, Float64Array),
        TypeDescriptor::Boolean => numbers!(bool, BooleanArray),
        TypeDescriptor::VarLenUnicode => strings(ds.read_raw::<VarLenUnicode>().map_err(err)?),
        TypeDescriptor::VarLenAscii => strings(ds.read_raw::<VarLenAscii>().map_err(err)?),
        TypeDescriptor::FixedAscii(n) if n <= 256 => {
            strings(ds.read_raw::<FixedAscii<256>>().map_err(err)?)
        }
        TypeDescriptor::FixedUnicode(n) if n <= 1024 => {
            strings(ds.read_raw::<FixedUnicode<1024>>().map_err(err)?)
        }
        other => {
            return Err(bad(
                path,
                format!(
                    "dataset '{name}' has type {other}, which is not a column type here (numbers, booleans, strings)"
                ),
            ));
        }
    })
}

fn strings<S: AsRef<str>>(values: Vec<S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        values.iter().map(|v| v.as_ref().to_string()),
    ))
}

/// pandas' fixed format: columns in `axis0` order, gathered from the dtype blocks.
fn pandas_fixed(path: &str, group: &Group) -> Result<Vec<(String, ArrayRef)>> {
    let names = |ds: &str| -> Result<Vec<String>> {
        let d = group.dataset(ds).map_err(|e| h5(path, ds, e))?;
        let values = d
            .read_raw::<FixedAscii<256>>()
            .map_err(|e| h5(path, &format!("reading {ds}"), e))?;
        Ok(values.iter().map(|v| v.as_str().to_string()).collect())
    };
    let order = names("axis0")?;
    let mut found: Vec<(String, ArrayRef)> = Vec::new();
    let mut block = 0;
    while group.link_exists(&format!("block{block}_values")) {
        let items = names(&format!("block{block}_items"))?;
        let values_name = format!("block{block}_values");
        let ds = group
            .dataset(&values_name)
            .map_err(|e| h5(path, &values_name, e))?;
        let ty = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| h5(path, &values_name, e))?;
        let shape = ds.shape();
        if shape.len() != 2 || shape[1] != items.len() {
            return Err(bad(
                path,
                format!(
                    "{values_name} has shape {shape:?} for {} columns",
                    items.len()
                ),
            ));
        }
        let read_err = |e| h5(path, &format!("reading {values_name}"), e);
        // One read of the block; its columns are the items, in order.
        let columns: Vec<ArrayRef> = match ty {
            TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
                let all = ds.read_2d::<i64>().map_err(read_err)?;
                all.columns()
                    .into_iter()
                    .map(|c| Arc::new(Int64Array::from(c.to_vec())) as ArrayRef)
                    .collect()
            }
            TypeDescriptor::Float(_) => {
                let all = ds.read_2d::<f64>().map_err(read_err)?;
                all.columns()
                    .into_iter()
                    .map(|c| Arc::new(Float64Array::from(c.to_vec())) as ArrayRef)
                    .collect()
            }
            TypeDescriptor::Boolean => {
                let all = ds.read_2d::<bool>().map_err(read_err)?;
                all.columns()
                    .into_iter()
                    .map(|c| Arc::new(BooleanArray::from(c.to_vec())) as ArrayRef)
                    .collect()
            }
            other => {
                return Err(bad(
                    path,
                    format!(
                        "columns {} ({values_name}) have type {other}; pandas stores text columns \
                         pickled in the fixed format, which is not read (it runs code). Write them with \
                         to_parquet instead",
                        items.join(", ")
                    ),
                ));
            }
        };
        found.extend(items.into_iter().zip(columns));
        block += 1;
    }
    let mut columns = Vec::with_capacity(order.len());
    for name in &order {
        let at = found.iter().position(|(n, _)| n == name).ok_or_else(|| {
            bad(
                path,
                format!("axis0 names column '{name}' but no block holds it"),
            )
        })?;
        columns.push(found.swap_remove(at));
    }
    Ok(columns)
}
