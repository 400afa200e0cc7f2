//! `${...}` in a pipeline file, replaced in the text before it is parsed:
//! - `${VAR}`, `${VAR:-default}`: an environment variable (which a sandbox may refuse);
//! - `${run.date}`, `${run.start}`, `${run.end}`, each with an optional strftime-style format
//!   (`${run.start:%Y/%m/%d}`): the run's logical interval ([`crate::run_context`]);
//! - `${param.NAME}`, `${param.NAME:-default}`: a parameter of the run (`--param NAME=VALUE`);
//! - `$${` is a literal `${`.
//!
//! Then `--set key.path=value` overrides are applied to the substituted text.

use crate::error::{PipelineError, Result};
use crate::run_context::RunContext;
use crate::sandbox::Refused;
use crate::spec::line_column;
use std::collections::BTreeSet;
use std::path::Path;

/// How `${NAME}` is looked up: its value, unset (`Ok(None)`), or refused with a reason that
/// never holds the value.
pub type EnvLookup<'a> = dyn Fn(&str) -> std::result::Result<Option<String>, Refused> + 'a;

/// The text with every reference replaced, and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    /// The `param.` names the text reads.
    pub params_used: BTreeSet<String>,
    /// Whether the text reads a `run.` value.
    pub reads_run: bool,
}

/// Replaces every reference (see the module). A refused name is an error even when it has a
/// default: the file asked for something it may not read.
pub fn substitute(
    path: &Path,
    text: &str,
    env: &EnvLookup<'_>,
    run: &RunContext,
) -> Result<Substituted> {
    let mut out = Substituted {
        text: String::with_capacity(text.len()),
        params_used: BTreeSet::new(),
        reads_run: false,
    };
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find('$') {
        out.text.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.text.push_str("${");
            rest = after;
            offset += at + 3;
            continue;
        }
        if !tail.starts_with("${") {
            out.text.push('$');
            rest = &tail[1..];
            offset += at + 1;
            continue;
        }
        let (line, column) = line_column(text, offset + at);
        let fail = |message: String| PipelineError::Substitution {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        let Some(end) = tail.find('}') else {
            return Err(fail(
                "'${' is not closed by '}'; write ${NAME} or ${NAME:-default}, or $${ for a literal ${".into(),
            ));
        };
        let body = &tail[2..end];
        let value = reference(body, env, run, &mut out).map_err(fail)?;
        out.text.push_str(&value);
        rest = &tail[end + 1..];
        offset += at + end + 1;
    }
    out.text.push_str(rest);
    Ok(out)
}

/// The value of one `${body}`.
fn reference(
    body: &str,
    env: &EnvLookup<'_>,
    run: &RunContext,
    used: &mut Substituted,
) -> std::result::Result<String, String> {
    let (name, default) = match body.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (body, None),
    };
    if name.starts_with("run.") || name.starts_with("param.") {
        let (name, format) = match name.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (name, None),
        };
        if let Some(param) = name.strip_prefix("param.") {
            used.params_used.insert(param.to_string());
        } else {
            used.reads_run = true;
        }
        return match (run.lookup(name, format)?, default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!(
                "{name} is not set; pass --param {}=VALUE (or \"params\" in the API), or give \
                 a default with ${{{name}:-value}}",
                name.trim_start_matches("param.")
            )),
        };
    }
    let valid_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(format!(
            "'${{{body}}}' is not a variable reference; names are letters, digits and _ (e.g. \
             ${{DATA_DIR}} or ${{DATA_DIR:-data}}), or run.date, run.start, run.end, param.NAME"
        ));
    }
    match (env(name).map_err(|refused| refused.0)?, default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set; set it, or give a default with ${{{name}:-value}}"
        )),
    }
}

