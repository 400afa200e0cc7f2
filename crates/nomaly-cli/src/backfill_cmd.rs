//! `nomaly backfill FILE --from D --to D`: one run per interval of the pipeline's schedule (days,
//! without one) — here, one after another, or queued on a server (`--submit`) as one backfill;
//! `nomaly backfills [ID]` shows a server's backfills.

use crate::pipeline_cmd;
use crate::runs_cmd::ServerFlags;
use clap::Args;
use nomaly_pipeline::run_context::{backfill_intervals, parse_day, parse_params};
use nomaly_pipeline::{PipelineError, PipelineFile, RunDate, RunMode, RunRequest, compile};
use nomaly_server::backfills::{BackfillRequest, BackfillView};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
#[command(
    after_help = "Each interval is one run for that interval: ${run.date}, ${run.start} and
${run.end} expand to it, so a pipeline that writes out/date=${run.date}/ gives every interval its own
output, and backfilling a day again replaces only that day's output. Intervals are the schedule's
(in its time zone), or days in UTC for a pipeline without one; only intervals that have ended run,
at most 1000.

Examples:
  nomaly backfill daily.toml --from 2026-11-01 --to 2026-11-30
  nomaly backfill daily.toml --from 2026-11-01 --to 2026-11-07 --param region=eu
  nomaly backfill daily.toml --from 2026-11-01 --to 2026-11-30 --submit   # queue on a server
  nomaly backfills 3                                                     # its progress

Exit codes: 0 every interval succeeded, 1 one failed (the others still ran), 2 invalid pipeline
file or dates, 130 cancelled (Ctrl-C stops the current interval; the rest do not start)."
)]
pub struct BackfillArgs {
    /// The pipeline file (TOML)
    #[arg(value_name = "PIPELINE.toml")]
    file: PathBuf,
    /// First day (YYYY-MM-DD) whose intervals run
    #[arg(long, value_name = "YYYY-MM-DD")]
    from: String,
    /// Last day (YYYY-MM-DD, inclusive)
    #[arg(long, value_name = "YYYY-MM-DD")]
    to: String,
    /// A value for ${param.NAME}, the same for every interval. Repeatable
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Override a setting: KEY=VALUE, as `nomaly run --set`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Queue the backfill on a nomaly server instead of running it here (one item there:
    /// `nomaly backfills ID`)
    #[arg(long)]
    submit: bool,
    /// With --submit: each run's priority (default -10: after scheduled and submitted runs)
    #[arg(long, allow_negative_numbers = true, requires = "submit")]
    priority: Option<i64>,
    /// Print each run's report (here) or the server's answer (--submit) as JSON
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar, log lines instead
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    server: ServerFlags,
}

#[derive(Args, Debug)]
pub struct BackfillsArgs {
    /// A backfill id: show it (default: list the newest)
    id: Option<i64>,
    /// Cancel the backfill's queued and running runs
    #[arg(long, requires = "id")]
    cancel: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerFlags,
}

fn fail(e: &PipelineError) -> i32 {
    eprintln!("error: {}", e.user_message());
    e.exit_code()
}

pub async fn backfill(args: BackfillArgs) -> i32 {
    if args.submit {
        return submit(args).await;
    }
    let bad = |flag: &str, e: String| PipelineError::invalid(flag.to_string(), e);
    let checked = (|| {
        let from = parse_day(&args.from).map_err(|e| bad("--from", e))?;
        let to = parse_day(&args.to).map_err(|e| bad("--to", e))?;
        let params = parse_params(&args.params).map_err(|e| bad("--param", e))?;
        let latest = RunRequest::new(RunDate::Latest, params.clone());
        let p = compile(PipelineFile::load(&args.file, &args.overrides, &latest)?)?;
        let now = chrono::Utc::now().timestamp_millis();
        let intervals = backfill_intervals(&p, from, to, now).map_err(|e| bad("--from/--to", e))?;
        Ok((intervals, params))
    })();
    let (intervals, params) = match checked {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let total = intervals.len();
    let started = Instant::now();
    let mut failed = Vec::new();
    for (i, (start_ms, end_ms)) in intervals.into_iter().enumerate() {
        let request = RunRequest::new(RunDate::Interval { start_ms, end_ms }, params.clone());
        let p = match PipelineFile::load(&args.file, &args.overrides, &request).and_then(compile) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        let date = p.file.context.date();
        eprintln!(
            "backfill [{}/{total}] {date}: {} -> {}",
            i + 1,
            p.file.context.describe(),
            p.sinks
                .iter()
                .map(|s| s.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // An unfinished run of the interval (a backfill stopped before) continues; a finished
        // one is run again, and replaced when this one publishes.
        let mode = RunMode::Resume { refit: true };
        let code = pipeline_cmd::execute(&p, mode, false, args.json, args.no_progress).await;
        match code {
            0 => {}
            130 => {
                eprintln!("backfill stopped at {date}: cancelled");
                return 130;
            }
            _ => failed.push(date),
        }
    }
    eprintln!(
        "backfill: {} of {total} intervals succeeded in {:.1} s{}",
        total - failed.len(),
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
    if failed.is_empty() { 0 } else { 1 }
}

async fn submit(args: BackfillArgs) -> i32 {
    let path = match std::path::absolute(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return 2;
        }
    };
    let params = match parse_params(&args.params) {
        Ok(p) => p,
        Err(e) => return fail(&PipelineError::invalid("--param", e)),
    };
    let req = BackfillRequest {
        from: args.from.clone(),
        to: args.to.clone(),
        path: Some(path.to_string_lossy().to_string()),
        priority: args.priority,
        set: args.overrides.clone(),
        params,
        ..Default::default()
    };
    match args.server.client().backfill(&req).await {
        Ok(view) => {
            print_view(&view, args.json);
            eprintln!("watch it with: nomaly backfills {}", view.backfill.id);
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

pub async fn backfills(args: BackfillsArgs) -> i32 {
    let client = args.server.client();
    let result = match (args.id, args.cancel) {
        (Some(id), true) => client.cancel_backfill(id).await.map(|v| vec![v]),
        (Some(id), false) => client.backfill_view(id).await.map(|v| vec![v]),
        (None, _) => client.backfills(20).await.map(|l| l.backfills),
    };
    match result {
        Ok(views) => {
            if args.json && args.id.is_some() {
                print_view(&views[0], true);
            } else if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&views).unwrap_or_default()
                );
            } else {
                for v in &views {
                    print_view(v, false);
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// One backfill: a summary line, then (for one) a line per run.
fn print_view(v: &BackfillView, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let counts: Vec<String> = v.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!(
        "backfill {} of {}: {} to {}, {} — {} run(s): {}",
        v.backfill.id,
        v.backfill.pipeline,
        v.backfill.from_day,
        v.backfill.to_day,
        v.state,
        v.total,
        counts.join(", ")
    );
    for r in &v.runs {
        println!("  {}  run {:<6} {}", r.date, r.run, r.state.name());
    }
}
