//! What a finished run found, for the dashboard: its top-scored rows (read from its output) and
//! its pipeline's history (duration, rows and anomaly rate per run, from the stored reports).

use crate::error::{Result, ServerError};
use crate::server::Server;
use crate::store::{RunFilter, RunState};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use nomaly_pipeline::RunReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most rows `/top` returns.
pub const MAX_TOP_ROWS: usize = 100;

/// `GET /api/runs/{id}/top`: the highest-scored rows of a run's first output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopRows {
    pub run: i64,
    pub columns: Vec<String>,
    /// Highest `anomaly_score` first; each value as text.
    pub rows: Vec<Vec<String>>,
}

/// One run in a pipeline's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub run: i64,
    pub state: RunState,
    pub submitted_ms: i64,
    /// `${run.date}` of the run's interval.
    pub date: Option<String>,
    /// From its report (none while it runs).
    pub seconds: Option<f64>,
    pub rows: Option<u64>,
    pub anomaly_rate: Option<f64>,
}

/// `GET /api/pipelines/{name}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineHistory {
    pub pipeline: String,
    /// Oldest first.
    pub runs: Vec<HistoryEntry>,
}

impl Server {
    /// The `limit` highest-scored rows of a succeeded run's first output.
    pub async fn top_rows(&self, id: i64, limit: usize) -> Result<TopRows> {
        let run = self.get(id)?;
        if run.state != RunState::Succeeded {
            return Err(ServerError::Conflict(format!(
                "run {id} is {}: only a succeeded run has a published output to read",
                run.state.name()
            )));
        }
        let compiled = self.prepare(&run)?;
        if compiled.detect.is_none() {
            return Err(ServerError::BadRequest(format!(
                "run {id}'s pipeline has no [detect] step: its output has no anomaly_score"
            )));
        }
        let ctx = datafusion::prelude::SessionContext::new();
        nomaly_pipeline::register_published_output(&ctx, &compiled)
            .await
            .map_err(|e| ServerError::BadRequest(e.user_message()))?;
        let sql = format!(
            "SELECT * FROM output ORDER BY anomaly_score DESC NULLS LAST LIMIT {}",
            limit.clamp(1, MAX_TOP_ROWS)
        );
        let fail = |e: datafusion::error::DataFusionError| {
            ServerError::BadRequest(format!("reading run {id}'s output: {e}"))
        };
        let df = ctx.sql(&sql).await.map_err(fail)?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("");
        for batch in df.collect().await.map_err(fail)? {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| fail(e.into()))?;
            for i in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        Ok(TopRows {
            run: id,
            columns,
            rows,
        })
    }

    /// A pipeline's last `limit` runs, oldest first, with their reports' figures.
    pub fn history(&self, pipeline: &str, limit: usize) -> Result<PipelineHistory> {
        let filter = RunFilter {
            pipeline: Some(pipeline.to_string()),
            ..RunFilter::default()
        };
        let (runs, _) = self.inner.store.runs_page(&filter, limit, 0)?;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs.into_iter().rev() {
            let report: Option<RunReport> = self
                .inner
                .store
                .report(r.id)?
                .and_then(|text| serde_json::from_str(&text).ok());
            out.push(HistoryEntry {
                run: r.id,
                state: r.state,
                submitted_ms: r.submitted_ms,
                date: r.interval.map(|i| i.date),
                seconds: report.as_ref().map(|x| x.seconds),
                rows: report.as_ref().map(|x| x.output_rows),
                anomaly_rate: report.as_ref().map(|x| x.anomaly_rate),
            });
        }
        Ok(PipelineHistory {
            pipeline: pipeline.to_string(),
            runs: out,
        })
    }
}
