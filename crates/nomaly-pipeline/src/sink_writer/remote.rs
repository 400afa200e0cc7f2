//! Outputs in an object store (`s3://`, `gs://`, `az://`).
//!
//! A run stages a remote output on local disk as it does a local one (its directory is the
//! output's *mirror*, under `.nomaly-outputs/` beside the pipeline file), commits chunk by chunk
//! and publishes the mirror; then [`upload`] copies it to the output prefix:
//!
//! 1. the old run's marker `_SUCCESS` is deleted (that run is no longer published);
//! 2. every file of the mirror is put under the prefix (files above 8 MiB as multipart uploads);
//! 3. objects of the old run that the new one did not write are deleted;
//! 4. the marker `_SUCCESS` is put: the list of the run's objects with their sizes.
//!
//! The reader contract (README, "Outputs in an object store"): a prefix is a published output
//! while `_SUCCESS` exists, and its files are exactly those `_SUCCESS` lists. A reader that
//! honours it sees the previous run, nothing, or the new run, never a mixture; a plain listing
//! sees objects of both while step 2 or 3 runs. An object put is atomic in these stores, so the
//! marker is either the old run's, absent or the new run's.
//!
//! A crash during the upload leaves the mirror published locally without `.nomaly-uploaded`;
//! the next `nomaly run` or `resume` of the pipeline uploads it again (puts are idempotent) before
//! anything else. Once the marker is up, the mirror's part files are removed: the run directory
//! (`_nomaly/`) and the report stay, so `resume` still knows the run is complete.

use crate::error::{PipelineError, Result};
use crate::spec::WriteMode;
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use futures::TryStreamExt;
use nomaly_engine::object_stores::{RemoteStore, build_remote_store, root_message};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The marker of a published output in an object store.
pub const MARKER: &str = "_SUCCESS";
/// In a mirror: its upload finished (the marker is up).
const UPLOADED: &str = ".nomaly-uploaded";
/// Files above this go up as multipart uploads of parts this size.
const PART_BYTES: usize = 8 << 20;
/// Uploads in flight at once within one multipart upload.
const PARTS_IN_FLIGHT: usize = 4;

/// An output in an object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// `scheme://bucket/path`, without a trailing slash.
    pub url: String,
}

/// `_SUCCESS`: what a published output holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub format_version: u32,
    pub published_at_unix_ms: u64,
    /// Every object of the run, relative to the prefix, sorted.
    pub files: Vec<MarkerFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerFile {
    pub path: String,
    pub bytes: u64,
}

impl RemoteOutput {
    /// A sink URL as written: an object store Nomaly can write (not `http(s)://`), with a
    /// bucket and a path below it.
    pub fn parse(url: &str) -> std::result::Result<RemoteOutput, String> {
        let url = url.trim_end_matches('/');
        match RemoteStore::of(url) {
            None => Err(format!(
                "{url}: not a location Nomaly writes; use a local directory or s3://, gs://, az:// (abfs://) URL"
            )),
            Some(RemoteStore::Http) => Err(format!(
                "{url}: http(s) locations are read-only; write to s3://, gs:// or az://"
            )),
            Some(_) => {
                let (_, rest) = url.split_once("://").unwrap_or_default();
                let key = rest.split_once('/').map(|(_, k)| k).unwrap_or("");
                if key.is_empty()
                    || key
                        .split('/')
                        .any(|s| s.is_empty() || s == "." || s == "..")
                {
                    return Err(format!(
                        "{url}: name a prefix below the bucket, e.g. s3://bucket/scored (the output replaces everything under it)"
                    ));
                }
                Ok(RemoteOutput { url: url.into() })
            }
        }
    }

