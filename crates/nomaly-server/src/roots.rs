//! The directories a server may read pipelines from and read and write data in (`--allow-root`).
//! A path is inside a root when its canonical form (symlinks resolved, `..` gone) starts with the
//! root's canonical form, so neither `..` nor a symlink leads out.

use crate::error::{Result, ServerError};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
}

impl AllowedRoots {
    /// Canonicalises the roots; a root that does not exist is a configuration error.
    pub fn new(roots: &[PathBuf]) -> Result<AllowedRoots> {
        let roots = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|e| {
                    ServerError::Config(format!(
                        "--allow-root {}: {e}; give an existing directory",
                        r.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AllowedRoots { roots })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The first root: where TOML text submitted without a `base_dir` is resolved.
    pub fn first(&self) -> &Path {
        &self.roots[0]
    }

    /// The canonical form of `path` if it lies inside a root. A path that does not exist yet
    /// (an output) is checked through its nearest existing ancestor.
    pub fn check(&self, path: &Path, what: &str) -> Result<PathBuf> {
        let refuse = || {
            ServerError::Forbidden(format!(
                "{what} {} is outside the server's allowed roots ({}); move it under one, or \
                 start the server with --allow-root for its directory",
                path.display(),
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        if !path.is_absolute() {
            return Err(refuse());
        }
        // Resolve the longest existing prefix, then append the rest (which holds no `..`).
        let mut existing = path.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                return Err(refuse());
            };
            rest.push(name);
            if !existing.pop() {
                return Err(refuse());
            }
        }
        if rest.iter().any(|n| n == "..") {
            return Err(refuse());
        }
        let mut canonical = existing.canonicalize().map_err(|_| refuse())?;
        for n in rest.into_iter().rev() {
            canonical.push(n);
        }
        if self.roots.iter().any(|r| canonical.starts_with(r)) {
            Ok(canonical)
        } else {
            Err(refuse())
        }
    }

    /// Checks a source location: a local path (glob characters cut off) must be inside a root;
    /// object-store and HTTP URLs are not paths on this machine and pass.
    pub fn check_location(&self, location: &str, what: &str) -> Result<()> {
        if let Some((scheme, rest)) = location.split_once("://") {
            if scheme != "file" {
                return Ok(());
            }
            return self.check_location(rest, what);
        }
        let cut = location
            .find(['*', '?', '[', '{'])
            .unwrap_or(location.len());
        let fixed = &location[..cut];
        let path = if cut < location.len() {
            Path::new(fixed)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        } else {
            PathBuf::from(fixed)
        };
        self.check(&path, what).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_symlinks_do_not_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("p.toml"), "x").unwrap();
        std::fs::write(root.join("sub/p.toml"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = AllowedRoots::new(std::slice::from_ref(&root)).unwrap();
        assert!(roots.check(&root.join("sub/p.toml"), "pipeline").is_ok());
        assert!(roots.check(&root.join("sub/new/out"), "output").is_ok());
        let e = roots
            .check(&root.join("sub/../../outside/p.toml"), "pipeline")
            .unwrap_err();
        assert_eq!(e.status(), 403);
        assert!(
            e.to_string().contains("outside the server's allowed roots"),
            "{e}"
        );
        #[cfg(unix)]
        assert!(roots.check(&root.join("link/p.toml"), "pipeline").is_err());
        assert!(
            roots
                .check(&root.join("nope/../../outside"), "output")
                .is_err()
        );
        assert!(roots.check(Path::new("relative.toml"), "pipeline").is_err());
        assert!(
            roots
                .check_location("s3://bucket/x/*.parquet", "input")
                .is_ok()
        );
        let glob = format!("{}/sub/*.parquet", root.display());
        assert!(roots.check_location(&glob, "input").is_ok());
        let out = format!("{}/*.parquet", outside.display());
        assert!(roots.check_location(&out, "input").is_err());
    }
}
