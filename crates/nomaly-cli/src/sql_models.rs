//! `nomaly sql`'s model catalog: `CREATE MODEL`, `DROP MODEL`, `SHOW MODELS` in a script, and
//! models named in `anomaly_score('fraud', ...)`, both against the registry the pipelines of
//! `--models-dir` use ([`nomaly_pipeline::model_statements`]).

use crate::output::print_batches;
use crate::sql_cmd::{SqlArgs, parse_statements, run_statement};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use nomaly_engine::EngineError;
use nomaly_pipeline::PipelineError;
use nomaly_pipeline::model_statements::{ModelStatement, Piece, attach_registry, execute, split};
use nomaly_pipeline::models::Registry;

/// Gives `ctx` the registry of `args`' models directory, so model names resolve.
pub(crate) fn open_catalog(ctx: &SessionContext, args: &SqlArgs) {
    attach_registry(ctx, registry(args));
}

fn registry(args: &SqlArgs) -> Registry {
    Registry::beside(&args.models_dir)
}

/// A script's statements, parsed before anything runs (a syntax error anywhere stops it first).
pub(crate) struct Script(Vec<Step>);

enum Step {
    Model(ModelStatement),
    Sql(Statement),
}

impl Script {
    /// The statements of `sql`; `source` (`-e`, the file, `stdin`, `input`) names it in errors.
    pub(crate) fn parse(sql: &str, source: &str) -> Result<Script, EngineError> {
        let plan_error = |e: String| EngineError::DataFusion(DataFusionError::Plan(e));
        let steps = match split(sql, source).map_err(plan_error)? {
            None => parse_statements(sql, source)?
                .into_iter()
                .map(Step::Sql)
                .collect(),
            Some(pieces) => {
                let mut steps = Vec::new();
                for piece in pieces {
                    match piece {
                        Piece::Model(m) => steps.push(Step::Model(m)),
                        Piece::Sql(text) => steps
                            .extend(parse_statements(&text, source)?.into_iter().map(Step::Sql)),
                    }
                }
                steps
            }
        };
        Ok(Script(steps))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs every statement; with `output_last`, the last one's rows go to `--output`.
    pub(crate) async fn run(
        self,
        ctx: &SessionContext,
        args: &SqlArgs,
        output_last: bool,
    ) -> Result<(), EngineError> {
        if output_last && args.output.is_some() && matches!(self.0.last(), Some(Step::Model(_))) {
            return Err(EngineError::DataFusion(DataFusionError::Plan(
                "--output writes the last statement's rows, and the last statement here is a \
                 model statement; end the script with the query to write"
                    .into(),
            )));
        }
        let last = self.0.len().saturating_sub(1);
        for (i, step) in self.0.into_iter().enumerate() {
            match step {
                Step::Model(m) => {
                    let table = execute(ctx, &registry(args), &m)
                        .await
                        .map_err(engine_error)?;
                    print_batches(&[table], args.format)?;
                }
                Step::Sql(statement) => {
                    run_statement(ctx, statement, output_last && i == last, args).await?
                }
            }
        }
        Ok(())
    }
}

/// A model statement's failure as the CLI reports errors: DataFusion's own kept (its exit code
/// says whether the input was at fault), the rest as a planning error (bad input, exit 2) or an
/// execution error.
fn engine_error(e: PipelineError) -> EngineError {
    match e {
        PipelineError::Engine { place, source } => match source {
            EngineError::DataFusion(df) => {
                EngineError::DataFusion(DataFusionError::Context(place, Box::new(df)))
            }
            other => other,
        },
        PipelineError::Invalid { .. } | PipelineError::Refused { .. } => {
            EngineError::DataFusion(DataFusionError::Plan(e.to_string()))
        }
        other => EngineError::DataFusion(DataFusionError::Execution(other.to_string())),
    }
}
