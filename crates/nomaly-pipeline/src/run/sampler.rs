//! Memory and spill sampling while a run works (every 50 ms, for the report's peaks), and a
//! `Progress` event twice a second.

use super::{PreparedSession, RunScope};
use crate::events::{RunEvent, RunObserver};
use crate::report::{RunReport, peak_rss_bytes};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Sampler {
    sampling: Arc<AtomicBool>,
    peak_pool: Arc<AtomicUsize>,
    peak_spill: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(session: &PreparedSession, scope: &RunScope<'_>) -> Sampler {
        let runtime = session.ctx.runtime_env();
        let sampling = Arc::new(AtomicBool::new(true));
        let peak_pool = Arc::new(AtomicUsize::new(0));
        let peak_spill = Arc::new(AtomicU64::new(0));
        let observer: Arc<dyn RunObserver> = scope.opts.observer.clone();
        let counters = scope.counters.clone();
        let (s, pool, spill) = (sampling.clone(), peak_pool.clone(), peak_spill.clone());
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            let mut last_tick = Instant::now();
            while s.load(Ordering::Relaxed) {
                let reserved = runtime.memory_pool.reserved();
                pool.fetch_max(reserved, Ordering::Relaxed);
                spill.fetch_max(runtime.disk_manager.used_disk_space(), Ordering::Relaxed);
                if last_tick.elapsed() >= Duration::from_millis(500) {
                    let total = counters.rows_total.load(Ordering::Relaxed);
                    observer.on_event(&RunEvent::Progress {
                        rows_done: counters.rows_done.load(Ordering::Relaxed),
                        rows_total: (total > 0).then_some(total),
                        bytes: counters.bytes.load(Ordering::Relaxed),
                        memory: reserved,
                        elapsed: t0.elapsed(),
                    });
                    last_tick = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler {
            sampling,
            peak_pool,
            peak_spill,
            task,
        }
    }

    /// Stops sampling and puts the peaks into the report.
    pub async fn stop(self, report: &mut RunReport) {
        self.sampling.store(false, Ordering::Relaxed);
        let _ = self.task.await;
        report.peak_pool_bytes = self.peak_pool.load(Ordering::Relaxed);
        report.spill_bytes = self.peak_spill.load(Ordering::Relaxed);
        report.peak_rss_bytes = peak_rss_bytes();
    }
}
