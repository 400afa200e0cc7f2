//! The local filesystem, confined to a set of root directories (SECURITY.md, "What a submitted
//! pipeline may touch").
//!
//! A submitted pipeline's source may be a glob or directory inside a root, yet a file listed under
//! it can be a symlink (or lie in a symlinked directory) that leads out. DataFusion lists and reads
//! local files through the `file://` object store, so for a confined run that store is this one:
//! every object it lists, reads or writes must have its canonical path (symlinks resolved) inside a
//! root, else the operation fails naming the file. The check is made at each operation, on the
//! path the operation then uses.

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The canonical form of `path` when it lies inside one of `roots` (canonical already). The
/// longest existing prefix is resolved (symlinks followed), the rest appended: the rest may hold
/// no `..`, so nothing that does not exist yet can lead out either. A dangling symlink is refused.
pub fn canonical_within(path: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        rest.push(existing.file_name()?.to_os_string());
        if !existing.pop() {
            return None;
        }
    }
    if rest.iter().any(|n| n == "..") {
        return None;
    }
    let mut canonical = existing.canonicalize().ok()?;
    for n in rest.into_iter().rev() {
        canonical.push(n);
    }
    roots
        .iter()
        .any(|r| canonical.starts_with(r))
        .then_some(canonical)
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConfinedLocalStore {
    inner: LocalFileSystem,
    roots: Arc<Vec<PathBuf>>,
}

impl ConfinedLocalStore {
    /// `roots` must be canonical.
    pub fn new(roots: Vec<PathBuf>) -> ConfinedLocalStore {
        ConfinedLocalStore {
            inner: LocalFileSystem::new(),
            roots: Arc::new(roots),
        }
    }

    fn check(&self, location: &ObjectPath) -> Result<()> {
        check(&self.roots, location)
    }
}

fn check(roots: &[PathBuf], location: &ObjectPath) -> Result<()> {
    let path = Path::new("/").join(location.as_ref());
    match canonical_within(&path, roots) {
        Some(_) => Ok(()),
        None => Err(object_store::Error::PermissionDenied {
            path: path.display().to_string(),
            source: format!(
                "{} is outside the server's allowed roots once symlinks are resolved ({}); a \
                 source may not list or read files that lead out of them (SECURITY.md)",
                path.display(),
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into(),
        }),
    }
}

impl std::fmt::Display for ConfinedLocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfinedLocalStore({} roots)", self.roots.len())
    }
}

#[async_trait]
impl ObjectStore for ConfinedLocalStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<ObjectPath>>,
    ) -> BoxStream<'static, Result<ObjectPath>> {
        let roots = self.roots.clone();
        let checked = locations
            .map(move |l| l.and_then(|p| check(&roots, &p).map(|_| p)))
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, Result<ObjectMeta>> {
        let roots = self.roots.clone();
        self.inner
            .list(prefix)
            .map(move |m| m.and_then(|meta| check(&roots, &meta.location).map(|_| meta)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        for meta in &listed.objects {
            self.check(&meta.location)?;
        }
        for dir in &listed.common_prefixes {
            self.check(dir)?;
        }
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn files_that_lead_out_of_the_roots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("data/a.csv"), "x\n1\n").unwrap();
        std::fs::write(outside.join("secret.csv"), "x\n42\n").unwrap();
        let store = ConfinedLocalStore::new(vec![root.clone()]);
        let prefix = ObjectPath::from_filesystem_path(root.join("data")).unwrap();
        let listed: Vec<ObjectMeta> = store.list(Some(&prefix)).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        let a = ObjectPath::from_filesystem_path(root.join("data/a.csv")).unwrap();
        assert!(store.get(&a).await.is_ok());
        // A symlinked file inside the listed directory: the listing fails naming it.
        std::os::unix::fs::symlink(outside.join("secret.csv"), root.join("data/b.csv")).unwrap();
        let e = store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.csv") && e.contains("outside"), "{e}");
        let b = ObjectPath::from(format!("{}/data/b.csv", root.display()).trim_start_matches('/'));
        assert!(store.get(&b).await.is_err());
        assert!(
            canonical_within(&root.join("data/new.csv"), std::slice::from_ref(&root)).is_some()
        );
        assert!(canonical_within(&root.join("x/../../outside"), &[root]).is_none());
    }
}
