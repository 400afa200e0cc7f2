//! Carrying out the model statements against a registry, and resolving model names from it.

use super::ModelStatement;
use crate::error::{PipelineError, Result};
use crate::models::{ModelVersion, Registry, check_name};
use crate::run_dir::{models_ipc, now_ms};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use nomaly_detectors::{Algorithm, DetectorParams, Model};
use nomaly_udfs::fit_score_plan::{Detector, FitScorePlan};
use nomaly_udfs::model_names::ModelResolver;
use std::sync::Arc;

/// Model names resolved from a registry directory.
#[derive(Debug, Clone)]
pub struct RegistryResolver(pub Registry);

impl ModelResolver for RegistryResolver {
    fn model_bytes(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> std::result::Result<Vec<u8>, String> {
        check_name(name)?;
        let (meta, _, batches) = self.0.get(name, version).map_err(|e| e.to_string())?;
        if !meta.partition_by.is_empty() {
            return Err(format!(
                "model '{name}' v{} has one model per segment (partition_by {}); score it with a \
                 pipeline ([detect] model = \"{name}\")",
                meta.version,
                meta.partition_by.join(", ")
            ));
        }
        model_of(&batches).map(|(bytes, _)| bytes).ok_or_else(|| {
            format!(
                "model '{name}' v{}: its models table holds no model",
                meta.version
            )
        })
    }
}

/// Makes model names in `ctx`'s queries resolve from `registry`.
pub fn attach_registry(ctx: &SessionContext, registry: Registry) {
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .extensions
        .insert(nomaly_udfs::model_names::ModelCatalog {
            resolver: Some(Arc::new(RegistryResolver(registry))),
        });
}

/// The one model of an unsegmented models table, and the model it decodes to.
fn model_of(batches: &[RecordBatch]) -> Option<(Vec<u8>, Model)> {
    let column = batches
        .iter()
        .find(|b| b.num_rows() == 1)?
        .column_by_name(&nomaly_udfs::fit_score_plan::model_column(0))?
        .clone();
    let binary = cast(&column, &DataType::Binary).ok()?;
    let values = binary.as_binary::<i32>();
    if values.is_null(0) {
        return None;
    }
    let bytes = values.value(0).to_vec();
    let model = Model::from_bytes(&bytes).ok()?;
    Some((bytes, model))
}

/// Carries out `statement`; returns the table it prints.
pub async fn execute(
    ctx: &SessionContext,
    registry: &Registry,
    statement: &ModelStatement,
) -> Result<RecordBatch> {
    match statement {
        ModelStatement::Show => Ok(show(&registry.list()?)),
        ModelStatement::Drop { name, if_exists } => {
            let removed = registry.remove(name, None)?;
            if removed == 0 && !if_exists {
                return Err(PipelineError::invalid(
                    format!("DROP MODEL {name}"),
                    format!(
                        "no model '{name}' in {}; DROP MODEL IF EXISTS ignores a missing one",
                        registry.root.display()
                    ),
                ));
            }
            Ok(table(vec![
                ("model", Arc::new(StringArray::from(vec![name.as_str()]))),
                (
                    "versions_dropped",
                    Arc::new(UInt64Array::from(vec![removed as u64])),
                ),
            ]))
        }
        ModelStatement::Create { .. } => create(ctx, registry, statement).await,
    }
}

fn table(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|c| c.1).collect())
        .expect("columns of one length")
}

fn show(versions: &[ModelVersion]) -> RecordBatch {
    let strings = |f: &dyn Fn(&ModelVersion) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(versions.iter().map(f)))
    };
    table(vec![
        ("model", strings(&|m| m.name.clone())),
        (
            "version",
            Arc::new(UInt32Array::from_iter_values(
                versions.iter().map(|m| m.version),
            )),
        ),
        ("algorithm", strings(&|m| m.algorithm.clone())),
        ("options", strings(&|m| m.options.clone())),
        ("features", strings(&|m| m.columns.join(", "))),
        ("partition_by", strings(&|m| m.partition_by.join(", "))),
        (
            "training_rows",
            Arc::new(UInt64Array::from_iter_values(
                versions.iter().map(|m| m.training_rows),
            )),
        ),
        (
            "size_bytes",
            Arc::new(UInt64Array::from_iter_values(
                versions.iter().map(|m| m.size_bytes),
            )),
        ),
        ("created_by", strings(&|m| m.pipeline.clone())),
    ])
}

