//! Runs every `sql/*.slt` file on a local DataFusion session, on a Ballista standalone cluster and
//! on a Ballista cluster (a scheduler and two executors on loopback ports, each a separate process:
//! this binary re-run as `nomaly scheduler` / `nomaly executor` would run, same code and flags):
//! the SQL contract must hold, with identical results, on every engine.
//! `NOMALY_SLT_CLUSTER=host:port` runs the cluster part on a cluster that is already running.
//!
//! `NOMALY_SLT_COMPLETE=1 cargo test -p nomaly-tests --test sqllogictests` rewrites the expected
//! results from the local engine (review the diff!). `NOMALY_SLT_FILTER=name` runs matching files.
//! Files can use `$DATA` (examples/data) and `$__TEST_DIR__` after `control substitution on`, and
//! `onlyif local` / `onlyif standalone` / `onlyif ballista` for engine-specific records.

use datafusion_sqllogictest::{
    DFColumnType, DFOutput, DFSqlLogicTestError, DataFusion, convert_batches,
    convert_schema_to_types, df_value_validator, value_normalizer,
};
use indicatif::ProgressBar;
use nomaly_engine::{EngineConfig, EngineKind, build_context};
use nomaly_pipeline::model_statements::{ModelStatement, Piece, attach_registry, execute, split};
use nomaly_pipeline::models::Registry;
use nomaly_tests::cluster::Processes;
use nomaly_tests::{data_dir, workspace_root};
use sqllogictest::{default_column_validator, strict_column_validator};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // CREATE MODEL and model names use a registry of the file's own.
    let models = tempfile::tempdir().map_err(|e| e.to_string())?;
    let registry = Registry::at(models.path());
    attach_registry(&ctx, registry.clone());
    let relative = path
        .strip_prefix(workspace_root())
        .unwrap_or(path)
        .to_path_buf();
    let mut runner = sqllogictest::Runner::new(|| {
        let ctx = ctx.clone();
        let relative = relative.clone();
        let registry = registry.clone();
        async move {
            Ok(WithModels {
                inner: DataFusion::new(ctx.clone(), relative, ProgressBar::hidden()),
                ctx,
                registry,
            })
        }
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

/// DataFusion's runner, with `CREATE MODEL`, `DROP MODEL` and `SHOW MODELS` carried out as
/// `nomaly sql` carries them out.
struct WithModels {
    inner: DataFusion,
    ctx: datafusion::prelude::SessionContext,
    registry: Registry,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for WithModels {
    type Error = DFSqlLogicTestError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DFOutput, DFSqlLogicTestError> {
        let statement = match split(sql, "record") {
            Ok(Some(pieces)) => match pieces.as_slice() {
                [Piece::Model(m)] => m.clone(),
                _ => return Err("one model statement per record".to_string().into()),
            },
            _ => return self.inner.run(sql).await,
        };
        let table = execute(&self.ctx, &self.registry, &statement)
            .await
            .map_err(|e| DFSqlLogicTestError::Other(e.to_string()))?;
        if statement != ModelStatement::Show {
            return Ok(sqllogictest::DBOutput::StatementComplete(0));
        }
        let types = convert_schema_to_types(table.schema().fields());
        let rows = convert_batches(&table.schema(), vec![table], false)?;
        Ok(sqllogictest::DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, `None` while nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let request = nomaly_tests::http::Request {
        timeout: Some(Duration::from_secs(5)),
        ..nomaly_tests::http::Request::get(path)
    };
    request.status_only(port)
}

/// The environment variable that makes this binary a cluster process: `scheduler` or `executor`,
/// with Ballista's flags as its arguments (see [`cluster_process`]).
const PROCESS_ENV: &str = "NOMALY_SLT_PROCESS";

/// Runs this binary as `nomaly scheduler` or `nomaly executor` would (the same code, codec and
/// flags); returns the exit code.
fn cluster_process(role: &str) -> i32 {
    use clap::Parser;
    use nomaly_engine::ballista::processes::{
        ExecutorFlags, SchedulerFlags, run_executor, run_scheduler,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match role {
            "scheduler" => {
                let flags = SchedulerFlags::parse();
                run_scheduler(
                    flags,
                    nomaly_pipeline::physical_codec(),
                    None,
                    None,
                    None,
                    Default::default(),
                )
                .await
            }
            _ => {
                let flags = ExecutorFlags::parse();
                run_executor(
                    flags,
                    nomaly_pipeline::physical_codec(),
                    None,
                    Default::default(),
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{role}: {e}");
            1
        }
    }
}

/// Starts a scheduler and two executors, each a separate OS process (this binary re-run with
/// [`PROCESS_ENV`]) on free loopback ports, and waits until both executors are ready (their
/// `/readyz` answers 200 after a heartbeat reached the scheduler).
fn start_cluster() -> Processes {
    let exe = std::env::current_exe().expect("this test binary");
    let launcher = Box::new(move |role: &str| {
        let mut command = std::process::Command::new(&exe);
        command.env(PROCESS_ENV, role);
        command
    });
    let mut cluster = Processes::new(nomaly_tests::free_port(), launcher);
    let cwd = std::env::current_dir().expect("a working directory");
    let port = cluster.port.to_string();
    let scheduler = ["--bind-host", "127.0.0.1", "--bind-port", &port];
    cluster.spawn("scheduler", "scheduler", &scheduler, &[], &cwd);
    let mut health = Vec::new();
    for i in 0..2 {
        let flags = cluster.executor_flags(i);
        let at = flags
            .iter()
            .position(|f| f == "--bind-health-port")
            .expect("a flag");
        health.push(flags[at + 1].parse::<u16>().expect("a port"));
        let mut args = vec!["--bind-host", "127.0.0.1"];
        args.extend(flags.iter().map(String::as_str));
        cluster.spawn(&format!("executor{i}"), "executor", &args, &[], &cwd);
    }
    cluster.wait_for(|| {
        health
            .iter()
            .all(|&h| http_status(h, "/readyz") == Some(200))
    });
    cluster
}

fn main() {
    if let Ok(role) = std::env::var(PROCESS_ENV) {
        std::process::exit(cluster_process(&role));
    }
    let complete = std::env::var("NOMALY_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .expect("tokio runtime");
    let files = slt_files();
    let (cluster, processes) = if complete {
        (None, None)
    } else {
        match std::env::var("NOMALY_SLT_CLUSTER") {
            Ok(address) => (Some(address), None),
            Err(_) => {
                let processes = start_cluster();
                (
                    Some(format!("127.0.0.1:{}", processes.port)),
                    Some(processes),
                )
            }
        }
    };
    let mut passed = 0;
    let mut failed = Vec::new();
    for file in &files {
        let mut engines = vec![EngineKind::Local];
        if let Some(address) = &cluster {
            engines.push(EngineKind::Standalone);
            engines.push(EngineKind::Cluster(address.clone()));
        }
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
    drop(processes);
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
