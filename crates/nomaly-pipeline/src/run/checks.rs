//! `[[validate]]` checks over the run's output, before it is published: row counts, the anomaly
//! rate, and SQL queries over `output` (the first sink's data as written) that return failing rows.

use super::session::register_listing;
use super::{PreparedSession, RunScope, classify};
use crate::chunk_plan::SourceReader;
use crate::compile::{CompiledPipeline, query_options};
use crate::error::{PipelineError, Result};
use crate::events::RunEvent;
use crate::report::{CheckResult, RunReport, RunStatus, StepTiming};
use crate::sink_writer::staging_dir;
use crate::spec::ValidateSpec;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use std::time::Instant;

/// Failing rows a SQL check shows.
const SHOWN_FAILING_ROWS: usize = 5;

/// Runs the checks and sets the status: succeeded, or validation failed.
pub(crate) async fn validate_output(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    report: &mut RunReport,
) -> Result<()> {
    scope.emit(RunEvent::Phase("validate".into()));
    let t = Instant::now();
    if report
        .model
        .as_ref()
        .is_some_and(|m| !m.score_shares.is_empty())
    {
        register_output(&session.ctx, scope.p).await?;
        super::model_use::measure_drift(&session.ctx, report).await?;
        let _ = session.ctx.deregister_table("output");
    }
    report.checks = run_checks(scope, &session.ctx, report).await?;
    report.steps.push(StepTiming {
        step: "validate".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    report.status = if report.checks.iter().all(|c| c.passed) {
        RunStatus::Succeeded
    } else {
        RunStatus::ValidationFailed
    };
    Ok(())
}

async fn run_checks(
    scope: &RunScope<'_>,
    ctx: &SessionContext,
    report: &RunReport,
) -> Result<Vec<CheckResult>> {
    let p = scope.p;
    let mut results = Vec::new();
    let mut output_registered = false;
    for (place, v) in &p.validations {
        let result = match v {
            ValidateSpec::RowCount => CheckResult {
                check: "row_count".into(),
                passed: report.input_rows == report.output_rows,
                detail: format!(
                    "{} rows into detect, {} rows scored",
                    report.input_rows, report.output_rows
                ),
            },
            ValidateSpec::AnomalyRate { min, max } => {
                let (lo, hi) = (min.unwrap_or(0.0), max.unwrap_or(1.0));
                CheckResult {
                    check: "anomaly_rate".into(),
                    passed: (lo..=hi).contains(&report.anomaly_rate),
                    detail: format!(
                        "rate {:.6} ({} of {} rows), allowed [{lo}, {hi}]",
                        report.anomaly_rate, report.anomalies, report.output_rows
                    ),
                }
            }
            ValidateSpec::Sql { name, sql } => {
                if !output_registered {
                    register_output(ctx, p).await?;
                    output_registered = true;
                }
                sql_check(ctx, &format!("{place} '{name}'"), name, sql).await?
            }
        };
        scope.emit(RunEvent::CheckResult(result.clone()));
        results.push(result);
    }
    Ok(results)
}

/// `output`: the first sink's data, as written (still in its staging directory).
async fn register_output(ctx: &SessionContext, p: &CompiledPipeline) -> Result<()> {
    let s = &p.sinks[0];
    // On a cluster an object-store output's parts are in its staging prefix, where the
    // executors put them.
    if let Some(remote) = &s.remote
        && super::session::cluster_of(ctx.state().config()).is_some()
    {
        let location = format!("{}/", remote.staging_url());
        nomaly_engine::register_object_store(ctx, &location)
            .map_err(|e| PipelineError::engine(s.label.clone(), e))?;
        return register_first_sink(ctx, p, location).await;
    }
    let staging = staging_dir(&s.path);
    register_first_sink(ctx, p, format!("{}/", staging.display())).await
}

/// Registers the first sink's published output as the table `output` (a served run's top rows):
/// its directory, or its object-store prefix (the mirror keeps no part files once uploaded).
pub async fn register_published_output(ctx: &SessionContext, p: &CompiledPipeline) -> Result<()> {
    let s = &p.sinks[0];
    if s.remote.is_some() {
        let location = s.location();
        nomaly_engine::register_object_store(ctx, &location)
            .map_err(|e| PipelineError::engine(s.label.clone(), e))?;
        return register_first_sink(ctx, p, location).await;
    }
    register_first_sink(ctx, p, format!("{}/", s.path.display())).await
}

/// The first sink's files under `location` (a directory or prefix, ending in `/`) as the table
/// `output`.
async fn register_first_sink(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    location: String,
) -> Result<()> {
    let s = &p.sinks[0];
    let reader = SourceReader {
        name: "output".into(),
        path: s.location(),
        location,
        format: s.format,
        has_header: true,
        delimiter: b',',
        incremental: false,
        only: None,
    };
    register_listing(ctx, &reader).await
}

/// A SQL check passes when its query returns no rows. The failing rows are counted, and only the
/// first few are fetched to show.
async fn sql_check(
    ctx: &SessionContext,
    place: &str,
    name: &str,
    sql: &str,
) -> Result<CheckResult> {
    let df = ctx
        .sql_with_options(sql, query_options())
        .await
        .map_err(|e| classify(place.to_string(), e))?;
    let rows = df
        .clone()
        .count()
        .await
        .map_err(|e| classify(place.to_string(), e))?;
    let detail = if rows == 0 {
        "no failing rows".to_string()
    } else {
        let shown = df
            .limit(0, Some(SHOWN_FAILING_ROWS))
            .map_err(|e| classify(place.to_string(), e))?
            .collect()
            .await
            .map_err(|e| classify(place.to_string(), e))?;
        format!(
            "{rows} failing rows, first ones:\n{}",
            pretty_format_batches(&shown)
                .map(|t| t.to_string())
                .unwrap_or_default()
        )
    };
    Ok(CheckResult {
        check: format!("sql: {name}"),
        passed: rows == 0,
        detail,
    })
}
