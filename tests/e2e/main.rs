//! End-to-end tests over real Parquet files, on local DataFusion and Ballista standalone.

mod determinism;
mod one_pass;
mod segments;

use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::prelude::SessionContext;
use nomaly_engine::{EngineConfig, build_context, register_table};
use std::path::Path;

/// A session built from `config` with the Parquet dataset at `data` registered as `t`.
async fn session_with_table(config: EngineConfig, data: &Path) -> SessionContext {
    let ctx = build_context(&config).await.expect("session");
    register_table(&ctx, "t", &data.to_string_lossy())
        .await
        .expect("register");
    ctx
}

/// `sql`'s physical plan, one operator per line.
async fn physical(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    DisplayableExecutionPlan::new(plan.as_ref())
        .indent(false)
        .to_string()
}
