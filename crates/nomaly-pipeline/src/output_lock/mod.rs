//! One writer per output: a run holds an exclusive lock on each of its outputs for its whole
//! life (SECURITY.md, "One writer per output").
//!
//! The lock is `flock(2)` on `.<name>.nomaly-lock` beside the output (where the staging
//! directory also lives), so the kernel releases it when the holder dies, however it dies: a lock
//! left by a dead process is taken over by the next run, never waited on. The file holds who
//! holds it (pid, host, run, start time) for the refusal message. It is removed on release; a
//! run that opened the file just before that would lock an unlinked file, so after locking, the
//! path must still name the locked file, else the run opens it again.

mod remote;

pub use remote::RemoteLock;

use crate::error::{PipelineError, Result};
use crate::sink_writer::{RemoteOutput, sibling_dir};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who holds (or asks for) an output.
#[derive(Debug, Clone)]
pub struct Holder {
    /// What the run is: "nomaly run p.toml", "served run 42".
    pub run: String,
}

/// The locks of a run's outputs; released when dropped (a remote output's lock object by
/// [`OutputLocks::release`], or else by a task spawned on drop).
#[derive(Debug)]
pub struct OutputLocks {
    held: Vec<(PathBuf, File)>,
    /// Remote outputs' lock objects ([`RemoteLock`]).
    remote: Vec<RemoteLock>,
    /// Directories made to hold a lock file, deepest last: removed on release if still empty
    /// (a refused or failed run leaves no trace).
    made: Vec<PathBuf>,
}

/// The lock file of `output`.
pub fn lock_path(output: &Path) -> PathBuf {
    sibling_dir(output, "lock")
}

impl OutputLocks {
    /// Locks every output (in path order), or fails on the first held by another run, naming it.
    pub fn acquire(outputs: &[&Path], holder: &Holder) -> Result<OutputLocks> {
        let mut sorted: Vec<&Path> = outputs.to_vec();
        sorted.sort();
        let mut locks = OutputLocks {
            held: Vec::new(),
            remote: Vec::new(),
            made: Vec::new(),
        };
        for output in sorted {
            let path = lock_path(output);
            locks.made.extend(make_parent(output, &path)?);
            let file = lock_one(output, &path, holder)?;
            locks.held.push((path, file));
        }
        Ok(locks)
    }
}

impl OutputLocks {
    /// Also locks each remote output in its store (against runs on other machines, whose local
    /// locks are elsewhere). Returns a warning per store that cannot lock.
    pub async fn lock_remote(
        &mut self,
        outputs: &[&RemoteOutput],
        holder: &Holder,
    ) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for output in outputs {
            match RemoteLock::acquire(output, holder).await? {
                Some(lock) => self.remote.push(lock),
                None => warnings.push(format!(
                    "{}: the store cannot put objects conditionally, so runs on other machines \
                     are not locked out of this output (runs on this machine are)",
                    output.url
                )),
            }
        }
        Ok(warnings)
    }

    /// Releases every lock, deleting the remote lock objects before returning.
    pub async fn release(mut self) {
        for lock in self.remote.drain(..) {
            lock.release().await;
        }
    }
}

impl Drop for OutputLocks {
    fn drop(&mut self) {
        // Remote locks not released by `release` (an early return): deleted by a task.
        if !self.remote.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            for lock in self.remote.drain(..) {
                runtime.spawn(lock.release());
            }
        }
        // Removed while still locked: a run that opens it from now on makes a new file.
        for (path, file) in self.held.drain(..) {
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
        for dir in self.made.drain(..).rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Makes the directory the lock file of `output` goes in; returns the directories it made. An
/// ancestor that is a file, or one that cannot be written, fails as the output would.
fn make_parent(output: &Path, lock: &Path) -> Result<Vec<PathBuf>> {
    let out = |reason: String| PipelineError::Output {
        path: output.to_path_buf(),
        reason,
    };
    let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Vec::new());
    };
    let missing: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    let existing = parent
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || a.exists())
        .unwrap_or(Path::new("."));
    if !existing.as_os_str().is_empty() && !existing.is_dir() {
        return Err(out(format!("{} is not a directory", existing.display())));
    }
    std::fs::create_dir_all(parent).map_err(|e| {
        out(format!(
            "cannot write into {}: {e}; choose a writable location",
            existing.display()
        ))
    })?;
    Ok(missing.into_iter().rev().collect())
}

