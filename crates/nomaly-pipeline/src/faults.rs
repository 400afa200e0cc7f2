//! Fault injection for the recovery tests: the real run, with reads and writes that fail.
//!
//! Off unless the environment variable `NOMALY_FAULTS` is set, e.g.
//! `NOMALY_FAULTS="read=0.1,write=0.1,seed=7"` (10% of object-store reads and 10% of part-file
//! writes fail with a transient I/O error) or `NOMALY_FAULTS="fail_chunk=3"` (every write of chunk
//! 3's part files fails: a permanent fault) or `NOMALY_FAULTS="chunk_delay_ms=200"` (every chunk
//! waits 200 ms before it scores, so a test can act while a run is in flight) or
//! `NOMALY_FAULTS="exit_after_publish=1"` (the process exits, as if killed, once one sink of a
//! completed run is published; `exit_after_upload=3`: once 3 objects of a remote output are up).
//! In a Ballista executor's environment, `part_delay_ms=800` holds each chunk 800 ms on the
//! executor before it is scored, so a test can lose the executor mid-task. Reads fail inside an [`ObjectStore`] wrapper that
//! replaces the `file://` store, so they take DataFusion's real read path and error wrapping;
//! writes fail inside the part-file writer. Faults are armed once the run's inputs are planned, so
//! they hit the fit and the chunks, the parts that retry. Draws come from a seeded counter, so a
//! failing run can be replayed.
//!
//! A plan belongs to one run ([`crate::RunOptions::faults`]); the CLI reads it from the environment
//! for each run. It is compiled into release builds too, so that the recovery tests exercise the
//! binary users run; without `NOMALY_FAULTS` (or a plan in the options) nothing is injected.

use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result as StoreResult,
};
use futures::stream::BoxStream;
use nomaly_detectors::hashing::{mix64, unit_f64};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The environment variable that turns fault injection on.
pub const FAULTS_ENV: &str = "NOMALY_FAULTS";

/// What to break, parsed from [`FAULTS_ENV`].
#[derive(Debug, Default)]
pub struct FaultPlan {
    pub read_rate: f64,
    pub write_rate: f64,
    pub fail_chunk: Option<usize>,
    /// Each chunk waits this long (cancellably) before it scores.
    pub chunk_delay: Option<std::time::Duration>,
    /// On a Ballista executor: each chunk's writer waits this long before it reads its input,
    /// so that a test can lose the executor while it holds the chunk.
    pub part_delay: Option<std::time::Duration>,
    /// The process exits (status 137, as killed) after this many sinks are published.
    pub exit_after_publish: Option<usize>,
    /// The process exits (status 137) after this many objects of a remote output are put.
    pub exit_after_upload: Option<usize>,
    seed: u64,
    draws: AtomicU64,
    armed: AtomicBool,
    pub reads_failed: AtomicU64,
    pub writes_failed: AtomicU64,
}

/// A fault plan that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{FAULTS_ENV}: {0}")]
pub struct FaultPlanError(String);

impl FaultPlan {
    pub fn parse(text: &str) -> Result<FaultPlan, FaultPlanError> {
        let mut plan = FaultPlan::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| FaultPlanError(format!("'{item}' is not key=value")))?;
            let bad = || FaultPlanError(format!("'{item}' has a bad value"));
            match key.trim() {
                "read" => plan.read_rate = value.parse().map_err(|_| bad())?,
                "write" => plan.write_rate = value.parse().map_err(|_| bad())?,
                "seed" => plan.seed = value.parse().map_err(|_| bad())?,
                "fail_chunk" => plan.fail_chunk = Some(value.parse().map_err(|_| bad())?),
                "exit_after_publish" => {
                    plan.exit_after_publish = Some(value.parse().map_err(|_| bad())?)
                }
                "exit_after_upload" => {
                    plan.exit_after_upload = Some(value.parse().map_err(|_| bad())?)
                }
                "part_delay_ms" => {
                    plan.part_delay = Some(std::time::Duration::from_millis(
                        value.parse().map_err(|_| bad())?,
                    ))
                }
                "chunk_delay_ms" => {
                    plan.chunk_delay = Some(std::time::Duration::from_millis(
                        value.parse().map_err(|_| bad())?,
                    ))
                }
                other => {
                    return Err(FaultPlanError(format!(
                        "unknown key '{other}'; keys are read, write, seed, fail_chunk, chunk_delay_ms, part_delay_ms, exit_after_publish, exit_after_upload"
                    )));
                }
            }
        }
        Ok(plan)
    }

    /// A fresh plan from the environment (for one run), if [`FAULTS_ENV`] is set.
    pub fn from_env() -> Result<Option<Arc<FaultPlan>>, FaultPlanError> {
        match std::env::var(FAULTS_ENV) {
            Ok(text) => Ok(Some(Arc::new(FaultPlan::parse(&text)?))),
            Err(_) => Ok(None),
        }
    }

    /// Exits the process if `published` sinks are what the plan stops after.
    pub fn after_publish(&self, published: usize) {
        if self.exit_after_publish == Some(published) {
            eprintln!("{FAULTS_ENV}: exiting after {published} published sink(s)");
            std::process::exit(137);
        }
    }

    /// Exits the process if `put` objects of a remote output are what the plan stops after.
    pub fn after_upload(&self, put: usize) {
        if self.exit_after_upload == Some(put) {
            eprintln!("{FAULTS_ENV}: exiting after {put} uploaded object(s)");
            std::process::exit(137);
        }
    }

    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        unit_f64(mix64(self.seed ^ mix64(n)))
    }

    fn read_fails(&self) -> bool {
        self.armed.load(Ordering::Relaxed) && self.read_rate > 0.0 && self.draw() < self.read_rate
    }

    /// The error for a write of `chunk`'s part file, if one is to fail now.
    pub fn write_fault(&self, chunk: usize) -> Option<std::io::Error> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        let fail = self.fail_chunk == Some(chunk)
            || (self.write_rate > 0.0 && self.draw() < self.write_rate);
        fail.then(|| {
            self.writes_failed.fetch_add(1, Ordering::Relaxed);
            std::io::Error::other(format!("injected write failure ({FAULTS_ENV})"))
        })
    }
}

/// An object store whose reads fail at the plan's rate.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<FaultPlan>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: Arc<FaultPlan>) -> Self {
        FaultyStore { inner, plan }
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreResult<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &StorePath, options: GetOptions) -> StoreResult<GetResult> {
        if self.plan.read_fails() {
            self.plan.reads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(datafusion::object_store::Error::Generic {
                store: "fault-injection",
                source: format!("injected read failure of {location} ({FAULTS_ENV})").into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<StorePath>>,
    ) -> BoxStream<'static, StoreResult<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&StorePath>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&StorePath>) -> StoreResult<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> StoreResult<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_draw_at_their_rate() {
        let p = FaultPlan::parse("read=0.1, write=0.25,seed=7,fail_chunk=3").unwrap();
        assert_eq!(
            (p.read_rate, p.write_rate, p.fail_chunk),
            (0.1, 0.25, Some(3))
        );
        assert!(
            FaultPlan::parse("reed=1")
                .unwrap_err()
                .to_string()
                .contains("unknown key 'reed'")
        );
        assert!(p.write_fault(3).is_none(), "not armed yet");
        p.arm();
        assert!(p.write_fault(3).is_some());
        let fails = (0..10_000).filter(|_| p.read_fails()).count();
        assert!((800..1200).contains(&fails), "{fails} of 10000 at rate 0.1");
    }
}
