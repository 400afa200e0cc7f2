//! Looking at a pipeline without running it: `nomaly explain` (the chunks and the scoring plan),
//! `nomaly validate` (everything short of running) and `--dry-run` (every step on zero rows).
//! All three score the same table a run does ([`super::preflight::scored_table`]).

use super::detect_plan::{fit_frame, score_frame};
use super::fit::{FitRetry, fit_models};
use super::model_use::zero_rows;
use super::preflight::{reads, scored_input};
use super::scoring_plan::{is_chunk_preserving, scored_frame};
use super::sink_targets::compile_sinks;
use super::{PreparedSession, RunOptions, RunScope, base_report, classify, prepare};
use crate::compile::{CompiledPipeline, query_options};
use crate::error::Result;
use crate::events::{NoObserver, RunEvent};
use crate::report::{RunReport, RunStatus};
use crate::spec::ValidateSpec;
use datafusion::arrow::datatypes::SchemaRef;
use nomaly_engine::EngineKind;
use std::sync::Arc;

/// What `nomaly explain` prints: the chunk plan and the scoring plan (fitted on zero rows).
pub async fn explain(p: &CompiledPipeline) -> Result<String> {
    let prepared = prepare(p, &NoObserver, None).await?;
    let mut out = run_values(p);
    out.push_str(&describe_chunks(p, &prepared));
    out.push_str(&match &p.engine {
        EngineKind::Local => "engine: local (DataFusion in this process)\n".to_string(),
        EngineKind::Standalone => {
            "engine: standalone (Ballista in this process; the fit is one job, and each chunk one job running the plan below narrowed to that chunk's file group, ending in PartWriteExec: the executor writes the chunk's part files)\n".to_string()
        }
        EngineKind::Cluster(address) => format!(
            "engine: ballista://{address} (a Ballista cluster; the fit is one job, and each chunk one job running the plan below narrowed to that chunk's file group, ending in PartWriteExec: the executor writes the chunk's part files, so the output directory must be storage the executors share with this process)\n"
        ),
    });
    let input = scored_input(p);
    let ctx = &prepared.ctx;
    let place = || p.file.path.display().to_string();
    if let Some(d) = p.detect.as_ref().filter(|_| super::segmented::applies(p)) {
        let plan = super::detect_plan::segment_frame(ctx, d, &input)
            .await
            .map_err(|e| classify(place(), e))?;
        out.push_str(&format!(
            "
scoring plan (segments): the detect input is written once in {} buckets by a \
             hash of partition_by {:?}; each bucket is a chunk whose segments are fitted and \
             scored one at a time (SegmentFitScoreExec over a sort by the key, which spills), \
             so memory holds one segment's rows, not every segment's model:\n{}",
            prepared
                .chunks
                .chunks
                .len()
                .clamp(1, super::segmented::MAX_BUCKETS),
            d.partition_by,
            plan.logical_plan().display_indent()
        ));
        return Ok(out);
    }
    let df = match &p.detect {
        Some(d) => {
            let fit = fit_frame(ctx, d, &input)
                .await
                .map_err(|e| classify(place(), e))?;
            out.push_str(&format!(
                "\nfit:\n{}\n",
                fit.logical_plan().display_indent()
            ));
            // Plan against the real input so the chunk partitions show; the model is fitted on
            // zero rows.
            let opts = RunOptions::default();
            let retry = FitRetry::of(&RunScope::new(p, &opts), 1);
            let empty = zero_rows(&input);
            let mut stub = base_report(p);
            fit_models(ctx, d, &empty, &reads(p), &retry, &mut stub).await?;
            score_frame(ctx, d, &input).await
        }
        None => ctx.sql(&format!("SELECT * FROM {input}")).await,
    }
    .map_err(|e| classify(place(), e))?;
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| classify(place(), e))?;
    out.push_str(&format!(
        "\nscoring plan ({}):\n{}",
        if is_chunk_preserving(&plan, &prepared.chunks) {
            "partition i = chunk i"
        } else {
            "steps mix rows across chunks: the detect input will be materialized once, then chunked"
        },
        datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
    ));
    Ok(out)
}

