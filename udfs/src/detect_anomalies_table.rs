//! `SELECT * FROM detect_anomalies('<table>', '<algorithm>', '<col, col, ...>' [, '<options>'])`: the
//! table form. Returns the table's rows plus `anomaly_score` and `is_anomaly` (and
//! `anomaly_explanation` with the option `explain=true`).
//!
//! The function builds the same fit → cross join → score plan as the rewrite rule
//! ([`crate::fit_score_plan`]) and returns it as a view, which DataFusion inlines while planning: no
//! custom table provider reaches the physical plan, so nothing needs a codec to run on Ballista. On
//! the local engine the one-pass rule fuses it, so the table is read once, and each row is scored
//! once (the score struct is split into columns in a second projection).

use crate::call::coerce_feature;
use crate::fit_score_plan::{Detector, FitScorePlan, SCORE_COLUMNS};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{
    Column, Result, ScalarValue, TableReference, plan_datafusion_err, plan_err,
};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};
use nomaly_detectors::{Algorithm, DetectorParams};
use std::sync::Arc;

pub const USAGE: &str =
    "detect_anomalies('<table>', '<algorithm>', '<column>, <column>, ...' [, '<options>'])";

#[derive(Debug, Default)]
pub struct DetectAnomaliesTable;

fn string_arg(exprs: &[Expr], i: usize, what: &str) -> Result<Option<String>> {
    match exprs.get(i) {
        None => Ok(None),
        Some(Expr::Literal(v, _)) => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Ok(Some(s.clone())),
            other => plan_err!(
                "detect_anomalies: argument {} ({what}) must be a string, got {other}. Usage: {USAGE}",
                i + 1
            ),
        },
        Some(other) => plan_err!(
            "detect_anomalies: argument {} ({what}) must be a string literal, got {other}. Usage: {USAGE}",
            i + 1
        ),
    }
}

fn resolve_table(
    session: &dyn Session,
    name: &str,
) -> Result<(TableReference, Arc<dyn TableProvider>)> {
    let reference = TableReference::parse_str(name);
    let opts = &session.config().options().catalog;
    let resolved = reference
        .clone()
        .resolve(&opts.default_catalog, &opts.default_schema);
    let catalog = session
        .catalog_list()
        .catalog(&resolved.catalog)
        .ok_or_else(|| {
            plan_datafusion_err!("detect_anomalies: catalog '{}' not found", resolved.catalog)
        })?;
    let schema = catalog.schema(&resolved.schema).ok_or_else(|| {
        plan_datafusion_err!("detect_anomalies: schema '{}' not found", resolved.schema)
    })?;
    // Schema providers answer synchronously for registered tables; the future is ready at once.
    let provider = futures::executor::block_on(schema.table(&resolved.table))?;
    match provider {
        Some(p) => Ok((reference, p)),
        None => {
            let mut names = schema.table_names();
            names.sort();
            plan_err!(
                "detect_anomalies: table '{name}' not found; tables in {}.{} are: {}",
                resolved.catalog,
                resolved.schema,
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
    }
}

impl TableFunctionImpl for DetectAnomaliesTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=4).contains(&exprs.len()) {
            return plan_err!(
                "detect_anomalies takes 3 or 4 arguments, got {}. Usage: {USAGE}",
                exprs.len()
            );
        }
        let table = string_arg(exprs, 0, "table")?.expect("checked length");
        let algorithm = string_arg(exprs, 1, "algorithm")?.expect("checked length");
        let columns = string_arg(exprs, 2, "columns")?.expect("checked length");
        let options = string_arg(exprs, 3, "options")?.unwrap_or_default();

        // `explain` is an option of the table form only; the rest go to the detector.
        let mut explain = false;
        let mut detector_options = Vec::new();
        for part in options
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match part.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("explain") => {
                    explain = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        other => {
                            return plan_err!(
                                "detect_anomalies: option 'explain' has invalid value '{other}': true or false"
                            );
                        }
                    }
                }
                _ => detector_options.push(part.to_string()),
            }
        }
        let detector_options = detector_options.join(", ");
        let alg = Algorithm::parse(&algorithm)
            .map_err(|e| plan_datafusion_err!("detect_anomalies: {e}"))?;
        DetectorParams::parse(alg, &detector_options)
            .map_err(|e| plan_datafusion_err!("detect_anomalies: {e}"))?;

        let (reference, provider) = resolve_table(args.session(), &table)?;
        let schema = provider.schema();
        let mut features = Vec::new();
        for (i, name) in columns.split(',').map(str::trim).enumerate() {
            if name.is_empty() {
                return plan_err!(
                    "detect_anomalies: the column list '{columns}' has an empty entry"
                );
            }
            let field = schema
                .fields()
                .iter()
                .find(|f| f.name() == name)
                .or_else(|| schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(name)))
                .ok_or_else(|| {
                    let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    plan_datafusion_err!(
                        "detect_anomalies: column '{name}' not found in table '{table}'; its columns are: {}",
                        available.join(", ")
                    )
                })?;
            refuse_text(field, &table, alg)?;
            coerce_feature("detect_anomalies", i + 1, field.data_type())
                .map_err(|_| plan_datafusion_err!(
                    "detect_anomalies: column '{}' of table '{table}' has type {}, but features must be numeric (or text, for hbos, ecod, copod, iforest and eif); \
                     cast it in a view or pick a numeric column",
                    field.name(),
                    field.data_type()
                ))?;
            features.push(Expr::Column(Column::new(
                Some(reference.clone()),
                field.name(),
            )));
        }
        for f in schema.fields() {
            let name = f.name().as_str();
            if SCORE_COLUMNS.contains(&name) || name.starts_with("__nomaly_") {
                let reserved = name;
                return plan_err!(
                    "detect_anomalies: table '{table}' already has a column named '{reserved}'; rename it in a view first"
                );
            }
        }

        let scan = LogicalPlanBuilder::scan(
            reference.clone(),
            provider_as_source(Arc::clone(&provider)),
            None,
        )?
        .build()?;
        let mut fit_args = vec![lit(algorithm.clone())];
        fit_args.extend(features.iter().cloned());
        if !detector_options.is_empty() {
            fit_args.push(lit(detector_options));
        }
        let detector = Detector {
            id: 0,
            fit_args,
            features,
            keys: vec![],
        };
        let columns: Vec<Expr> = scan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let plan = FitScorePlan::default().scored_rows(scan, columns, &detector, explain)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// A text column for a detector that takes numbers only: named with its table.
fn refuse_text(
    field: &datafusion::arrow::datatypes::Field,
    table: &str,
    alg: Algorithm,
) -> datafusion::common::Result<()> {
    if nomaly_detectors::features::is_categorical(field.data_type()) && !alg.takes_categorical() {
        return plan_err!(
            "detect_anomalies: column '{}' of table '{table}' is text ({}), which {} cannot take: hbos, ecod, copod, iforest and eif take text columns; cast it in a view or choose one of those",
            field.name(),
            field.data_type(),
            alg.name()
        );
    }
    Ok(())
}
