//! What a submitted pipeline may touch on this server (SECURITY.md): the directories it may read
//! pipelines from and read and write data in (`--allow-root`), the remote locations
//! (`--allow-location`) and environment variables (`--allow-env`) it may name, and the parsing
//! and compiling of a submission within those rules. A path is inside a root when its canonical
//! form (symlinks resolved, `..` gone) starts with the root's canonical form, so neither `..` nor
//! a symlink leads out.

use crate::error::{Result, ServerError};
use crate::server::Server;
use nomaly_pipeline::RunRequest;
use nomaly_pipeline::Sandbox;
use nomaly_pipeline::spec::NotifySpec;
use nomaly_pipeline::{CompiledPipeline, PipelineError, PipelineFile, compile_in};
use std::path::{Path, PathBuf};

/// The server's rules for what a submitted pipeline may touch: the roots, and the
/// `--allow-location` and `--allow-env` patterns. The checks themselves live in
/// [`nomaly_pipeline::sandbox`], which compilation applies to every path a pipeline names.
#[derive(Debug, Clone)]
pub struct AllowedRoots {
    sandbox: Sandbox,
}

impl AllowedRoots {
    /// Canonicalises the roots; a root that does not exist is a configuration error. No remote
    /// location and no environment variable is allowed.
    pub fn new(roots: &[PathBuf]) -> Result<AllowedRoots> {
        Self::with_rules(roots, &[], &[])
    }

    /// The roots with `--allow-location` and `--allow-env` patterns.
    pub fn with_rules(
        roots: &[PathBuf],
        locations: &[String],
        env: &[String],
    ) -> Result<AllowedRoots> {
        let sandbox = Sandbox::confined(roots, locations, env)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(AllowedRoots { sandbox })
    }

    /// The sandbox submitted pipelines are compiled in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn roots(&self) -> &[PathBuf] {
        self.sandbox.roots()
    }

    /// The first root: where TOML text submitted without a `base_dir` is resolved.
    pub fn first(&self) -> &Path {
        &self.roots()[0]
    }

    /// The canonical form of `path` if it lies inside a root. A path that does not exist yet
    /// (an output) is checked through its nearest existing ancestor.
    pub fn check(&self, path: &Path, what: &str) -> Result<PathBuf> {
        self.sandbox
            .path(path, what)
            .map_err(|e| ServerError::Forbidden(e.to_string()))
    }

    /// Checks a source location: a local path (glob characters cut off) must be inside a root;
    /// an object-store or HTTP URL must match an `--allow-location` pattern.
    pub fn check_location(&self, location: &str, what: &str) -> Result<()> {
        self.sandbox
            .location(location, what)
            .map(|_| ())
            .map_err(|e| ServerError::Forbidden(e.to_string()))
    }
}

/// A pipeline that does not compile is a bad request (400); one that names something the
/// sandbox refuses is forbidden (403).
fn pipeline_error(e: PipelineError) -> ServerError {
    match e {
        PipelineError::Refused { .. } => ServerError::Forbidden(e.user_message()),
        other => ServerError::BadRequest(other.user_message()),
    }
}

impl Server {
    pub(crate) fn parse(
        &self,
        path: &Path,
        text: &str,
        overrides: &[String],
        request: &RunRequest,
    ) -> Result<PipelineFile> {
        let sandbox = self.inner.config.roots.sandbox();
        PipelineFile::parse(path, text, overrides, &|name| sandbox.env(name), request)
            .map_err(pipeline_error)
    }

    /// Parses and compiles within the server's sandbox (every path inside the roots, remote
    /// locations and `${VAR}` only where allowed: SECURITY.md), and refuses command
    /// notifications unless allowed.
    pub(crate) fn compile_checked(
        &self,
        path: &Path,
        text: &str,
        overrides: &[String],
        request: &RunRequest,
    ) -> Result<CompiledPipeline> {
        let file = self.parse(path, text, overrides, request)?;
        let compiled =
            compile_in(file, self.inner.config.roots.sandbox()).map_err(pipeline_error)?;
        if !self.inner.config.allow_notify_commands
            && compiled
                .notifications
                .iter()
                .any(|n| matches!(n, NotifySpec::Command { .. }))
        {
            return Err(ServerError::Forbidden(
                "[[notify]] type = \"command\" runs shell commands, which this server does not \
                 allow; use type = \"webhook\" or \"file\", or start the server with \
                 --allow-notify-commands"
                    .to_string(),
            ));
        }
        Ok(compiled)
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
                .is_err()
        );
        let listed = AllowedRoots::with_rules(
            std::slice::from_ref(&root),
            &["s3://bucket/*".to_string()],
            &[],
        )
        .unwrap();
        assert!(
            listed
                .check_location("s3://bucket/x/*.parquet", "input")
                .is_ok()
        );
        let glob = format!("{}/sub/*.parquet", root.display());
        assert!(roots.check_location(&glob, "input").is_ok());
        let out = format!("{}/*.parquet", outside.display());
        assert!(roots.check_location(&out, "input").is_err());
    }
}
