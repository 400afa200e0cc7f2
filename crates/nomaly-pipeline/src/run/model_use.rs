//! A run's model when it is not simply fitted on the detect input: fitted on a `train` query
//! (and registered when the run succeeds), or read from the registry; and the drift of the run's
//! scores from the model's training scores ([`crate::models`]).

use super::detect_plan::score_frame;
use super::fit::{FitRetry, FittedModels, fit_models, register_models};
use super::{RunScope, classify};
use crate::compile::{Detect, ModelSource};
use crate::error::{PipelineError, Result};
use crate::models::{ModelVersion, Registry, psi};
use crate::report::{ModelReport, RunReport};
use crate::run_dir::RunDir;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::SessionContext;

/// Deciles: the inner edges of the training scores' distribution.
const QUANTILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// `input` with no rows: what `validate`, `explain` and dry runs plan the detect step over.
pub(crate) fn zero_rows(input: &str) -> String {
    format!("(SELECT * FROM {input} LIMIT 0)")
}

fn is_zero_rows(input: &str) -> bool {
    input.starts_with("(SELECT * FROM ") && input.ends_with(" LIMIT 0)")
}

/// The registry of a pipeline's runs.
pub(crate) fn registry(scope: &RunScope<'_>) -> Registry {
    Registry::beside(&scope.p.file.base_dir())
}

/// Fits or loads the model(s) for `input` as `d.model` says, registering them as the models
/// table; a model not fitted on the input leaves the input's row count to a count.
pub(crate) async fn fit_or_load(
    scope: &RunScope<'_>,
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
    reads: &str,
    retry: &FitRetry,
    report: &mut RunReport,
) -> Result<FittedModels> {
    let fitted = match &d.model {
        ModelSource::Input => return fit_models(ctx, d, input, reads, retry, report).await,
        ModelSource::Train { sql, register } => {
            // A plan over no rows (validate, explain, a dry run) trains on none either.
            let mut train = format!("({sql}) AS __nomaly_train");
            if is_zero_rows(input) {
                train = zero_rows(&train);
            }
            let fitted = fit_models(ctx, d, &train, "the train query", retry, report).await?;
            let (score_edges, score_shares) = match is_zero_rows(input) {
                true => (Vec::new(), Vec::new()),
                false => score_distribution(ctx, d, &train).await?,
            };
            report.model = Some(ModelReport {
                source: "train".into(),
                name: register.clone(),
                version: None,
                training_rows: fitted.rows,
                score_edges,
                score_shares,
                drift_psi: None,
                drift_above: d.drift_above,
            });
            fitted
        }
        ModelSource::Registered { name, version } => {
            let (meta, schema, batches) = registry(scope).get(name, *version)?;
            check_compatible(d, &meta)?;
            register_models(ctx, schema.clone(), batches.clone())
                .map_err(|e| classify(d.place.clone(), e))?;
            report.model = Some(ModelReport {
                source: "registry".into(),
                name: Some(meta.name.clone()),
                version: Some(meta.version),
                training_rows: meta.training_rows,
                score_edges: meta.score_edges.clone(),
                score_shares: meta.score_shares.clone(),
                drift_psi: None,
                drift_above: d.drift_above,
            });
            FittedModels {
                rows: 0,
                skipped: 0,
                models: meta.models,
                schema,
                batches,
            }
        }
    };
    // The input's rows, which the fit did not read.
    let count = ctx
        .sql(&format!("SELECT count(*) FROM {input}"))
        .await
        .map_err(|e| classify(d.place.clone(), e))?
        .collect()
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    let rows = count
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0) as u64)
        .unwrap_or(0);
    Ok(FittedModels {
        rows,
        skipped: 0,
        ..fitted
    })
}

/// A registered version scores only a pipeline whose detector it was fitted as.
fn check_compatible(d: &Detect, meta: &ModelVersion) -> Result<()> {
    let mut differ = Vec::new();
    if meta.algorithm != d.algorithm.name() {
        differ.push(format!(
            "algorithm {} (file: {})",
            meta.algorithm,
            d.algorithm.name()
        ));
    }
    if meta.columns != d.columns {
        differ.push(format!(
            "columns {:?} (file: {:?})",
            meta.columns, d.columns
        ));
    }
    if meta.partition_by != d.partition_by {
        differ.push(format!(
            "partition_by {:?} (file: {:?})",
            meta.partition_by, d.partition_by
        ));
    }
    if meta.options != d.options {
        differ.push(format!(
            "options '{}' (file: '{}')",
            meta.options, d.options
        ));
    }
    if differ.is_empty() {
        return Ok(());
    }
    Err(PipelineError::invalid(
        d.place.clone(),
        format!(
            "model {} v{} was trained with {}; make [detect] match it, or train a new version",
            meta.name,
            meta.version,
            differ.join(", ")
        ),
    ))
}

/// The deciles of the scores of `input` under the registered models table, and the share of
/// scores in each bin they make.
async fn score_distribution(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let place = || format!("{} (the train query's scores)", d.place);
    let scored = score_frame(ctx, d, input)
        .await
        .map_err(|e| classify(place(), e))?;
    distribution_of(ctx, scored, place).await
}