/// The header of `explain`: how many chunks of which source, and the first 20.
fn describe_chunks(p: &CompiledPipeline, prepared: &PreparedSession) -> String {
    let c = &prepared.chunks;
    let mut out = format!(
        "pipeline {} ({}): {} chunks of source '{}' at chunk_rows = {}\n",
        p.name,
        p.file.path.display(),
        c.chunks.len(),
        c.source.name,
        p.chunk_rows
    );
    for chunk in c.chunks.iter().take(20) {
        out.push_str(&format!(
            "  chunk {:>5}: {}{}\n",
            chunk.id,
            chunk.describe(),
            chunk
                .rows
                .map(|r| format!(" ({r} rows)"))
                .unwrap_or_default()
        ));
    }
    if c.chunks.len() > 20 {
        out.push_str(&format!("  ... {} more\n", c.chunks.len() - 20));
    }
    if let Some(first) = c.unsliced.first() {
        out.push_str(&format!(
            "  row groups larger than chunk_rows are whole chunks in {first}{}: without a page \
             index a slice would read its whole row group; set run.chunk_rows to slice them \
             anyway, or write the file with a page index\n",
            match c.unsliced.len() {
                1 => String::new(),
                n => format!(" and {} more files", n - 1),
            }
        ));
    }
    out
}

/// `nomaly validate`: everything short of running — sources readable, steps plan, detect columns
/// exist and are numeric, sinks writable, checks plan. Returns a summary.
pub async fn validate(p: &CompiledPipeline) -> Result<String> {
    let prepared = prepare(p, &NoObserver, None).await?;
    let opts = RunOptions::default();
    let scope = RunScope::new(p, &opts);
    let empty = zero_rows(&scored_input(p));
    let mut stub = base_report(p);
    let (df, _) = scored_frame(&scope, &prepared.ctx, &empty, &mut stub).await?;
    compile_sinks(&prepared.ctx, p, df.schema())?;
    for s in &p.sinks {
        if let Some(remote) = &s.remote {
            remote.check_writable(s.mode).await?;
        }
    }
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    for (place, v) in &p.validations {
        if let ValidateSpec::Sql { name, sql } = v {
            plan_check(&prepared, schema.clone(), place, name, sql).await?;
        }
    }
    let c = &prepared.chunks;
    Ok(format!(
        "{}{}: valid — {} source(s), {} step(s), {} chunk(s) of '{}'{}, {} sink(s), {} check(s)",
        run_values(p),
        p.file.path.display(),
        p.sources.len(),
        p.steps.len(),
        c.chunks.len(),
        c.source.name,
        p.detect
            .as_ref()
            .map(|d| format!(
                ", detect {} on {}",
                d.algorithm.name(),
                d.columns.join(", ")
            ))
            .unwrap_or_default(),
        p.sinks.len(),
        p.validations.len()
    ))
}

/// The run's values and the outputs they expand to, when the file reads any (else nothing).
fn run_values(p: &CompiledPipeline) -> String {
    if !p.file.reads_run && p.file.context.params.is_empty() {
        return String::new();
    }
    let sinks: Vec<String> = p.sinks.iter().map(|s| s.location()).collect();
    format!(
        "for {}\nwrites {}\n",
        p.file.context.describe(),
        sinks.join(", ")
    )
}

/// Plans a SQL check against an empty `output` of the scored schema.
async fn plan_check(
    prepared: &PreparedSession,
    schema: SchemaRef,
    place: &str,
    name: &str,
    sql: &str,
) -> Result<()> {
    let ctx = &prepared.ctx;
    let empty_out = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])
        .map_err(|e| classify(place.to_string(), e))?;
    let _ = ctx.deregister_table("output");
    ctx.register_table("output", Arc::new(empty_out))
        .map_err(|e| classify(place.to_string(), e))?;
    ctx.sql_with_options(sql, query_options())
        .await
        .map_err(|e| classify(format!("{place} '{name}'"), e))?;
    Ok(())
}

/// `--dry-run`: the fit and the scoring plan run on zero rows of the scored input, sinks' `where`
/// evaluated; nothing is written.
pub(crate) async fn dry_run(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    report: &mut RunReport,
) -> Result<()> {
    let p = scope.p;
    scope.emit(RunEvent::Phase("dry run on zero rows".into()));
    let empty = zero_rows(&scored_input(p));
    let (df, _) = scored_frame(scope, &session.ctx, &empty, report).await?;
    let sinks = compile_sinks(&session.ctx, p, df.schema())?;
    let batches = df
        .collect()
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?;
    for s in &sinks {
        for b in &batches {
            if let Some(f) = &s.filter {
                f.evaluate(b)
                    .map_err(|e| classify(format!("{} where", s.label), e))?;
            }
        }
    }
    report.status = RunStatus::DryRun;
    Ok(())
}
