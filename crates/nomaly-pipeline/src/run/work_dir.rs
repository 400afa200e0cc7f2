//! The run's work directory: the detect input written once (materialized, or in segment
//! buckets) and chunked from there.
//!
//! It is written on the client, beside the first sink (`.<name>.nomaly-work/`). On a cluster
//! whose first sink is in an object store, the executors that read the chunks are other hosts
//! that see none of the client's disks: there the files, once written, are put into the store
//! beside the output (`<parent>/.<name>.nomaly-work/`) and the chunks name them there, so the
//! object store is the only thing client and executors share. A resume finds them there; the
//! run's publication (or its discarding) removes them.

use super::session::cluster_of;
use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result};
use crate::sink_writer::{files_under, list_under, open_prefix, put_file, sibling_dir};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::prelude::SessionContext;
use nomaly_engine::object_stores::root_message;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a run's detect input is written once and read back from.
#[derive(Debug, Clone)]
pub(crate) struct WorkDir {
    /// Where the files are written (and, without `remote`, read).
    pub local: PathBuf,
    /// The object-store prefix they are put into and read from, on a cluster with a remote
    /// first sink.
    remote: Option<String>,
}

impl WorkDir {
    /// The work directory of `p` run in the session `ctx`.
    pub fn of(ctx: &SessionContext, p: &CompiledPipeline) -> Result<WorkDir> {
        let on_cluster = cluster_of(ctx.state().config()).is_some();
        let remote = match (&p.sinks[0].remote, on_cluster) {
            (Some(output), true) => Some(output.work_url()),
            _ => None,
        };
        if let Some(url) = &remote {
            nomaly_engine::register_object_store(ctx, url)
                .map_err(|e| failed(url, e.to_string()))?;
        }
        Ok(WorkDir {
            local: sibling_dir(&p.sinks[0].path, "work"),
            remote,
        })
    }

    /// Every place `p`'s work directory may be, whichever engine ran it: to remove it.
    pub fn wherever(p: &CompiledPipeline) -> WorkDir {
        WorkDir {
            local: sibling_dir(&p.sinks[0].path, "work"),
            remote: p.sinks[0].remote.as_ref().map(|r| r.work_url()),
        }
    }

    /// Where the chunks read the files: a directory or a prefix, ending in `/`.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(url) => format!("{url}/"),
            None => format!("{}/", self.local.display()),
        }
    }

    /// What error messages name.
    pub fn display(&self) -> String {
        self.location().trim_end_matches('/').to_string()
    }

    /// An empty work directory: what an earlier run left, here or in the store, is removed.
    pub async fn fresh(&self) -> Result<()> {
        self.remove().await?;
        std::fs::create_dir_all(&self.local).map_err(|source| PipelineError::Io {
            path: self.local.clone(),
            source,
        })
    }

    /// After the files are written: on a cluster, puts them into the store (a file at a time,
    /// large ones in parts) and removes the local copies.
    pub async fn share(&self) -> Result<()> {
        let Some(url) = &self.remote else {
            return Ok(());
        };
        let (store, prefix) = open_prefix(url).map_err(|e| failed(url, e))?;
        for (name, path) in files_under(&self.local)? {
            let at = name.split('/').fold(prefix.clone(), |p, s| p.join(s));
            put_file(store.as_ref(), &at, &path)
                .await
                .map_err(|e| failed(url, format!("{name}: {e}")))?;
        }
        let _ = std::fs::remove_dir_all(&self.local);
        Ok(())
    }

    /// Whether an unfinished run's files are still there.
    pub async fn exists(&self) -> Result<bool> {
        match &self.remote {
            Some(url) => Ok(!self.objects(url).await?.1.is_empty()),
            None => Ok(self.local.is_dir()),
        }
    }

    /// Whether any Parquet file was written (none when the input had no rows).
    pub async fn has_parquet(&self) -> Result<bool> {
        let is_parquet = |name: &str| name.ends_with(".parquet");
        match &self.remote {
            Some(url) => Ok(self
                .objects(url)
                .await?
                .1
                .iter()
                .any(|(n, ..)| is_parquet(n))),
            None => Ok(std::fs::read_dir(&self.local).is_ok_and(|mut it| {
                it.any(|e| e.is_ok_and(|e| is_parquet(&e.file_name().to_string_lossy())))
            })),
        }
    }

    /// Removes the files, here and in the store.
    pub async fn remove(&self) -> Result<()> {
        let _ = std::fs::remove_dir_all(&self.local);
        let Some(url) = &self.remote else {
            return Ok(());
        };
        let (store, objects) = self.objects(url).await?;
        for (name, location, _) in objects {
            store
                .delete(&location)
                .await
                .map_err(|e| failed(url, format!("{name}: {}", root_message(&e))))?;
        }
        Ok(())
    }

    /// The store, and the objects under the prefix (relative names, locations, sizes).
    async fn objects(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Vec<ListedObject>)> {
        let (store, prefix) = open_prefix(url).map_err(|e| failed(url, e))?;
        let listed = list_under(store.as_ref(), &prefix)
            .await
            .map_err(|e| failed(url, format!("cannot list it: {e}")))?;
        Ok((store, listed))
    }
}

/// An object's name relative to the prefix, its location and size.
type ListedObject = (String, StorePath, u64);

/// The work prefix could not be used.
fn failed(url: &str, reason: String) -> PipelineError {
    PipelineError::Output {
        path: Path::new(url).to_path_buf(),
        reason: format!("the run's work prefix: {reason}"),
    }
}
