//! Runs every `sql/*.slt` file on a local DataFusion session, on a Ballista standalone cluster and
//! on a Ballista cluster (a `nomaly scheduler` and two `nomaly executor`s on loopback ports, started
//! by this binary): the SQL contract must hold, with identical results, on every engine.
//! `NOMALY_SLT_CLUSTER=host:port` runs the cluster part on a cluster that is already running.
//!
//! `NOMALY_SLT_COMPLETE=1 cargo test -p nomaly-tests --test sqllogictests` rewrites the expected
//! results from the local engine (review the diff!). `NOMALY_SLT_FILTER=name` runs matching files.
//! Files can use `$DATA` (examples/data) and `$__TEST_DIR__` after `control substitution on`, and
//! `onlyif local` / `onlyif standalone` / `onlyif ballista` for engine-specific records.

use datafusion_sqllogictest::{DataFusion, df_value_validator, value_normalizer};
use indicatif::ProgressBar;
use nomaly_engine::{EngineConfig, EngineKind, build_context};
use nomaly_tests::{data_dir, workspace_root};
use sqllogictest::{default_column_validator, strict_column_validator};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, `None` while nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    String::from_utf8_lossy(&head[9..12]).parse().ok()
}

/// Starts a scheduler and two executors with the same code and flags as `nomaly scheduler` /
/// `nomaly executor`, serving gRPC, Flight and HTTP on free loopback ports (in this process; the
/// CLI tests start them as separate processes), and waits until both executors are ready (their
/// `/readyz` answers 200 after a heartbeat reached the scheduler). Returns `host:port` and the
/// executors' work directory.
async fn start_cluster() -> (String, PathBuf) {
    use clap::Parser;
    use nomaly_engine::processes::{ExecutorFlags, SchedulerFlags, run_executor, run_scheduler};
    let port = free_port().to_string();
    let scheduler = SchedulerFlags::parse_from([
        "scheduler",
        "--bind-host",
        "127.0.0.1",
        "--bind-port",
        &port,
    ]);
    tokio::spawn(run_scheduler(
        scheduler,
        nomaly_pipeline::physical_codec(),
        None,
    ));
    let work = std::env::temp_dir().join(format!("nomaly-slt-cluster-{}", std::process::id()));
    let mut health = Vec::new();
    for i in 0..2 {
        let dir = work.join(format!("executor{i}"));
        std::fs::create_dir_all(&dir).expect("executor work dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let (p, g, h) = (
            ports[0].to_string(),
            ports[1].to_string(),
            ports[2].to_string(),
        );
        let flags = ExecutorFlags::parse_from([
            "executor",
            "--bind-host",
            "127.0.0.1",
            "--scheduler-host",
            "127.0.0.1",
            "--scheduler-port",
            &port,
            "--bind-port",
            &p,
            "--bind-grpc-port",
            &g,
            "--bind-health-port",
            &h,
            "--work-dir",
            dir.to_str().expect("utf-8 path"),
            "--vcores",
            "2",
            "--scheduler-connect-timeout-seconds",
            "30",
        ]);
        tokio::spawn(run_executor(flags, nomaly_pipeline::physical_codec()));
        health.push(ports[2]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !health
        .iter()
        .all(|&h| http_status(h, "/readyz") == Some(200))
    {
        assert!(
            Instant::now() < deadline,
            "the test cluster was not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (format!("127.0.0.1:{port}"), work)
}

fn main() {
    let complete = std::env::var("NOMALY_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .expect("tokio runtime");
    let files = slt_files();
    let (cluster, work_dir) = if complete {
        (None, None)
    } else {
        match std::env::var("NOMALY_SLT_CLUSTER") {
            Ok(address) => (Some(address), None),
            Err(_) => {
                let (address, work) = runtime.block_on(start_cluster());
                (Some(address), Some(work))
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
    if let Some(dir) = work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
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
