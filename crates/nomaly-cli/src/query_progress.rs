//! A progress bar for long `nomaly sql` statements (on a terminal only).
//!
//! DataFusion updates operators' metrics while they run: the rows the leaf scans have produced,
//! against the rows their statistics promise (exact for Parquet), give a percentage, a rate and an
//! ETA; the memory pool gives the memory held. A one-pass fit and score (`FitScoreExec`) reads its
//! input once while fitting, then scores: its rows count twice, read and scored, so the bar covers
//! the scoring and writing too. Nothing is drawn for statements that finish within a second, so
//! quick queries print exactly what they printed before.

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nomaly_physical::FitScoreExec;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Draws until dropped.
pub struct QueryProgress {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn leaves(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    let children = plan.children();
    if children.is_empty() {
        out.push(plan.clone());
    }
    for c in children {
        leaves(c, out);
    }
}

/// Rows the leaf scans will produce, when every leaf's statistics know.
fn total_rows(leaves: &[Arc<dyn ExecutionPlan>]) -> Option<u64> {
    leaves
        .iter()
        .map(|l| {
            StatisticsContext::new()
                .compute(l.as_ref(), &StatisticsArgs::new())
                .ok()
                .and_then(|s| s.num_rows.get_value().map(|v| *v as u64))
        })
        .sum()
}

fn rows_read(leaves: &[Arc<dyn ExecutionPlan>]) -> u64 {
    leaves
        .iter()
        .filter_map(|l| l.metrics().and_then(|m| m.output_rows()))
        .sum::<usize>() as u64
}

/// The one-pass fit-and-score operators of a plan.
fn fit_and_score(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if plan.as_ref().is::<FitScoreExec>() {
        out.push(plan.clone());
    }
    for c in plan.children() {
        fit_and_score(c, out);
    }
}

/// What the bar counts: rows read by the scans, plus rows scored by one-pass operators (whose
/// scans are read before any row is scored).
struct Work {
    scans: Vec<Arc<dyn ExecutionPlan>>,
    scorers: Vec<Arc<dyn ExecutionPlan>>,
}

impl Work {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Work {
        let mut scans = Vec::new();
        leaves(plan, &mut scans);
        let mut scorers = Vec::new();
        fit_and_score(plan, &mut scorers);
        Work { scans, scorers }
    }

    /// All of it, when the statistics know: each scorer adds the rows its own scans read.
    fn total(&self) -> Option<u64> {
        let scored: Option<u64> = self
            .scorers
            .iter()
            .map(|s| {
                let mut scans = Vec::new();
                leaves(s, &mut scans);
                total_rows(&scans)
            })
            .sum();
        Some(total_rows(&self.scans)? + scored?)
    }

    fn done(&self) -> u64 {
        rows_read(&self.scans) + rows_read(&self.scorers)
    }
}

impl QueryProgress {
    /// Starts watching `plan` (already executing or about to).
    pub fn start(plan: Arc<dyn ExecutionPlan>, runtime: Arc<RuntimeEnv>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let work = Work::of(&plan);
        let total = work.total();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut bar: Option<ProgressBar> = None;
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if flag.load(Ordering::Relaxed) || started.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
                    let template = if total.is_some() {
                        "{spinner} [{bar:30}] {percent:>3}%  {human_pos}/{human_len} rows  {msg}"
                    } else {
                        "{spinner} {elapsed}  {human_pos} rows read  {msg}"
                    };
                    b.set_style(
                        ProgressStyle::with_template(template)
                            .expect("a valid template")
                            .progress_chars("=> "),
                    );
                    b
                });
                // Rate and ETA from the statement's start (indicatif's own would start at the
                // first draw, a second in).
                let read = work.done();
                let rate = read as f64 / started.elapsed().as_secs_f64();
                let eta = match total {
                    Some(t) if rate > 0.0 && t > read => {
                        format!("  ETA {:.0}s", (t - read) as f64 / rate)
                    }
                    _ => String::new(),
                };
                b.set_position(read);
                b.set_message(format!(
                    "{rate:.0} rows/s{eta}  mem {:.0} MiB",
                    runtime.memory_pool.reserved() as f64 / 1048576.0
                ));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        QueryProgress {
            stop,
            task: Some(task),
        }
    }

    /// Stops and clears the bar (so results print on a clean line).
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for QueryProgress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