async fn create(
    ctx: &SessionContext,
    registry: &Registry,
    statement: &ModelStatement,
) -> Result<RecordBatch> {
    let ModelStatement::Create {
        name,
        or_replace,
        algorithm,
        options,
        query,
    } = statement
    else {
        unreachable!("called for CREATE MODEL")
    };
    let place = format!("CREATE MODEL {name}");
    let invalid = |m: String| PipelineError::invalid(place.clone(), m);
    let engine = |e: datafusion::error::DataFusionError| {
        PipelineError::engine(place.clone(), nomaly_engine::EngineError::DataFusion(e))
    };
    check_name(name).map_err(invalid)?;
    let alg = Algorithm::parse(algorithm).map_err(|e| invalid(e.to_string()))?;
    DetectorParams::parse(alg, options).map_err(|e| invalid(e.to_string()))?;
    let existing = registry.versions(name)?;
    if let (Some(last), false) = (existing.last(), or_replace) {
        return Err(invalid(format!(
            "model '{name}' exists (latest v{}); CREATE OR REPLACE MODEL registers v{} beside it, \
             DROP MODEL removes every version",
            last.version,
            last.version + 1
        )));
    }
    let input = training_plan(ctx, query).await.map_err(engine)?;
    let features: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let columns: Vec<String> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let batches = fit(ctx, &input, alg, options, &features)
        .await
        .map_err(engine)?;
    let Some((bytes, model)) = model_of(&batches) else {
        return Err(invalid("the fit returned no model".into()));
    };
    if model.training_rows == 0 {
        return Err(invalid(format!(
            "the training query gave no row with every feature finite ({} skipped); nothing to fit",
            model.skipped_rows
        )));
    }
    // The training scores' deciles, so a pipeline scoring with this model measures drift.
    let score = ctx.udf("anomaly_score").map_err(engine)?;
    let mut score_args = vec![lit(ScalarValue::Binary(Some(bytes.clone())))];
    score_args.extend(features);
    let scored = LogicalPlanBuilder::from(input)
        .project(vec![score.call(score_args).alias("anomaly_score")])
        .and_then(|b| b.build())
        .map_err(engine)?;
    let what = || "CREATE MODEL (the training query's scores)".to_string();
    let (score_edges, score_shares) =
        crate::run::distribution_of(ctx, DataFrame::new(ctx.state(), scored), what).await?;
    // The model as plain BINARY, whichever engine fitted it (a local plan keeps fit_detector's
    // dictionary, a cluster decodes it), so the registered table is the same bytes.
    let schema = Arc::new(Schema::new(vec![Field::new(
        nomaly_udfs::fit_score_plan::model_column(0),
        DataType::Binary,
        true,
    )]));
    let binary: ArrayRef = Arc::new(BinaryArray::from(vec![Some(bytes.as_slice())]));
    let ipc = RecordBatch::try_new(schema.clone(), vec![binary])
        .and_then(|b| models_ipc(&schema, &[b]))
        .map_err(|e| invalid(e.to_string()))?;
    let meta = ModelVersion {
        name: name.clone(),
        version: 0,
        algorithm: alg.name().to_string(),
        options: options.clone(),
        columns,
        partition_by: vec![],
        training_rows: model.training_rows,
        models: 1,
        interval_start_ms: 0,
        interval_end_ms: 0,
        pipeline: "CREATE MODEL".into(),
        pipeline_file: String::new(),
        run_started_at_unix_ms: now_ms(),
        created_at_unix_ms: 0,
        size_bytes: 0,
        score_edges,
        score_shares,
    };
    let registered = registry.register(meta, &ipc)?;
    Ok(created(&registered, model.threshold))
}

/// The models table of `input` fitted by `alg` with `options` over `features`.
async fn fit(
    ctx: &SessionContext,
    input: &LogicalPlan,
    alg: Algorithm,
    options: &str,
    features: &[Expr],
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let mut fit_args = vec![lit(alg.name())];
    fit_args.extend(features.iter().cloned());
    if !options.trim().is_empty() {
        fit_args.push(lit(options.to_string()));
    }
    let detector = Detector {
        id: 0,
        fit_args,
        features: features.to_vec(),
        keys: vec![],
    };
    let plan = FitScorePlan::default().models(input.clone(), &[detector])?;
    DataFrame::new(ctx.state(), plan).collect().await
}

/// What CREATE MODEL prints.
fn created(m: &ModelVersion, threshold: f64) -> RecordBatch {
    table(vec![
        ("model", Arc::new(StringArray::from(vec![m.name.as_str()]))),
        ("version", Arc::new(UInt32Array::from(vec![m.version]))),
        (
            "algorithm",
            Arc::new(StringArray::from(vec![m.algorithm.as_str()])),
        ),
        (
            "training_rows",
            Arc::new(UInt64Array::from(vec![m.training_rows])),
        ),
        ("threshold", Arc::new(Float64Array::from(vec![threshold]))),
        (
            "size_bytes",
            Arc::new(UInt64Array::from(vec![m.size_bytes])),
        ),
    ])
}

/// The training query's plan; anything but one query is refused.
async fn training_plan(
    ctx: &SessionContext,
    query: &str,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    let mut statements = DFParser::parse_sql(query)?;
    let one = statements.len() == 1;
    match statements.pop_front() {
        Some(DfStatement::Statement(s)) if one && matches!(*s, SqlStatement::Query(_)) => {
            ctx.state()
                .statement_to_plan(DfStatement::Statement(s))
                .await
        }
        _ => datafusion::common::plan_err!(
            "the training query after AS must be one query (SELECT ..., VALUES or WITH ...)"
        ),
    }
}