fn lock_one(output: &Path, path: &Path, holder: &Holder) -> Result<File> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let unwritable = |e: std::io::Error| PipelineError::Output {
        path: output.to_path_buf(),
        reason: format!(
            "cannot write into {}: {e}; choose a writable location",
            path.parent().unwrap_or(Path::new(".")).display()
        ),
    };
    // A handful of tries covers a holder that releases (and removes the file) between our open
    // and our lock; a lock that stays held is refused at once.
    for _ in 0..16 {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(unwritable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(PipelineError::OutputLocked {
                    output: output.to_path_buf(),
                    holder: describe_holder(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            continue;
        }
        let record = format!(
            "pid={}\nhost={}\nrun={}\nstarted_unix_ms={}\n",
            std::process::id(),
            hostname(),
            holder.run.replace(['\n', '\r'], " "),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(record.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        return Ok(file);
    }
    Err(io(std::io::Error::other(
        "the lock file kept changing while it was being locked; try again",
    )))
}

/// "pid 123 on host h (nomaly run p.toml), started 5 s ago", from a lock file's text.
fn describe_holder(text: &str) -> String {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
    };
    let Some(pid) = field("pid") else {
        return "another run (it has not said who it is yet)".into();
    };
    let host = field("host").unwrap_or_else(|| "?".into());
    let run = field("run").unwrap_or_else(|| "?".into());
    let age = field("started_unix_ms")
        .and_then(|s| s.parse::<u128>().ok())
        .and_then(|t| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_millis();
            Some(format!(", started {} s ago", now.saturating_sub(t) / 1000))
        })
        .unwrap_or_default();
    format!("pid {pid} on host {host} ({run}){age}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_released_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = Holder {
            run: "nomaly run a.toml".into(),
        };
        let held = OutputLocks::acquire(&[&out], &first).unwrap();
        let e = OutputLocks::acquire(
            &[&out],
            &Holder {
                run: "nomaly run b.toml".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("(nomaly run a.toml)"),
            "{msg}"
        );
        drop(held);
        assert!(
            !lock_path(&out).exists(),
            "the lock file is removed on release"
        );
        let again = OutputLocks::acquire(&[&out], &first).unwrap();
        drop(again);
    }

    #[test]
    fn directories_made_for_the_lock_go_with_it_and_files_in_the_way_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/out");
        let locks = OutputLocks::acquire(&[&out], &Holder { run: "r".into() }).unwrap();
        assert!(lock_path(&out).exists());
        drop(locks);
        assert!(
            !dir.path().join("a").exists(),
            "the made directories are removed"
        );
        std::fs::write(dir.path().join("f.txt"), "x").unwrap();
        let under_file = dir.path().join("f.txt/out");
        let e = OutputLocks::acquire(&[&under_file], &Holder { run: "r".into() }).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("f.txt is not a directory"), "{e}");
    }

    #[test]
    fn a_lock_file_left_without_a_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // What a SIGKILLed holder leaves: the file, with no lock on it.
        std::fs::write(
            lock_path(&out),
            "pid=1\nhost=x\nrun=dead\nstarted_unix_ms=0\n",
        )
        .unwrap();
        let locks = OutputLocks::acquire(&[&out], &Holder { run: "next".into() }).unwrap();
        let text = std::fs::read_to_string(lock_path(&out)).unwrap();
        assert!(
            text.contains("run=next") && !text.contains("dead"),
            "{text}"
        );
        drop(locks);
    }
}
