//! Reading models out of a model argument and scoring a batch with them.
//!
//! A model argument is usually one value for the whole batch (the one-row fit joined to every row);
//! `fit_detector` returns it dictionary-encoded so a join repeats a key, not the model bytes. Per-row
//! models (per-segment fits joined by key) are grouped so each distinct model scores its rows in one
//! vectorised call. Decoded models are cached by their bytes: a batch costs a byte comparison, not a
//! decode.

use crate::call::{coerce_model_args, lenient_coercion};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use nomaly_detectors::Model;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Model bytes the cache may hold before it starts over. Per-group models (`OVER (PARTITION BY
/// k)`, or a table of models joined by key) arrive interleaved, a batch naming thousands of them;
/// a cache smaller than that working set decoded every model again in every batch (100 ECOD groups
/// over 2M rows took 18 s).
const CACHE_BYTES: usize = 256 << 20;

/// Decoded models, found by where their bytes are or, failing that, by the bytes themselves.
#[derive(Debug, Default)]
pub struct ModelCache {
    inner: Mutex<CacheEntries>,
}

/// A decoded model with the bytes it was decoded from.
pub(crate) type StoredModel = (Vec<u8>, Arc<Model>);

#[derive(Debug, Default)]
struct CacheEntries {
    /// Content hash → the models with that hash.
    by_content: HashMap<u64, Vec<StoredModel>>,
    /// (address, length) of bytes inside a held array → model. Holding the arrays keeps that
    /// memory from being freed and reused (Arrow buffers are immutable), so the same address and
    /// length are the same bytes: batches that share a dictionary's values array cost no hashing
    /// or comparison (an ECOD model is megabytes; compared per batch it cost ~3% of a run).
    by_address: HashMap<(usize, usize), Arc<Model>>,
    /// The held arrays, newest last, each with the addresses registered under it. Only a few are
    /// kept: a plan that copies the model into every batch (a cross join) would otherwise pile up
    /// one copy per batch.
    holders: VecDeque<(ArrayRef, Vec<(usize, usize)>)>,
    bytes: usize,
}

const HELD_ARRAYS: usize = 4;

impl CacheEntries {
    /// Finds `model` by `address` (bytes inside `holder`'s buffers) while `holder` is held.
    fn hold(&mut self, holder: &ArrayRef, address: (usize, usize), model: &Arc<Model>) {
        let held = match self
            .holders
            .iter()
            .position(|(x, _)| Arc::ptr_eq(x, holder))
        {
            Some(i) => i,
            None => {
                if self.holders.len() == HELD_ARRAYS
                    && let Some((_, addresses)) = self.holders.pop_front()
                {
                    for a in addresses {
                        self.by_address.remove(&a);
                    }
                }
                self.holders.push_back((Arc::clone(holder), Vec::new()));
                self.holders.len() - 1
            }
        };
        self.holders[held].1.push(address);
        self.by_address.insert(address, Arc::clone(model));
    }
}

impl ModelCache {
    /// The model stored in `bytes`, decoded once.
    pub fn get(&self, bytes: &[u8]) -> Result<Arc<Model>> {
        self.lookup(bytes, None)
    }

    /// [`ModelCache::get`] for bytes that lie in `holder`'s buffers (a dictionary's values).
    pub fn get_in(&self, holder: &ArrayRef, bytes: &[u8]) -> Result<Arc<Model>> {
        self.lookup(bytes, Some(holder))
    }

    fn lookup(&self, bytes: &[u8], holder: Option<&ArrayRef>) -> Result<Arc<Model>> {
        let mut cache = self
            .inner
            .lock()
            .map_err(|_| exec_datafusion_err!("model cache poisoned"))?;
        let address = (bytes.as_ptr() as usize, bytes.len());
        if holder.is_some()
            && let Some(m) = cache.by_address.get(&address)
        {
            return Ok(Arc::clone(m));
        }
        // Fitted in this process (a segment's model, scored right after its fit): not decoded.
        let fitted = crate::fitted_models::take(bytes);
        if let (Some(h), Some(m)) = (holder, &fitted) {
            // found by where its bytes are from now on, without hashing them for the content index
            cache.hold(h, address, m);
            return Ok(Arc::clone(m));
        }
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        let found = cache.by_content.get(&hash).and_then(|same_hash| {
            same_hash
                .iter()
                .find(|(b, _)| b.as_slice() == bytes)
                .map(|(_, m)| Arc::clone(m))
        });
        let model = match found {
            Some(m) => m,
            None => {
                let m = match fitted {
                    Some(m) => m,
                    None => {
                        Arc::new(Model::from_bytes(bytes).map_err(|e| exec_datafusion_err!("{e}"))?)
                    }
                };
                if cache.bytes + bytes.len() > CACHE_BYTES {
                    *cache = CacheEntries::default();
                }
                cache.bytes += bytes.len();
                cache
                    .by_content
                    .entry(hash)
                    .or_default()
                    .push((bytes.to_vec(), Arc::clone(&m)));
                m
            }
        };
        if let Some(h) = holder {
            cache.hold(h, address, &model);
        }
        Ok(model)
    }
}

