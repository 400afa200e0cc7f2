//! One writer per remote output, across machines: the lock is an object in the store,
//! `<parent>/.<name>.nomaly-lock` beside the output prefix.
//!
//! - A run creates it with a conditional put (`If-None-Match: *` on S3, the stores' equivalents
//!   elsewhere): of two runs on two machines, exactly one creates it; the other is refused,
//!   told who holds it.
//! - The holder rewrites it every [`REFRESH`] with a put conditional on its own last version, so
//!   a lock whose holder died (no flock here to release it) is seen as stale once it has not been
//!   refreshed for [`STALE_AFTER`], and the next run takes it over, again by a conditional put on
//!   the version it read: of two runs taking over, one wins.
//! - The holder deletes it when the run has published (or kept) its output.
//! - A lock left by a run of this machine whose process is gone (SIGKILL, a crash: `resume` right
//!   after) is taken over at once: the lock names its machine by the kernel's boot id and pid
//!   namespace, within which a pid that does not exist is a run that ended.
//!
//! A store that cannot put conditionally (an S3-compatible server configured without it) runs
//! unlocked across machines, with a warning; the local lock beside the mirror still holds.

use super::{Holder, describe_holder, hostname};
use crate::error::{PipelineError, Result};
use crate::sink_writer::{RemoteOutput, open_prefix};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use nomaly_engine::object_stores::root_message;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the holder rewrites its lock.
pub const REFRESH: Duration = Duration::from_secs(30);
/// A lock not rewritten for this long belongs to a run that is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// A held lock on a remote output; [`RemoteLock::release`] deletes it.
#[derive(Debug)]
pub struct RemoteLock {
    store: Arc<dyn ObjectStore>,
    location: StorePath,
    refresher: tokio::task::JoinHandle<()>,
}

/// What a lock object holds: who, where, and when it was last rewritten.
fn record(holder: &Holder, started: u128) -> String {
    format!(
        "pid={}\nhost={}\nmachine={}\nrun={}\nstarted_unix_ms={started}\nrefreshed_unix_ms={}\n",
        std::process::id(),
        hostname(),
        machine(),
        holder.run.replace(['\n', '\r'], " "),
        now_ms()
    )
}

/// This kernel's boot and this process's pid namespace: where a pid means one process.
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pids = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}/{pids}", boot.trim())
}

/// A field of a lock's text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// The lock was left by a process of this machine that no longer exists.
fn left_by_a_dead_process_here(text: &str) -> bool {
    let here = machine();
    let pid = field(text, "pid").and_then(|p| p.parse::<u32>().ok());
    !here.starts_with('/')
        && field(text, "machine") == Some(here.as_str())
        && pid.is_some_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// When a lock's text says it was last rewritten.
fn refreshed_ms(text: &str) -> Option<u128> {
    field(text, "refreshed_unix_ms").and_then(|v| v.parse().ok())
}

impl RemoteLock {
    /// Takes the lock of `output`, or refuses naming its holder. `Ok(None)`: the store cannot put
    /// conditionally, so the run goes on unlocked across machines (the caller warns).
    pub async fn acquire(output: &RemoteOutput, holder: &Holder) -> Result<Option<RemoteLock>> {
        let url = output.lock_url();
        let failed = |reason: String| PipelineError::Output {
            path: PathBuf::from(&output.url),
            reason: format!("its lock {url}: {reason}"),
        };
        let (store, location) = open_prefix(&url).map_err(failed)?;
        let started = now_ms();
        let create = PutOptions::from(PutMode::Create);
        let put = store
            .put_opts(&location, record(holder, started).into(), create)
            .await;
        let version = match put {
            Ok(done) => UpdateVersion::from(done),
            Err(StoreError::NotImplemented { .. }) => return Ok(None),
            Err(StoreError::AlreadyExists { .. }) => {
                let held = store
                    .get(&location)
                    .await
                    .map_err(|e| failed(root_message(&e)))?;
                let meta = held.meta.clone();
                let bytes = held.bytes().await.map_err(|e| failed(root_message(&e)))?;
                let text = String::from_utf8_lossy(&bytes).to_string();
                let fresh = refreshed_ms(&text)
                    .is_some_and(|t| now_ms().saturating_sub(t) < STALE_AFTER.as_millis());
                let locked = || PipelineError::OutputLocked {
                    output: PathBuf::from(&output.url),
                    holder: describe_holder(&text),
                };
                if fresh && !left_by_a_dead_process_here(&text) {
                    return Err(locked());
                }
                let stale = UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                };
                let take = PutOptions::from(PutMode::Update(stale));
                match store
                    .put_opts(&location, record(holder, started).into(), take)
                    .await
                {
                    Ok(done) => {
                        tracing::warn!(lock = %url, "took over a stale lock: {}", describe_holder(&text));
                        UpdateVersion::from(done)
                    }
                    Err(StoreError::Precondition { .. }) => return Err(locked()),
                    Err(e) => return Err(failed(root_message(&e))),
                }
            }
            Err(e) => return Err(failed(root_message(&e))),
        };
        let refresher = tokio::spawn(refresh(
            Arc::clone(&store),
            location.clone(),
            version,
            holder.clone(),
            started,
        ));
        Ok(Some(RemoteLock {
            store,
            location,
            refresher,
        }))
    }

    /// Stops refreshing and deletes the lock.
    pub async fn release(self) {
        self.refresher.abort();
        if let Err(e) = self.store.delete(&self.location).await {
            tracing::warn!(lock = %self.location, "could not delete the lock: {}", root_message(&e));
        }
    }
}

/// Rewrites the lock every [`REFRESH`], each put conditional on the last one's version; stops
/// (saying so) if another run has taken the lock over.
async fn refresh(
    store: Arc<dyn ObjectStore>,
    location: StorePath,
    mut version: UpdateVersion,
    holder: Holder,
    started: u128,
) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let opts = PutOptions::from(PutMode::Update(version.clone()));
        match store
            .put_opts(&location, record(&holder, started).into(), opts)
            .await
        {
            Ok(done) => version = UpdateVersion::from(done),
            Err(StoreError::Precondition { .. }) => {
                tracing::error!(lock = %location, "another run took this output's lock over: the two runs may now both write it");
                return;
            }
            Err(e) => {
                tracing::warn!(lock = %location, "could not refresh the lock: {}", root_message(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_says_who_and_when() {
        let text = record(
            &Holder {
                run: "nomaly run p.toml\nx".into(),
            },
            5,
        );
        assert!(text.contains("run=nomaly run p.toml x\n"), "{text}");
        assert!(text.contains("started_unix_ms=5\n"), "{text}");
        assert!(refreshed_ms(&text).is_some_and(|t| t + 10_000 > now_ms()));
        assert_eq!(refreshed_ms("pid=1\n"), None);
        assert!(describe_holder(&text).contains("(nomaly run p.toml x)"));
        // Our own lock is not a dead process's; a pid that does not exist here is.
        assert!(!left_by_a_dead_process_here(&text));
        let dead = text.replace(
            &format!("pid={}\n", std::process::id()),
            &format!("pid={}\n", u32::MAX - 1),
        );
        assert!(left_by_a_dead_process_here(&dead), "{dead}");
        let elsewhere = dead.replace(&format!("machine={}", machine()), "machine=other/boot");
        assert!(!left_by_a_dead_process_here(&elsewhere));
    }
}