/// Applies `--set key.path=value` overrides to the document (values are TOML when they parse as
/// TOML, else strings), keeping the rest of the text — and its line numbers — as it was.
pub(crate) fn apply_overrides(path: &Path, text: &str, overrides: &[String]) -> Result<String> {
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((0, 0));
        PipelineError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    for o in overrides {
        let bad = |reason: &str| PipelineError::Override {
            setting: o.clone(),
            reason: reason.to_string(),
        };
        let (key, value) = o
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE, e.g. --set run.chunk_rows=50000"))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("the key has an empty part"));
        }
        let value = value.trim();
        let parsed: toml_edit::Value = value
            .parse()
            .unwrap_or_else(|_| toml_edit::Value::from(value));
        let mut table = doc.as_table_mut();
        for p in &parts[..parts.len() - 1] {
            let entry = table
                .entry(p)
                .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| bad(&format!("'{p}' is not a table in this file")))?;
        }
        table.insert(parts[parts.len() - 1], toml_edit::value(parsed));
    }
    Ok(doc.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run_context::{RunDate, RunRequest};

    /// An environment for tests: `DATA` is set, `SECRET` refused, the rest unset.
    pub(crate) fn env(name: &str) -> std::result::Result<Option<String>, Refused> {
        match name {
            "SECRET" => Err(Refused("SECRET is not allowed".into())),
            _ => Ok((name == "DATA").then(|| "data/tx".to_string())),
        }
    }

    /// 2026-12-05 in UTC, with `region = eu`.
    fn dec5() -> RunContext {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let params = [("region".to_string(), "eu".to_string())].into();
        RunRequest::new(RunDate::Day(day), params)
            .resolve(None, chrono_tz::UTC)
            .unwrap()
    }

    fn sub(text: &str) -> Result<String> {
        substitute(Path::new("p.toml"), text, &env, &dec5()).map(|s| s.text)
    }

    #[test]
    fn environment_defaults_and_escapes() {
        assert_eq!(
            sub("a = \"${DATA}/x ${NOPE:-d} $${LIT} $5\"").unwrap(),
            "a = \"data/tx/x d ${LIT} $5\""
        );
        let e = sub("a = 1\nb = \"${NOPE}\"").unwrap_err();
        assert!(
            e.to_string().contains("p.toml:2:6") && e.to_string().contains("NOPE"),
            "{e}"
        );
        // A refused name fails even with a default, with the lookup's reason and place.
        let e = sub("a = \"${SECRET:-x}\"").unwrap_err();
        assert_eq!(e.to_string(), "p.toml:1:6: SECRET is not allowed");
    }

    #[test]
    fn run_values_and_formats() {
        let s = substitute(
            Path::new("p.toml"),
            "o = \"out/date=${run.date}/\"\nq = \"${run.start} ${run.end} ${run.end:%Y%m%d} \
             ${param.region} ${param.tier:-gold} $${run.date}\"",
            &env,
            &dec5(),
        )
        .unwrap();
        assert_eq!(
            s.text,
            "o = \"out/date=2026-12-05/\"\nq = \"2026-12-05T00:00:00+00:00 \
             2026-12-06T00:00:00+00:00 20261206 eu gold ${run.date}\""
        );
        assert!(s.reads_run);
        assert_eq!(
            s.params_used.into_iter().collect::<Vec<_>>(),
            ["region", "tier"]
        );
    }

    #[test]
    fn bad_run_references_are_located_with_the_fix() {
        for (text, needle) in [
            ("a = \"${run.day}\"", "not a run value"),
            ("a = \"${param.nope}\"", "--param nope=VALUE"),
            ("a = \"${run.date:%Q}\"", "not a strftime format"),
            ("a = \"${run.date:%Y'}\"", "holds '\\''"),
            ("a = \"${param.region:%Y}\"", "only run.date"),
            ("a = \"${run-date}\"", "not a variable reference"),
        ] {
            let e = sub(text).unwrap_err().to_string();
            assert!(
                e.starts_with("p.toml:1:6: ") && e.contains(needle),
                "{text}: {e}"
            );
        }
    }
}