/// Which model scores each row of a batch.
pub struct ResolvedModels {
    pub models: Vec<Arc<Model>>,
    /// `None`: all rows use `models[0]` (or are null if `models` is empty).
    pub per_row: Option<Vec<Option<u32>>>,
}

fn binary_value(array: &dyn Array, i: usize) -> Option<&[u8]> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(array.as_binary_view().value(i)),
        _ => None,
    }
}

fn scalar_bytes(s: &ScalarValue) -> Result<Option<&[u8]>> {
    Ok(match s {
        ScalarValue::Binary(b) | ScalarValue::LargeBinary(b) | ScalarValue::BinaryView(b) => {
            b.as_deref()
        }
        ScalarValue::Dictionary(_, inner) => return scalar_bytes(inner),
        ScalarValue::Null => None,
        other if crate::call::is_model_name_type(&other.data_type()) => {
            return exec_err!(
                "model name {other} was not resolved: names are resolved from a model catalog                  while the query is planned (nomaly sql --models)"
            );
        }
        other => {
            return exec_err!(
                "model argument has type {}, expected BINARY",
                other.data_type()
            );
        }
    })
}

pub fn resolve_models(arg: &ColumnarValue, cache: &ModelCache) -> Result<ResolvedModels> {
    let array = match arg {
        ColumnarValue::Scalar(s) => {
            let models = match scalar_bytes(s)? {
                Some(b) => vec![cache.get(b)?],
                None => vec![],
            };
            return Ok(ResolvedModels {
                models,
                per_row: None,
            });
        }
        ColumnarValue::Array(a) => a,
    };
    if crate::call::is_model_name_type(array.data_type()) {
        return exec_err!(
            "the model argument is a string column; a model is named by a string literal              ('fraud', 'fraud@2'), or given as the BINARY result of fit_detector(...)"
        );
    }
    let n = array.len();
    // Dictionary: decode each referenced value once.
    if let DataType::Dictionary(_, _) = array.data_type() {
        let dict = array.as_any_dictionary();
        if dict.values().is_empty() {
            // No values: every row is null (or there are no rows; Ballista's shuffle reads give
            // such arrays for batches a filter emptied).
            return Ok(ResolvedModels {
                models: vec![],
                per_row: Some(vec![None; n]),
            });
        }
        let keys = dict.normalized_keys();
        let values = dict.values();
        let mut slot_of_value: Vec<Option<u32>> = vec![None; values.len()];
        let mut models = Vec::new();
        let mut per_row = Vec::with_capacity(n);
        for (i, &k) in keys.iter().enumerate() {
            if array.is_null(i) {
                per_row.push(None);
                continue;
            }
            let slot = match slot_of_value[k] {
                Some(s) => s,
                None => {
                    let Some(bytes) = binary_value(values.as_ref(), k) else {
                        per_row.push(None);
                        continue;
                    };
                    let m = cache.get_in(values, bytes)?;
                    let s = match models.iter().position(|x: &Arc<Model>| Arc::ptr_eq(x, &m)) {
                        Some(p) => p as u32,
                        None => {
                            models.push(m);
                            (models.len() - 1) as u32
                        }
                    };
                    slot_of_value[k] = Some(s);
                    s
                }
            };
            per_row.push(Some(slot));
        }
        return Ok(simplify(models, per_row));
    }
    // Plain binary: runs of equal bytes share a model.
    let mut models: Vec<Arc<Model>> = Vec::new();
    let mut per_row = Vec::with_capacity(n);
    let mut last: Option<(&[u8], u32)> = None;
    for i in 0..n {
        let Some(bytes) = binary_value(array.as_ref(), i) else {
            if !array.is_null(i) {
                return exec_err!(
                    "model argument has type {}, expected BINARY",
                    array.data_type()
                );
            }
            per_row.push(None);
            continue;
        };
        let slot = match last {
            Some((b, s)) if b == bytes => s,
            _ => {
                let m = cache.get(bytes)?;
                let s = match models.iter().position(|x| Arc::ptr_eq(x, &m)) {
                    Some(p) => p as u32,
                    None => {
                        models.push(m);
                        (models.len() - 1) as u32
                    }
                };
                last = Some((bytes, s));
                s
            }
        };
        per_row.push(Some(slot));
    }
    Ok(simplify(models, per_row))
}

fn simplify(models: Vec<Arc<Model>>, per_row: Vec<Option<u32>>) -> ResolvedModels {
    // One model for every row, or no model at all: no per-row grouping needed.
    let uniform = models.is_empty() || (models.len() == 1 && per_row.iter().all(|s| *s == Some(0)));
    ResolvedModels {
        models,
        per_row: (!uniform).then_some(per_row),
    }
}