    /// The local mirror of this output under `root`: `root/<scheme>/<bucket>/<path>`.
    pub fn mirror_under(&self, root: &Path) -> PathBuf {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("remote", &self.url));
        let mut dir = root.join(scheme);
        for segment in rest.split('/') {
            dir.push(segment);
        }
        dir
    }

    fn error(&self, reason: String) -> PipelineError {
        PipelineError::Output {
            path: PathBuf::from(&self.url),
            reason,
        }
    }

    /// Where a cluster's executors put the parts while the run lasts: a prefix beside the
    /// output's, `.<name>.nomaly-staging` (as a local output's staging directory).
    pub fn staging_url(&self) -> String {
        self.sibling("staging")
    }

    /// `<parent>/.<name>.nomaly-<role>`: a prefix or object of the run's beside the output, as
    /// a local output's staging directory and lock file are beside it.
    fn sibling(&self, role: &str) -> String {
        match self.url.rsplit_once('/') {
            Some((parent, name)) => format!("{parent}/.{name}.nomaly-{role}"),
            None => format!("{}.nomaly-{role}", self.url),
        }
    }

    /// Where a run on a cluster puts its work directory (the detect input written once), which
    /// the executors read: beside the output, as the staging prefix is.
    pub fn work_url(&self) -> String {
        self.sibling("work")
    }

    /// The object that locks the output against runs on other machines
    /// (`crate::output_lock::RemoteLock`).
    pub fn lock_url(&self) -> String {
        self.sibling("lock")
    }

    /// The store and the prefix inside it.
    fn open(&self) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
        open_prefix(&self.url).map_err(|e| self.error(e))
    }

    /// The objects under `prefix`: their names relative to it, their locations and sizes, sorted.
    async fn list(
        &self,
        store: &dyn ObjectStore,
        prefix: &StorePath,
    ) -> Result<Vec<(String, StorePath, u64)>> {
        list_under(store, prefix)
            .await
            .map_err(|e| self.error(format!("cannot list {prefix}: {e}")))
    }

    /// What the staging prefix holds: each object's name (relative) and size.
    pub async fn staged_sizes(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let (store, staging) = open_prefix(&self.staging_url()).map_err(|e| self.error(e))?;
        let listed = self.list(store.as_ref(), &staging).await?;
        Ok(listed.into_iter().map(|(n, _, size)| (n, size)).collect())
    }

    /// Before any work: the store is reachable with this process's settings, and what the prefix
    /// holds may be replaced under `mode`.
    pub async fn check_writable(&self, mode: WriteMode) -> Result<()> {
        let (store, prefix) = self.open()?;
        let existing = self.list(store.as_ref(), &prefix).await?;
        if existing.is_empty() {
            return Ok(());
        }
        match mode {
            WriteMode::ErrorIfExists => Err(self.error(format!(
                "already holds {} objects, and mode = \"error_if_exists\"; remove them, choose another prefix, or set mode = \"overwrite\"",
                existing.len()
            ))),
            WriteMode::Overwrite => {
                let ours = existing
                    .iter()
                    .any(|(n, ..)| n == MARKER || n == super::REPORT_FILE);
                if ours {
                    Ok(())
                } else {
                    Err(self.error(format!(
                        "holds {} objects Nomaly did not write (no {MARKER}); overwrite only replaces earlier Nomaly outputs — choose an empty or new prefix",
                        existing.len()
                    )))
                }
            }
        }
    }

    /// True when `mirror` is a published run whose upload has not finished.
    pub fn needs_upload(mirror: &Path) -> bool {
        mirror.join(super::REPORT_FILE).is_file() && !mirror.join(UPLOADED).exists()
    }

    /// Uploads the published `mirror` (see the module docs) and returns the marker it put.
    /// `staged` are the committed parts executors put in [`staging_url`](Self::staging_url)
    /// (relative names): they are copied inside the store. `after_put` is called after each
    /// object (fault injection).
    pub async fn upload(
        &self,
        mirror: &Path,
        staged: &[String],
        after_put: &(dyn Fn(usize) + Sync),
    ) -> Result<Marker> {
        let (store, prefix) = self.open()?;
        let (_, staging) = open_prefix(&self.staging_url()).map_err(|e| self.error(e))?;
        let existing = self.list(store.as_ref(), &prefix).await?;
        let at = |name: &str| name.split('/').fold(prefix.clone(), |p, s| p.join(s));
        let failed = |name: &str, e: &(dyn std::error::Error + 'static)| {
            self.error(format!("{name}: {}", root_message(e)))
        };
        if existing.iter().any(|(n, ..)| n == MARKER) {
            store
                .delete(&at(MARKER))
                .await
                .map_err(|e| failed(MARKER, &e))?;
        }
        let mut files = Vec::new();
        for (name, path) in mirror_files(mirror)? {
            let bytes = put_file(store.as_ref(), &at(&name), &path)
                .await
                .map_err(|e| self.error(format!("{name}: {e}")))?;
            files.push(MarkerFile { path: name, bytes });
            after_put(files.len());
        }
        for name in staged {
            let from = name.split('/').fold(staging.clone(), |p, s| p.join(s));
            store
                .copy(&from, &at(name))
                .await
                .map_err(|e| failed(name, &e))?;
            let bytes = store
                .head(&at(name))
                .await
                .map_err(|e| failed(name, &e))?
                .size;
            files.push(MarkerFile {
                path: name.clone(),
                bytes,
            });
            after_put(files.len());
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for (stale, location, _) in existing
            .iter()
            .filter(|(n, ..)| n != MARKER && !files.iter().any(|f| &f.path == n))
        {
            store
                .delete(location)
                .await
                .map_err(|e| failed(stale, &e))?;
        }
        let marker = Marker {
            format_version: 1,
            published_at_unix_ms: crate::run_dir::now_ms(),
            files,
        };
        let body = serde_json::to_vec_pretty(&marker).expect("a marker is JSON");
        store
            .put(&at(MARKER), PutPayload::from(body))
            .await
            .map_err(|e| failed(MARKER, &e))?;
        super::write_atomic(&mirror.join(UPLOADED), self.url.as_bytes())?;
        remove_parts(mirror);
        for (name, location, _) in self.list(store.as_ref(), &staging).await? {
            store
                .delete(&location)
                .await
                .map_err(|e| failed(&name, &e))?;
        }
        Ok(marker)
    }
}

