//! `anomaly_score_zscore(v)`, `anomaly_score_mad(v)`, `anomaly_score_iqr(v [, k])` window functions:
//! the score of the current row against the values in its window frame (GreptimeDB-compatible).
//!
//! - zscore: |x - mean| / population std of the frame (needs ≥ 2 valid values);
//! - mad: |x - median| / (1.4826 · MAD) of the frame (≥ 3 values);
//! - iqr: distance outside the fences [Q1 - k·IQR, Q3 + k·IQR] in IQR units, 0 inside (≥ 3 values,
//!   k defaults to 1.5; quartiles interpolated linearly, as NumPy).
//!
//! NULL/NaN/±Inf values are ignored in the frame and score NULL; too few valid values score NULL;
//! a zero spread scores 0 at the centre (inside the fences) and +Infinity elsewhere. For whole-table
//! detection use `detect_anomalies`, which scales; these functions compute each distinct frame
//! (O(frame) per row; rows sharing a frame, as with `OVER (PARTITION BY k)`, share the work).

use crate::docs::DOC_SECTION_ANOMALY;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    Documentation, PartitionEvaluator, Signature, Volatility, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;
use nomaly_detectors::algorithms::moments::{distance_outside, scaled_distance, squares_scale};
use nomaly_detectors::quantile::quantile_linear;
use nomaly_detectors::series::rolling::median_and_mad;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameScore {
    ZScore,
    Mad,
    Iqr,
}

impl FrameScore {
    fn name(self) -> &'static str {
        match self {
            FrameScore::ZScore => "anomaly_score_zscore",
            FrameScore::Mad => "anomaly_score_mad",
            FrameScore::Iqr => "anomaly_score_iqr",
        }
    }
    fn min_samples(self) -> usize {
        match self {
            FrameScore::ZScore => 2,
            FrameScore::Mad | FrameScore::Iqr => 3,
        }
    }
}

static DOCS: LazyLock<[Documentation; 3]> = LazyLock::new(|| {
    let make = |desc: &str, syntax: &str, example: &str| {
        Documentation::builder(DOC_SECTION_ANOMALY, desc, syntax)
            .with_argument(
                "value",
                "Numeric expression; NULL/NaN/±Inf are ignored in the frame and score NULL.",
            )
            .with_sql_example(example)
            .build()
    };
    [
        make(
            "Z-score of the current row against its window frame: |x - mean| / population std (NULL below 2 valid values).",
            "anomaly_score_zscore(value) OVER (...)",
            "```sql\nSELECT ts, anomaly_score_zscore(v) OVER (ORDER BY ts ROWS BETWEEN 100 PRECEDING AND CURRENT ROW) FROM s;\n```",
        ),
        make(
            "Robust z-score against the frame: |x - median| / (1.4826 * MAD) (NULL below 3 valid values).",
            "anomaly_score_mad(value) OVER (...)",
            "```sql\nSELECT ts, anomaly_score_mad(v) OVER (ORDER BY ts ROWS BETWEEN 50 PRECEDING AND 50 FOLLOWING) FROM s;\n```",
        ),
        make(
            "Distance outside the Tukey fences [Q1 - k*IQR, Q3 + k*IQR] of the frame, in IQR units (0 inside; k defaults to 1.5).",
            "anomaly_score_iqr(value [, k]) OVER (...)",
            "```sql\nSELECT ts, anomaly_score_iqr(v, 3.0) OVER (ORDER BY ts ROWS BETWEEN 100 PRECEDING AND CURRENT ROW) FROM s;\n```",
        ),
    ]
});

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AnomalyScoreWindow {
    kind: FrameScore,
    signature: Signature,
}

impl AnomalyScoreWindow {
    pub fn new(kind: FrameScore) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for AnomalyScoreWindow {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Checked in `field`, where the message reaches the user unwrapped.
        Ok(arg_types
            .iter()
            .map(|t| {
                if t.is_numeric() || *t == DataType::Null {
                    DataType::Float64
                } else {
                    t.clone()
                }
            })
            .collect())
    }
    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let arg_types: Vec<DataType> = field_args
            .input_fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let max_args = if self.kind == FrameScore::Iqr { 2 } else { 1 };
        if arg_types.is_empty() || arg_types.len() > max_args {
            return plan_err!(
                "{} takes {}; got {} argument(s)",
                self.name(),
                if max_args == 2 {
                    "(value [, k])"
                } else {
                    "(value)"
                },
                arg_types.len()
            );
        }
        for (i, t) in arg_types.iter().enumerate() {
            if !(t.is_numeric() || *t == DataType::Null) {
                return plan_err!(
                    "{}: argument {} has type {t}, but must be numeric",
                    self.name(),
                    i + 1
                );
            }
        }
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }
    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let mut k = 1.5;
        if let Some(e) = args.input_exprs().get(1) {
            match e.downcast_ref::<Literal>().map(|l| l.value()) {
                Some(ScalarValue::Float64(Some(v))) if v.is_finite() && *v >= 0.0 => k = *v,
                _ => {
                    return exec_err!(
                        "anomaly_score_iqr: k must be a non-negative numeric literal"
                    );
                }
            }
        }
        Ok(Box::new(FrameEvaluator {
            kind: self.kind,
            k,
            current_row: 0,
            values: None,
            last_frame: None,
        }))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS[self.kind as usize])
    }
}