/// What a scoring function computes per row group.
pub trait BatchScorer {
    type Output;
    fn score(&self, model: &Model, features: &[ArrayRef]) -> Result<Self::Output>;
    fn nulls(&self, len: usize) -> Result<Self::Output>;
    /// Scatters group outputs back into row order.
    fn scatter(&self, len: usize, parts: Vec<(Vec<u32>, Self::Output)>) -> Result<Self::Output>;
}

/// Scores every row with its model.
pub fn score_rows<S: BatchScorer>(
    scorer: &S,
    resolved: &ResolvedModels,
    features: &[ArrayRef],
    len: usize,
) -> Result<S::Output> {
    match &resolved.per_row {
        None => match resolved.models.first() {
            Some(m) => scorer.score(m, features),
            None => scorer.nulls(len),
        },
        Some(per_row) => {
            let mut groups: Vec<Vec<u32>> = vec![Vec::new(); resolved.models.len()];
            let mut null_rows = Vec::new();
            for (i, s) in per_row.iter().enumerate() {
                match s {
                    Some(s) => groups[*s as usize].push(i as u32),
                    None => null_rows.push(i as u32),
                }
            }
            let mut parts = Vec::new();
            for (m, rows) in resolved.models.iter().zip(groups) {
                if rows.is_empty() {
                    continue;
                }
                // A segment's rows arrive together (nomaly-physical, segment_fit_score.rs): a slice, not a copy.
                let (first, last) = (rows[0] as usize, rows[rows.len() - 1] as usize);
                let taken: Vec<ArrayRef> = if last - first + 1 == rows.len() {
                    features
                        .iter()
                        .map(|f| f.slice(first, rows.len()))
                        .collect()
                } else {
                    let idx = UInt32Array::from(rows.clone());
                    features
                        .iter()
                        .map(|f| take(f.as_ref(), &idx, None))
                        .collect::<std::result::Result<_, _>>()?
                };
                parts.push((rows, scorer.score(m, &taken)?));
            }
            if !null_rows.is_empty() {
                let n = null_rows.len();
                parts.push((null_rows, scorer.nulls(n)?));
            }
            scorer.scatter(len, parts)
        }
    }
}

/// Scatter helper for `Float64Array` outputs.
pub fn scatter_f64(len: usize, parts: &[(Vec<u32>, &Float64Array)]) -> Float64Array {
    let mut out: Vec<Option<f64>> = vec![None; len];
    for (rows, arr) in parts {
        for (k, &r) in rows.iter().enumerate() {
            out[r as usize] = arr.is_valid(k).then(|| arr.value(k));
        }
    }
    Float64Array::from(out)
}

/// Scatter helper for `BooleanArray` outputs.
pub fn scatter_bool(len: usize, parts: &[(Vec<u32>, &BooleanArray)]) -> BooleanArray {
    let mut out: Vec<Option<bool>> = vec![None; len];
    for (rows, arr) in parts {
        for (k, &r) in rows.iter().enumerate() {
            out[r as usize] = arr.is_valid(k).then(|| arr.value(k));
        }
    }
    BooleanArray::from(out)
}

/// Converts feature arguments to arrays of the batch length.
pub fn feature_arrays(args: &[ColumnarValue], len: usize) -> Result<Vec<ArrayRef>> {
    args.iter().map(|a| a.to_array(len)).collect()
}

/// What distinguishes the scalar functions of `(model, feature, ...)` — `anomaly_score`,
/// `is_anomaly`, `anomaly_detect`, `anomaly_explain` — from one another; [`ModelScoringUdf`] is the
/// rest (argument checks, model resolution, per-model grouping).
pub trait ModelFunction: BatchScorer + Default + std::fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    fn output_type() -> DataType;
    fn doc() -> &'static Documentation;
    fn into_array(out: Self::Output) -> Result<ArrayRef>;
}

/// A scalar UDF scoring rows with the model in its first argument.
#[derive(Debug)]
pub struct ModelScoringUdf<F: ModelFunction> {
    signature: Signature,
    cache: ModelCache,
    function: F,
}

impl<F: ModelFunction> Default for ModelScoringUdf<F> {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            cache: ModelCache::default(),
            function: F::default(),
        }
    }
}

impl<F: ModelFunction> PartialEq for ModelScoringUdf<F> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}
impl<F: ModelFunction> Eq for ModelScoringUdf<F> {}
impl<F: ModelFunction> std::hash::Hash for ModelScoringUdf<F> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        F::NAME.hash(state);
        self.signature.hash(state)
    }
}

impl<F: ModelFunction> ScalarUDFImpl for ModelScoringUdf<F> {
    fn name(&self) -> &str {
        F::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_model_args(F::NAME, arg_types)?;
        Ok(F::output_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let resolved = resolve_models(&args.args[0], &self.cache)?;
        let features = feature_arrays(&args.args[1..], args.number_rows)?;
        let out = score_rows(&self.function, &resolved, &features, args.number_rows)?;
        Ok(ColumnarValue::Array(F::into_array(out)?))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(F::doc())
    }
}
