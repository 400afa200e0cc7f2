//! The time-series window functions — each sees a whole series (the rows of one `PARTITION BY`
//! group, in `ORDER BY` order) and scores every row of it:
//!
//! - `anomaly_score_seasonal(v [, 'options']) OVER (PARTITION BY s ORDER BY ts)`: robust z of the
//!   STL residual, by a given or detected period;
//! - `anomaly_score_rolling(v [, 'window=100, warmup=100']) OVER (...)`: |x − median| /
//!   (1.4826 · MAD) of the `window` rows before, NULL during the warm-up;
//! - `is_anomaly_esd(v [, 'max_anoms=0.1, alpha=0.05 [, period=N|auto]']) OVER (...)`: the
//!   generalized ESD test's anomalies, on the values or the seasonal residual.
//!
//! The algorithms live in `nomaly_detectors::series`. An `ORDER BY` is required (checked at
//! planning, as are the options); a frame clause is ignored. Rows are assumed evenly spaced.

use crate::docs::DOC_SECTION_ANOMALY;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_datafusion_err, plan_err};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::function::{
    PartitionEvaluatorArgs, WindowFunctionSimplification, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    Documentation, Expr, PartitionEvaluator, Signature, Volatility, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;
use nomaly_detectors::series::{self, SeriesDetector, SeriesOptions};
use std::sync::{Arc, LazyLock};

fn name(d: SeriesDetector) -> &'static str {
    match d {
        SeriesDetector::Seasonal => "anomaly_score_seasonal",
        SeriesDetector::Rolling => "anomaly_score_rolling",
        SeriesDetector::Esd => "is_anomaly_esd",
    }
}

static DOCS: LazyLock<[Documentation; 3]> = LazyLock::new(|| {
    let make = |desc: &str, syntax: &str, options: &str, example: &str| {
        Documentation::builder(DOC_SECTION_ANOMALY, desc, syntax)
            .with_argument(
                "value",
                "Numeric expression; NULL/NaN/±Inf are missing: they score NULL and are skipped (filled by interpolation for the decomposition).",
            )
            .with_argument("options", options)
            .with_sql_example(example)
            .build()
    };
    [
        make(
            "Robust z-score of the residual of a robust STL decomposition of the whole series (the PARTITION BY group in ORDER BY order): |r - median(r)| / (1.4826 * MAD(r)). The period is given or detected by autocorrelation; a series without one is scored against a robust loess trend.",
            "anomaly_score_seasonal(value [, 'options']) OVER (PARTITION BY series ORDER BY ts)",
            "'period=N|auto' (default auto), 'max_period=1000', 'seasonal=7', 'trend=', 'low_pass=' (with a fixed period), 'robust=true', 'seasonal_jump=1', 'trend_jump=1', 'low_pass_jump=1', 'inner_iter=' and 'outer_iter=' (statsmodels' fit counts: 2 and 15 robust, 5 and 0 not).",
            "```sql\nSELECT device, ts, anomaly_score_seasonal(temp, 'period=24') OVER (PARTITION BY device ORDER BY ts) AS score FROM readings;\n```",
        ),
        make(
            "Each value against the median and MAD of the `window` rows before it: |x - median| / (1.4826 * MAD); NULL until `warmup` of those rows hold a value.",
            "anomaly_score_rolling(value [, 'options']) OVER (PARTITION BY series ORDER BY ts)",
            "'window=100' (rows), 'warmup=' (default: window).",
            "```sql\nSELECT ts, anomaly_score_rolling(latency_ms, 'window=60, warmup=10') OVER (PARTITION BY host ORDER BY ts) FROM requests;\n```",
        ),
        make(
            "The generalized ESD test's (Rosner) anomalies in each series: true for the values it rejects, false for the others, NULL for missing values and series under 3 values. With a period option it tests the seasonal residual (seasonal ESD).",
            "is_anomaly_esd(value [, 'options']) OVER (PARTITION BY series ORDER BY ts)",
            "'max_anoms=0.1' (largest share tested), 'alpha=0.05', 'period=N|auto' (test the STL residual), 'max_period=1000'.",
            "```sql\nSELECT day, is_anomaly_esd(orders, 'period=7') OVER (PARTITION BY shop ORDER BY day) FROM daily;\n```",
        ),
    ]
});

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SeriesWindow {
    detector: SeriesDetector,
    signature: Signature,
}