#[derive(Debug)]
struct FrameEvaluator {
    kind: FrameScore,
    k: f64,
    /// evaluate() is called once per row, in order: this is the row being scored.
    current_row: usize,
    values: Option<(usize, Vec<Option<f64>>)>,
    /// The last frame and its fence, for rows that share a frame.
    last_frame: Option<(Range<usize>, Option<Fence>)>,
}

/// What a row is scored against: its distance outside [lo, hi] in units of `spread`, all computed
/// on the frame's values times `factor` (a power of two; see [`FrameScore::fence`]).
#[derive(Debug, Clone, Copy)]
struct Fence {
    factor: f64,
    lo: f64,
    hi: f64,
    spread: f64,
}

impl FrameScore {
    /// The fence of a frame's valid values; None below the minimum sample count.
    fn fence(self, mut frame: Vec<f64>, k: f64) -> Option<Fence> {
        if frame.len() < self.min_samples() {
            return None;
        }
        // Squared deviations overflow from about 1e154 and vanish below 1e-162: such frames are
        // scored on their values times 2^-+600 (exact; ordinary frames keep factor 1 and their bits).
        let largest = frame.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let factor = 2f64.powi(-squares_scale(largest));
        if factor != 1.0 {
            frame.iter_mut().for_each(|v| *v *= factor);
        }
        let fence = match self {
            FrameScore::ZScore => {
                let n = frame.len() as f64;
                let mean = frame.iter().sum::<f64>() / n;
                let var = frame.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                Fence {
                    factor,
                    lo: mean,
                    hi: mean,
                    spread: var.sqrt(),
                }
            }
            FrameScore::Mad => {
                frame.sort_by(f64::total_cmp);
                let (med, mad) = median_and_mad(&frame);
                Fence {
                    factor,
                    lo: med,
                    hi: med,
                    spread: 1.4826 * mad,
                }
            }
            FrameScore::Iqr => {
                frame.sort_by(f64::total_cmp);
                let wv: Vec<(f64, u64)> = frame.iter().map(|&v| (v, 1)).collect();
                let q1 = quantile_linear(&wv, 0.25);
                let q3 = quantile_linear(&wv, 0.75);
                let iqr = q3 - q1;
                Fence {
                    factor,
                    lo: q1 - k * iqr,
                    hi: q3 + k * iqr,
                    spread: iqr,
                }
            }
        };
        Some(fence)
    }
}

impl PartitionEvaluator for FrameEvaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let array = &values[0];
        // Convert the partition once, not per row.
        let stale = self
            .values
            .as_ref()
            .is_none_or(|(len, _)| *len != array.len());
        if stale {
            let f = cast(array, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            let v = (0..f.len())
                .map(|i| (f.is_valid(i) && f.value(i).is_finite()).then(|| f.value(i)))
                .collect();
            self.values = Some((array.len(), v));
            self.last_frame = None;
        }
        let (_, vals) = self.values.as_ref().expect("set above");
        let row = self.current_row;
        self.current_row += 1;
        let Some(x) = vals.get(row).copied().flatten() else {
            return Ok(ScalarValue::Float64(None));
        };
        // Rows whose frame is the previous row's (OVER () or a whole-partition frame) reuse its
        // statistics: recomputing them made such a window O(rows²).
        let fence = match &self.last_frame {
            Some((r, fence)) if r == range => *fence,
            _ => {
                let frame: Vec<f64> = vals[range.clone()].iter().flatten().copied().collect();
                let fence = self.kind.fence(frame, self.k);
                self.last_frame = Some((range.clone(), fence));
                fence
            }
        };
        let Some(fence) = fence else {
            return Ok(ScalarValue::Float64(None));
        };
        let score = scaled_distance(
            distance_outside(x * fence.factor, fence.lo, fence.hi),
            fence.spread,
        );
        Ok(ScalarValue::Float64(Some(score)))
    }
}