/// The objects under `prefix`: their names relative to it, their locations and sizes, sorted;
/// the error is the store's innermost message.
pub(crate) async fn list_under(
    store: &dyn ObjectStore,
    prefix: &StorePath,
) -> std::result::Result<Vec<(String, StorePath, u64)>, String> {
    let metas: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| root_message(&e))?;
    let mut names: Vec<(String, StorePath, u64)> = metas
        .into_iter()
        .filter_map(|m| {
            let name = m
                .location
                .prefix_match(prefix)?
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/");
            Some((name, m.location, m.size))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The store of `url` and the prefix inside it.
pub(crate) fn open_prefix(
    url: &str,
) -> std::result::Result<(Arc<dyn ObjectStore>, StorePath), String> {
    let built = build_remote_store(url)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "not an object-store URL".to_string())?;
    let key = url[built.root.as_str().trim_end_matches('/').len()..].trim_matches('/');
    Ok((built.store, StorePath::from(key)))
}

/// On an executor: puts each finished part (written under `scratch`) into `prefix` under its
/// name relative to `scratch`, and returns it as in place under the client's `staging`. A part's
/// bytes are the same on every attempt, so an attempt that puts it again changes nothing.
pub(super) async fn put_parts(
    staged: Vec<super::StagedPart>,
    scratch: &Path,
    prefix: &str,
    staging: &Path,
) -> Result<Vec<super::StagedPart>> {
    let failed = |reason: String| PipelineError::Output {
        path: PathBuf::from(prefix),
        reason,
    };
    let (store, base) = open_prefix(prefix).map_err(failed)?;
    let mut placed = Vec::with_capacity(staged.len());
    for mut part in staged {
        let rel = part
            .part
            .path
            .strip_prefix(scratch)
            .map_err(|_| {
                failed(format!(
                    "{} is outside {}",
                    part.part.path.display(),
                    scratch.display()
                ))
            })?
            .to_path_buf();
        let name: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        let location = name.iter().fold(base.clone(), |p, s| p.join(s.as_str()));
        let bytes = put_file(store.as_ref(), &location, &part.temp)
            .await
            .map_err(|e| failed(format!("{}: {e}", name.join("/"))))?;
        if bytes != part.part.bytes {
            return Err(failed(format!(
                "{}: put {bytes} bytes of {}",
                name.join("/"),
                part.part.bytes
            )));
        }
        let _ = std::fs::remove_file(&part.temp);
        part.part.path = staging.join(&rel);
        part.temp = part.part.path.clone();
        part.in_place = true;
        placed.push(part);
    }
    Ok(placed)
}

/// The files of a published mirror, relative to it and sorted; hidden files (temp names, the
/// upload mark) stay home.
pub(crate) fn mirror_files(mirror: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut dirs = vec![mirror.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| PipelineError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(mirror) {
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((name, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Puts one file: one request up to [`PART_BYTES`], a multipart upload above.
pub(crate) async fn put_file(
    store: &dyn ObjectStore,
    location: &StorePath,
    path: &Path,
) -> std::result::Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let describe = |e: &(dyn std::error::Error + 'static)| root_message(e);
    if size as usize <= PART_BYTES {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        store
            .put(location, PutPayload::from(bytes))
            .await
            .map_err(|e| describe(&e))?;
        return Ok(size);
    }
    let upload = store
        .put_multipart(location)
        .await
        .map_err(|e| describe(&e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buf = vec![0u8; PART_BYTES];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e.to_string());
            }
        };
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            return Err(describe(&e));
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(|e| describe(&e))?;
    Ok(size)
}

/// Removes a mirror's part files (anywhere below it, partition directories too) once they are up.
fn remove_parts(mirror: &Path) {
    if let Ok(files) = mirror_files(mirror) {
        for (name, path) in files {
            let file = name.rsplit('/').next().unwrap_or(&name);
            if file.starts_with("part-") {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_writable_store_and_a_prefix() {
        let ok = RemoteOutput::parse("s3://bucket/out/scored/").unwrap();
        assert_eq!(ok.url, "s3://bucket/out/scored");
        assert_eq!(
            ok.mirror_under(Path::new("/m")),
            Path::new("/m/s3/bucket/out/scored")
        );
        assert_eq!(ok.staging_url(), "s3://bucket/out/.scored.nomaly-staging");
        for (bad, says) in [
            ("https://host/out", "read-only"),
            ("s3://bucket", "below the bucket"),
            ("s3://bucket/", "below the bucket"),
            ("s3://bucket/a/../b", "below the bucket"),
            ("ftp://host/x", "not a location Nomaly writes"),
        ] {
            let err = RemoteOutput::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_mirror_uploads_its_visible_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        std::fs::create_dir_all(m.join("_nomaly")).unwrap();
        std::fs::create_dir_all(m.join("k=a")).unwrap();
        for f in [
            "part-00001.csv",
            "part-00000.csv",
            "k=a/part-00000.csv",
            "_nomaly/run.json",
            ".part-00002.x.tmp",
            UPLOADED,
        ] {
            std::fs::write(m.join(f), b"x").unwrap();
        }
        let names: Vec<String> = mirror_files(m).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "_nomaly/run.json",
                "k=a/part-00000.csv",
                "part-00000.csv",
                "part-00001.csv"
            ]
        );
        remove_parts(m);
        let left: Vec<String> = mirror_files(m).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(left, ["_nomaly/run.json"]);
    }
}
