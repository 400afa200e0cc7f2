//! Prometheus metrics (`/metrics`, text format 0.0.4), all prefixed `nomaly_`.

use crate::store::RunState;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the chunk-latency histogram's buckets.
const CHUNK_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    rows: AtomicU64,
    chunks: AtomicU64,
    retries: AtomicU64,
    memory_in_use: AtomicU64,
    finished: Mutex<[u64; 7]>,
    /// Counts per bucket (the last is +Inf), and the sum of seconds.
    chunk_seconds: Mutex<([u64; CHUNK_BUCKETS.len() + 1], f64)>,
}

/// What the store and queue know when metrics are read.
pub struct Snapshot {
    pub runs_by_state: Vec<(RunState, u64)>,
    pub queue_depth: usize,
    pub running: usize,
    pub memory_budget: u64,
    pub memory_reserved: u64,
}

impl Metrics {
    pub fn chunk_committed(&self, rows: u64, seconds: f64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
        let mut h = self.chunk_seconds.lock().unwrap_or_else(|p| p.into_inner());
        let i = CHUNK_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(CHUNK_BUCKETS.len());
        h.0[i] += 1;
        h.1 += seconds;
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_memory_in_use(&self, bytes: u64) {
        self.memory_in_use.store(bytes, Ordering::Relaxed);
    }

    pub fn finished(&self, state: RunState) {
        if let Some(i) = RunState::ALL.iter().position(|s| *s == state) {
            self.finished.lock().unwrap_or_else(|p| p.into_inner())[i] += 1;
        }
    }

    pub fn render(&self, s: &Snapshot) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP nomaly_runs Runs in the job store by state.\n# TYPE nomaly_runs gauge"
        );
        let mut body = String::new();
        for state in RunState::ALL {
            let n = s
                .runs_by_state
                .iter()
                .find(|(st, _)| *st == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(body, "nomaly_runs{{state=\"{}\"}} {n}", state.name());
        }
        out.push_str(&body);
        let finished = *self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP nomaly_runs_finished_total Runs that ended since the server started, by state.\n# TYPE nomaly_runs_finished_total counter"
        );
        for (i, state) in RunState::ALL.iter().enumerate().skip(2) {
            let _ = writeln!(
                out,
                "nomaly_runs_finished_total{{state=\"{}\"}} {}",
                state.name(),
                finished[i]
            );
        }
        let gauges = [
            (
                "queue_depth",
                "Runs waiting in the queue.",
                s.queue_depth as u64,
            ),
            ("runs_running", "Runs executing now.", s.running as u64),
            (
                "memory_budget_bytes",
                "The server's memory budget for all runs.",
                s.memory_budget,
            ),
            (
                "memory_reserved_bytes",
                "Memory budgets of the running runs, summed.",
                s.memory_reserved,
            ),
            (
                "memory_in_use_bytes",
                "Bytes the running runs hold in their memory pools.",
                self.memory_in_use.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP nomaly_{name} {help}\n# TYPE nomaly_{name} gauge\nnomaly_{name} {v}"
            );
        }
        let counters = [
            (
                "rows_processed_total",
                "Rows scored and committed.",
                self.rows.load(Ordering::Relaxed),
            ),
            (
                "chunks_committed_total",
                "Chunks committed.",
                self.chunks.load(Ordering::Relaxed),
            ),
            (
                "retries_total",
                "Transient failures retried (chunks and fit partitions).",
                self.retries.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP nomaly_{name} {help}\n# TYPE nomaly_{name} counter\nnomaly_{name} {v}"
            );
        }
        let (buckets, sum) = *self.chunk_seconds.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP nomaly_chunk_seconds Time to score and commit one chunk.\n# TYPE nomaly_chunk_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, le) in CHUNK_BUCKETS.iter().enumerate() {
            cumulative += buckets[i];
            let _ = writeln!(
                out,
                "nomaly_chunk_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += buckets[CHUNK_BUCKETS.len()];
        let _ = writeln!(
            out,
            "nomaly_chunk_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "nomaly_chunk_seconds_sum {sum}\nnomaly_chunk_seconds_count {cumulative}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_agree() {
        let m = Metrics::default();
        m.chunk_committed(10, 0.2);
        m.chunk_committed(5, 3.0);
        m.chunk_committed(1, 100.0);
        m.finished(RunState::Succeeded);
        let text = m.render(&Snapshot {
            runs_by_state: vec![(RunState::Queued, 2)],
            queue_depth: 2,
            running: 0,
            memory_budget: 100,
            memory_reserved: 0,
        });
        assert!(
            text.contains("nomaly_chunk_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nomaly_chunk_seconds_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("nomaly_chunk_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("nomaly_rows_processed_total 16\n"));
        assert!(text.contains("nomaly_runs{state=\"queued\"} 2\n"));
        assert!(text.contains("nomaly_runs_finished_total{state=\"succeeded\"} 1\n"));
        assert!(text.contains("nomaly_queue_depth 2\n"));
    }
}
