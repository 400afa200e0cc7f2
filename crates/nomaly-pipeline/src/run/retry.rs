//! Retries with exponential backoff and full jitter, for a unit of work (a chunk, a fit
//! partition, the whole fit): whether a failure may be retried, after what wait, how many retries
//! it took and the time the failures cost.

use crate::compile::RetryPolicy;
use crate::error::RunPlace;
use crate::events::RunEvent;
use crate::report::RunReport;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A draw in [0, 1) for retry jitter. No seed: waits are not results, and runs that fail together
/// should not retry together.
fn jitter_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    nomaly_detectors::hashing::unit_f64(nomaly_detectors::hashing::mix64(nanos ^ n.rotate_left(32)))
}

pub(crate) struct Attempts {
    place: RunPlace,
    policy: RetryPolicy,
    pub retries: u32,
    pub lost_seconds: f64,
    pub warnings: Vec<String>,
}

impl Attempts {
    pub fn new(place: RunPlace, policy: RetryPolicy) -> Self {
        Attempts {
            place,
            policy,
            retries: 0,
            lost_seconds: 0.0,
            warnings: Vec::new(),
        }
    }

    /// After an attempt begun at `started` failed with `error`: the `Retry` event to send and the
    /// wait before the next attempt, or `None` when the error is not `transient` or the retries
    /// are used up.
    pub fn retry_after(
        &mut self,
        error: &str,
        transient: bool,
        started: Instant,
    ) -> Option<(Duration, RunEvent)> {
        self.lost_seconds += started.elapsed().as_secs_f64();
        if !transient || self.retries >= self.policy.max_retries {
            return None;
        }
        self.retries += 1;
        let wait = self.policy.delay(self.retries, jitter_unit());
        tracing::warn!(error, retries = self.retries, "retrying");
        self.warnings.push(format!(
            "{error}; retry {} of {} in {:.2}s",
            self.retries,
            self.policy.max_retries,
            wait.as_secs_f64()
        ));
        let event = RunEvent::Retry {
            place: self.place.clone(),
            attempt: self.retries + 1,
            error: error.to_string(),
            wait,
        };
        Some((wait, event))
    }

    /// Adds these attempts to the report under `key` ("fit 3", "chunk 7").
    pub fn record(self, key: String, report: &mut RunReport) {
        report.recovery.time_lost_seconds += self.lost_seconds;
        if self.retries > 0 {
            report.retries += self.retries as u64;
            report.recovery.retries.insert(key, self.retries);
            report.warnings.extend(self.warnings);
        }
    }
}
