//! The input fingerprint a run records (files, sizes, modification times, schemas) and the checks
//! a resume makes against it and against the pipeline as run.

use crate::chunk_plan::SourceReader;
use crate::error::Result;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One input file as it was when the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub path: String,
    pub size: u64,
    pub modified_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// One source's files and schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub name: String,
    pub location: String,
    pub schema: String,
    pub files: Vec<FileFingerprint>,
}

/// Lists each source's files (path order) with size, modification time and ETag, and its schema.
pub async fn fingerprint(
    ctx: &SessionContext,
    sources: &[SourceReader],
) -> Result<Vec<SourceFingerprint>> {
    let mut out = Vec::new();
    for s in sources {
        let files = s
            .list_objects(ctx)
            .await?
            .into_iter()
            .map(|m| FileFingerprint {
                path: m.location.to_string(),
                size: m.size,
                modified_unix_ms: m.last_modified.timestamp_millis(),
                e_tag: m.e_tag,
            })
            .collect();
        // Inferred, not taken from the session: `completed_run` compares from a bare session.
        // An HDF5 file's schema would take reading it whole; its size and mtime stand for it.
        let schema = if s.format == crate::spec::FileFormat::Hdf5 {
            "(hdf5)".to_string()
        } else {
            s.infer_schema(ctx)
                .await?
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(SourceFingerprint {
            name: s.name.clone(),
            location: s.location.clone(),
            schema,
            files,
        });
    }
    Ok(out)
}

/// Says what differs between the fingerprint a run started with and the input now.
pub fn fingerprint_change(
    before: &[SourceFingerprint],
    now: &[SourceFingerprint],
) -> Option<String> {
    for b in before {
        let Some(n) = now.iter().find(|n| n.name == b.name) else {
            return Some(format!("source '{}' is no longer in the pipeline", b.name));
        };
        if b.location != n.location {
            return Some(format!(
                "source '{}' now reads {} (was {})",
                b.name, n.location, b.location
            ));
        }
        if b.schema != n.schema {
            return Some(format!(
                "the schema of source '{}' changed: now [{}], was [{}]",
                b.name, n.schema, b.schema
            ));
        }
        let old: BTreeMap<&str, &FileFingerprint> =
            b.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let new: BTreeMap<&str, &FileFingerprint> =
            n.files.iter().map(|f| (f.path.as_str(), f)).collect();
        for (path, f) in &old {
            match new.get(path) {
                None => return Some(format!("input file /{path} was removed")),
                Some(g) if g.size != f.size => {
                    return Some(format!(
                        "input file /{path} changed size: {} bytes, was {}",
                        g.size, f.size
                    ));
                }
                Some(g) if g.modified_unix_ms != f.modified_unix_ms || g.e_tag != f.e_tag => {
                    return Some(format!(
                        "input file /{path} was modified since the run started"
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(path) = new.keys().find(|p| !old.contains_key(*p)) {
            return Some(format!(
                "input file /{path} was added since the run started"
            ));
        }
    }
    now.iter()
        .find(|n| !before.iter().any(|b| b.name == n.name))
        .map(|n| format!("source '{}' was added to the pipeline", n.name))
}

/// What changed in the pipeline between the text a run started with and now, counting only
/// what shapes the output: `[resources]`, `[retry]`, `[[notify]]` and `name` may change between
/// a run and its resume (more memory, more patience, another webhook).
pub fn pipeline_change(before_text: &str, now: &crate::spec::PipelineSpec) -> Option<String> {
    let before: crate::spec::PipelineSpec = match toml::from_str(before_text) {
        Ok(s) => s,
        Err(e) => return Some(format!("the recorded pipeline does not parse: {e}")),
    };
    spec_change(&before, now)
}

/// What of a pipeline decides its output: everything but its name, resources, retries,
/// notifications and engine (every engine writes the same bytes: a run started locally may
/// resume on a cluster).
fn shape(spec: &crate::spec::PipelineSpec) -> serde_json::Value {
    let mut s = spec.clone();
    s.name = None;
    s.resources = Default::default();
    s.retry = Default::default();
    s.notifications.clear();
    s.run.engine = None;
    serde_json::to_value(&s).unwrap_or_default()
}

/// SHA-256 (hex) of what of `spec` decides the output: a run directory records it instead of
/// the substituted text, so values from the environment are compared, never written.
pub fn spec_digest(spec: &crate::spec::PipelineSpec) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(&shape(spec)).unwrap_or_default();
    sha2::Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What changed between the pipeline a run directory records and `now` (compiled in
/// `sandbox`, whose environment re-reads the recorded text), or `None`.
pub fn recorded_pipeline_change(
    recorded_text: &str,
    record: &super::RunRecord,
    now: &crate::spec::PipelineFile,
    sandbox: &crate::sandbox::Sandbox,
) -> Option<String> {
    let Some(digest) = &record.pipeline_digest else {
        // Written before the text as written was recorded: the substituted text.
        return pipeline_change(recorded_text, &now.spec);
    };
    if *digest == spec_digest(&now.spec) {
        return None;
    }
    let request = match &record.context {
        Some(context) => context.request(),
        None => crate::run_context::RunRequest::default(),
    };
    let then = crate::spec::PipelineFile::parse(
        &now.path,
        recorded_text,
        &record.overrides,
        &|name| sandbox.env(name),
        &request,
    );
    match then {
        Ok(then) => {
            let (a, b) = (&then.context, &now.context);
            let interval_differs =
                then.reads_run && (a.start_ms, a.end_ms) != (b.start_ms, b.end_ms);
            if interval_differs || a.params != b.params {
                return Some(format!(
                    "the run was for {}, this one is for {}; pass the run's --date and --param \
                     values, or resume its output directory",
                    a.describe(),
                    b.describe()
                ));
            }
            spec_change(&then.spec, &now.spec).or_else(|| {
                Some(
                    "an environment variable it reads has another value than when the run \
                     started"
                        .into(),
                )
            })
        }
        Err(e) => Some(format!("the recorded pipeline no longer reads: {e}")),
    }
}

fn spec_change(
    before: &crate::spec::PipelineSpec,
    now: &crate::spec::PipelineSpec,
) -> Option<String> {
    let (b, n) = (shape(before), shape(now));
    if b == n {
        return None;
    }
    let keys: BTreeSet<&String> = b
        .as_object()
        .into_iter()
        .chain(n.as_object())
        .flat_map(|o| o.keys())
        .collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| b.get(k.as_str()) != n.get(k.as_str()))
        .map(|k| match (b.get(k.as_str()), n.get(k.as_str())) {
            (Some(x), Some(y)) => format!("`{k}` is now {y}, was {x}"),
            (None, Some(y)) => format!("`{k}` = {y} was added"),
            (Some(x), None) => format!("`{k}` = {x} was removed"),
            (None, None) => unreachable!("a key of one of them"),
        })
        .collect();
    Some(changed.join("; "))
}
