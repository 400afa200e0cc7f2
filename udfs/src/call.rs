//! Argument conventions shared by the detector functions.
//!
//! `f(algorithm, feature, ... [, options])`: `algorithm` is a string literal, the features are
//! numeric expressions, and an optional trailing string literal holds `'key=value, ...'` options.
//! Scoring functions take `f(model, feature, ...)`. Checks here run at planning time, so a typo is a
//! planning error naming the argument and listing what is valid, never a failed job an hour in.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::logical_expr::Expr;
use nomaly_detectors::features::is_categorical;
use nomaly_detectors::{Algorithm, DetectorParams, is_numeric};

/// True for string types (the algorithm and options arguments).
pub fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// True for the types a model argument may have.
pub fn is_model_type(dt: &DataType) -> bool {
    match dt {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => true,
        DataType::Dictionary(_, v) => is_model_type(v),
        _ => false,
    }
}

/// A string type: a model argument that names a model ([`crate::model_names`]).
pub fn is_model_name_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Coerces feature types: numeric types pass through (the detectors read every numeric type
/// natively), decimals become Float64, anything else is a planning error naming the argument.
pub fn coerce_feature(function: &str, position: usize, dt: &DataType) -> Result<DataType> {
    if is_numeric(dt) || is_categorical(dt) {
        return Ok(dt.clone());
    }
    match dt {
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _)
        | DataType::Boolean => Ok(DataType::Float64),
        DataType::Dictionary(_, v) => coerce_feature(function, position, v),
        other => plan_err!(
            "{function}: argument {position} has type {other}, but features must be numeric (or \
             text, for hbos, ecod, copod, iforest and eif); cast it (CAST(col AS DOUBLE)) or pick another column"
        ),
    }
}

/// Coercion never fails: DataFusion would bury our message inside its own "no function matches"
/// text. Decimals and booleans become Float64, everything else passes through, and the
/// `check_*` functions report wrong types from `return_type`, where the message reaches the user
/// unchanged.
pub fn lenient_coercion(arg_types: &[DataType]) -> Vec<DataType> {
    arg_types
        .iter()
        .map(|dt| match dt {
            DataType::Decimal32(_, _)
            | DataType::Decimal64(_, _)
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
            | DataType::Boolean => DataType::Float64,
            other => other.clone(),
        })
        .collect()
}

/// Checks the types of `f(algorithm, features..., [options])`.
pub fn coerce_detector_args(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    if arg_types.len() < 2 {
        return plan_err!(
            "{function} takes (algorithm, feature [, feature ...] [, options]); got {} argument(s). \
             Example: {function}('iforest', amount, latency_ms, 'contamination=0.05')",
            arg_types.len()
        );
    }
    if !is_string(&arg_types[0]) {
        return plan_err!(
            "{function}: argument 1 must be the algorithm name as a string literal (one of {}), got type {}",
            Algorithm::valid_names(),
            arg_types[0]
        );
    }
    let mut out = vec![arg_types[0].clone()];
    let last = arg_types.len() - 1;
    for (i, dt) in arg_types.iter().enumerate().skip(1) {
        if i == last && is_string(dt) {
            // The options literal, or a text feature: told apart by `parse_detector_call`.
            out.push(dt.clone());
        } else {
            out.push(coerce_feature(function, i + 1, dt)?);
        }
    }
    Ok(out)
}

/// Checks the types of `f(model, features...)`.
pub fn coerce_model_args(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    if arg_types.len() < 2 {
        return plan_err!(
            "{function} takes (model, feature [, feature ...]); got {} argument(s). \
             The model is a fit_detector(...) result",
            arg_types.len()
        );
    }
    if !is_model_type(&arg_types[0]) && !is_model_name_type(&arg_types[0]) {
        return plan_err!(
            "{function}: argument 1 must be a model (the BINARY result of fit_detector) or a \
             model's name (a string literal), got type {}",
            arg_types[0]
        );
    }
    let mut out = vec![arg_types[0].clone()];
    for (i, dt) in arg_types.iter().enumerate().skip(1) {
        out.push(coerce_feature(function, i + 1, dt)?);
    }
    Ok(out)
}

/// A validated detector call.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorCall {
    pub params: DetectorParams,
    pub n_features: usize,
    /// Whether the last argument is the options string.
    pub has_options: bool,
}

fn literal_str(
    function: &str,
    position: usize,
    what: &str,
    v: Option<&ScalarValue>,
) -> Result<String> {
    match v.and_then(|s| s.try_as_str()) {
        Some(Some(s)) => Ok(s.to_string()),
        _ => plan_err!("{function}: argument {position} ({what}) must be a string literal"),
    }
}

/// Validates `f(algorithm, features..., [options])` given the argument types and literal values.
pub fn parse_detector_call(
    function: &str,
    arg_types: &[DataType],
    scalars: &[Option<&ScalarValue>],
) -> Result<DetectorCall> {
    coerce_detector_args(function, arg_types)?;
    let algorithm_name = literal_str(function, 1, "algorithm", scalars.first().copied().flatten())?;
    let algorithm =
        Algorithm::parse(&algorithm_name).map_err(|e| plan_datafusion_err!("{function}: {e}"))?;
    let last = arg_types.len() - 1;
    // A string literal last is the options; a text column there is a (categorical) feature.
    let options_text = scalars
        .get(last)
        .copied()
        .flatten()
        .and_then(|v| v.try_as_str())
        .flatten()
        .filter(|_| is_string(&arg_types[last]));
    let has_options = options_text.is_some();
    if has_options && last == 1 {
        return plan_err!(
            "{function}: argument 2 is a string literal, taken as the options; at least one \
             feature must come before them. Example: {function}('hbos', country, amount, 'n_bins=20')"
        );
    }
    let params = match options_text {
        Some(text) => DetectorParams::parse(algorithm, text)
            .map_err(|e| plan_datafusion_err!("{function}: {e}"))?,
        None => DetectorParams::new(algorithm),
    };
    let n_features = arg_types.len() - 1 - usize::from(has_options);
    if let Some(j) = arg_types[1..=n_features]
        .iter()
        .position(is_categorical)
        .filter(|_| !algorithm.takes_categorical())
    {
        return plan_err!(
            "{function}: argument {} has type {} (text, a categorical feature), which {} cannot \
             take: hbos, ecod, copod, iforest and eif take text columns; cast it to a number or choose one of those",
            j + 2,
            arg_types[j + 1],
            algorithm.name()
        );
    }
    Ok(DetectorCall {
        params,
        n_features,
        has_options,
    })
}

/// Same as [`parse_detector_call`] for logical expressions (used by the rewrite rule).
pub fn parse_detector_call_exprs(
    function: &str,
    args: &[Expr],
    arg_types: &[DataType],
) -> Result<DetectorCall> {
    let scalars: Vec<Option<&ScalarValue>> = args
        .iter()
        .map(|e| match e {
            Expr::Literal(v, _) => Some(v),
            _ => None,
        })
        .collect();
    parse_detector_call(function, arg_types, &scalars)
}