impl SeriesWindow {
    pub fn new(detector: SeriesDetector) -> Self {
        Self {
            detector,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The options of a literal second argument (none: the defaults).
    fn options(&self, literal: Option<&ScalarValue>) -> Result<SeriesOptions> {
        let text = match literal {
            None => "",
            Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)))
            | Some(ScalarValue::Utf8View(Some(s))) => s.as_str(),
            Some(_) => {
                return plan_err!(
                    "{}: the options must be a string literal such as 'period=24'",
                    self.name()
                );
            }
        };
        let short = match self.detector {
            SeriesDetector::Seasonal => "seasonal",
            SeriesDetector::Rolling => "rolling",
            SeriesDetector::Esd => "esd",
        };
        SeriesOptions::parse(self.detector, short, text)
            .map_err(|e| plan_datafusion_err!("{}: {e}", self.name()))
    }
}

impl WindowUDFImpl for SeriesWindow {
    fn name(&self) -> &str {
        name(self.detector)
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Checked in `field`, where the message reaches the user unwrapped.
        Ok(arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i == 0 && (t.is_numeric() || *t == DataType::Null) {
                    DataType::Float64
                } else {
                    t.clone()
                }
            })
            .collect())
    }
    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let types: Vec<&DataType> = field_args
            .input_fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        if types.is_empty() || types.len() > 2 {
            return plan_err!(
                "{} takes (value [, 'options']); got {} argument(s)",
                self.name(),
                types.len()
            );
        }
        if !(types[0].is_numeric() || *types[0] == DataType::Null) {
            return plan_err!(
                "{}: the value has type {}, but must be numeric",
                self.name(),
                types[0]
            );
        }
        if let Some(t) = types.get(1).filter(|t| !crate::call::is_string(t)) {
            return plan_err!(
                "{}: the options have type {t}, but must be a string literal such as 'period=24'",
                self.name()
            );
        }
        let data_type = match self.detector {
            SeriesDetector::Esd => DataType::Boolean,
            _ => DataType::Float64,
        };
        Ok(Arc::new(Field::new(field_args.name(), data_type, true)))
    }
    fn simplify(&self) -> Option<WindowFunctionSimplification> {
        // Planning-time checks: an ORDER BY, and options that parse.
        let detector = self.detector;
        Some(Box::new(move |wf: WindowFunction, _| {
            let this = SeriesWindow::new(detector);
            if wf.params.order_by.is_empty() {
                return plan_err!(
                    "{} needs the series order: write OVER (PARTITION BY <series> ORDER BY <time>)",
                    this.name()
                );
            }
            match wf.params.args.get(1) {
                None => this.options(None)?,
                Some(Expr::Literal(v, _)) => this.options(Some(v))?,
                Some(_) => {
                    return plan_err!(
                        "{}: the options must be a string literal such as 'period=24'",
                        this.name()
                    );
                }
            };
            Ok(Expr::WindowFunction(Box::new(wf)))
        }))
    }
    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let literal = match args.input_exprs().get(1) {
            None => None,
            Some(e) => match e.downcast_ref::<Literal>() {
                Some(l) => Some(l.value().clone()),
                None => {
                    return exec_err!(
                        "{}: the options must be a string literal such as 'period=24'",
                        self.name()
                    );
                }
            },
        };
        Ok(Box::new(SeriesEvaluator {
            options: self.options(literal.as_ref())?,
        }))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS[self.detector as usize])
    }
}

#[derive(Debug)]
struct SeriesEvaluator {
    options: SeriesOptions,
}

impl PartitionEvaluator for SeriesEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let f = cast(&values[0], &DataType::Float64)?;
        let f = f.as_primitive::<Float64Type>();
        let series: Vec<Option<f64>> = (0..num_rows)
            .map(|i| (f.is_valid(i) && f.value(i).is_finite()).then(|| f.value(i)))
            .collect();
        Ok(match self.options.detector {
            SeriesDetector::Esd => Arc::new(BooleanArray::from(series::esd_flags(
                &series,
                &self.options,
            ))),
            _ => Arc::new(Float64Array::from(series::series_scores(
                &series,
                &self.options,
            ))),
        })
    }
}
