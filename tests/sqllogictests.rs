//! Runs every `sql/*.slt` file on a local DataFusion session AND on a Ballista standalone cluster:
//! the SQL contract must hold, with identical results, on both engines.
//!
//! `NOMALY_SLT_COMPLETE=1 cargo test -p nomaly-tests --test sqllogictests` rewrites the expected
//! results from the local engine (review the diff!). `NOMALY_SLT_FILTER=name` runs matching files.
//! Files can use `$DATA` (examples/data) and `$__TEST_DIR__` after `control substitution on`, and
//! `onlyif local` / `onlyif standalone` for engine-specific records.

use datafusion_sqllogictest::{DataFusion, df_value_validator, value_normalizer};
use indicatif::ProgressBar;
use nomaly_engine::{EngineConfig, EngineKind, build_context};
use nomaly_tests::{data_dir, workspace_root};
use sqllogictest::{default_column_validator, strict_column_validator};
use std::path::{Path, PathBuf};

fn slt_files() -> Vec<PathBuf> {
    let filter = std::env::var("NOMALY_SLT_FILTER").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("sql"))
        .expect("sql/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    files
}

async fn run_file(path: &Path, engine: EngineKind, complete: bool) -> Result<(), String> {
    let config = EngineConfig {
        engine: engine.clone(),
        target_partitions: Some(4),
        ..Default::default()
    };
    let ctx = build_context(&config).await.map_err(|e| e.to_string())?;
    let relative = path
        .strip_prefix(workspace_root())
        .unwrap_or(path)
        .to_path_buf();
    let mut runner = sqllogictest::Runner::new(|| {
        let ctx = ctx.clone();
        let relative = relative.clone();
        async move { Ok(DataFusion::new(ctx, relative, ProgressBar::hidden())) }
    });
    runner.add_label(engine.name());
    runner.set_var("DATA".to_string(), data_dir().to_string_lossy().to_string());
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                df_value_validator,
                value_normalizer,
                default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| e.display(true).to_string())
    }
}

fn main() {
    let complete = std::env::var("NOMALY_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .expect("tokio runtime");
    let files = slt_files();
    let mut passed = 0;
    let mut failed = Vec::new();
    for file in &files {
        let engines = if complete {
            vec![EngineKind::Local]
        } else {
            vec![EngineKind::Local, EngineKind::Standalone]
        };
        for engine in engines {
            let name = format!(
                "{} [{:?}]",
                file.file_name().unwrap().to_string_lossy(),
                engine
            );
            let started = std::time::Instant::now();
            match runtime.block_on(run_file(file, engine, complete)) {
                Ok(()) => {
                    passed += 1;
                    println!(
                        "test {name} ... ok ({:.1}s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    println!("test {name} ... FAILED\n{e}");
                    failed.push(name);
                }
            }
        }
    }
    runtime.shutdown_background();
    println!();
    println!("sqllogictests: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        for f in &failed {
            println!("  failed: {f}");
        }
        std::process::exit(1);
    }
    if passed == 0 {
        println!("no .slt file ran");
        std::process::exit(1);
    }
}