/// The deciles of `scored`'s `anomaly_score` column, and the share of scores in each bin they
/// make (what a registered model keeps so runs that use it can measure drift).
pub(crate) async fn distribution_of(
    ctx: &SessionContext,
    scored: datafusion::dataframe::DataFrame,
    place: impl Fn() -> String + Copy,
) -> Result<(Vec<f64>, Vec<f64>)> {
    ctx.register_table("__nomaly_train_scores", scored.into_view())
        .map_err(|e| classify(place(), e))?;
    let quantiles: Vec<String> = QUANTILES
        .iter()
        .map(|q| format!("approx_percentile_cont({q}) WITHIN GROUP (ORDER BY anomaly_score)"))
        .collect();
    let sql = format!(
        "SELECT {} FROM __nomaly_train_scores WHERE anomaly_score IS NOT NULL",
        quantiles.join(", ")
    );
    let batches = collect(ctx, &sql, place).await?;
    let mut edges: Vec<f64> = Vec::new();
    if let Some(b) = batches.first() {
        for i in 0..b.num_columns() {
            let col = b.column(i).as_primitive::<Float64Type>();
            if !col.is_null(0) && edges.last().is_none_or(|&e| col.value(0) > e) {
                edges.push(col.value(0));
            }
        }
    }
    let shares = shares_of(ctx, "__nomaly_train_scores", &edges, place).await?;
    let _ = ctx.deregister_table("__nomaly_train_scores");
    Ok((edges, shares))
}

async fn collect(
    ctx: &SessionContext,
    sql: &str,
    place: impl Fn() -> String,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    ctx.sql(sql)
        .await
        .map_err(|e| classify(place(), e))?
        .collect()
        .await
        .map_err(|e| classify(place(), e))
}

/// The share of `table`'s scores in each bin of `edges` (edges.len() + 1 bins).
async fn shares_of(
    ctx: &SessionContext,
    table: &str,
    edges: &[f64],
    place: impl Fn() -> String,
) -> Result<Vec<f64>> {
    let mut case = String::from("CASE");
    for (i, e) in edges.iter().enumerate() {
        case.push_str(&format!(" WHEN anomaly_score < {e:e} THEN {i}"));
    }
    case.push_str(&format!(" ELSE {} END", edges.len()));
    let sql = format!(
        "SELECT {case} AS bin, count(*) AS n FROM {table} WHERE anomaly_score IS NOT NULL \
         GROUP BY 1"
    );
    let mut counts = vec![0u64; edges.len() + 1];
    for b in collect(ctx, &sql, &place).await? {
        let bins = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            counts[bins.value(i) as usize] += n.value(i) as u64;
        }
    }
    let total: u64 = counts.iter().sum();
    Ok(counts
        .iter()
        .map(|&c| c as f64 / total.max(1) as f64)
        .collect())
}

/// The drift of the run's scores (the first sink's, as written, registered as `output`) from
/// its model's training scores; a warning above the threshold.
pub(crate) async fn measure_drift(ctx: &SessionContext, report: &mut RunReport) -> Result<()> {
    let Some(model) = &report.model else {
        return Ok(());
    };
    if model.score_shares.is_empty() {
        return Ok(());
    }
    let shares = shares_of(ctx, "output", &model.score_edges, || {
        "drift (the run's scores)".to_string()
    })
    .await?;
    let index = psi(&model.score_shares, &shares);
    let (above, name) = (model.drift_above, model.name.clone().unwrap_or_default());
    if let Some(m) = report.model.as_mut() {
        m.drift_psi = Some(index);
    }
    if index > above {
        report.warnings.push(format!(
            "the scores drifted from model {name}'s training scores: population-stability \
             index {index:.3} is above {above}"
        ));
    }
    Ok(())
}

/// Registers a succeeded training run's model as the next version of its name.
pub(crate) fn register_trained(
    scope: &RunScope<'_>,
    run_dir: &RunDir,
    report: &mut RunReport,
) -> Result<()> {
    let p = scope.p;
    let (Some(d), Some(model)) = (&p.detect, report.model.as_mut()) else {
        return Ok(());
    };
    let (ModelSource::Train { .. }, Some(name)) = (&d.model, model.name.clone()) else {
        return Ok(());
    };
    let meta = ModelVersion {
        name,
        version: 0,
        algorithm: d.algorithm.name().to_string(),
        options: d.options.clone(),
        columns: d.columns.clone(),
        partition_by: d.partition_by.clone(),
        training_rows: model.training_rows,
        models: report.models,
        interval_start_ms: p.file.context.start_ms,
        interval_end_ms: p.file.context.end_ms,
        pipeline: p.name.clone(),
        pipeline_file: p.file.path.display().to_string(),
        run_started_at_unix_ms: report.started_at_unix_ms as u64,
        created_at_unix_ms: 0,
        size_bytes: 0,
        score_edges: model.score_edges.clone(),
        score_shares: model.score_shares.clone(),
    };
    let bytes = run_dir.read_models_bytes()?;
    let registered = registry(scope).register(meta, &bytes)?;
    model.version = Some(registered.version);
    Ok(())
}
