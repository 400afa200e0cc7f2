//! `[[notify]]`: each notification checked against the sandbox, its values bounded.

use super::place;
use super::sources::resolve_path;
use crate::error::{PipelineError, Result};
use crate::notify::email;
use crate::sandbox::Sandbox;
use crate::spec::{NotifySpec, PipelineFile};
use std::path::PathBuf;

/// Webhooks take http(s):// URLs the sandbox allows; a notification file is a path it allows,
/// stored canonical (absolute) so the run writes where the check looked.
pub(super) fn compile_notifications(
    file: &PipelineFile,
    sandbox: &Sandbox,
) -> Result<Vec<NotifySpec>> {
    let spec = &file.spec;
    let base = file.base_dir();
    let mut out = Vec::new();
    for (i, n) in spec.notifications.iter().enumerate() {
        if let (_, _, Some(drift)) = n.condition()
            && !(drift.is_finite() && drift > 0.0)
        {
            return Err(PipelineError::invalid(
                place(file, "[[notify]]", i, Some("drift_above")),
                format!("{drift}: a population-stability index above 0, e.g. 0.2"),
            ));
        }
        if let (_, Some(rate), _) = n.condition()
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(PipelineError::invalid(
                place(file, "[[notify]]", i, Some("anomaly_rate_above")),
                format!("{rate} is not a fraction of rows; give one from 0 to 1, e.g. 0.05 for 5%"),
            ));
        }
        let n = match n {
            NotifySpec::Webhook {
                url,
                on,
                format,
                anomaly_rate_above,
                drift_above,
            } => {
                let at = place(file, "[[notify]]", i, Some("url"));
                let url = sandbox
                    .url(url, "webhook")
                    .map_err(|r| PipelineError::refused(&at, r))?;
                let parsed = reqwest::Url::parse(&url).map_err(|e| {
                    PipelineError::invalid(at.clone(), format!("'{url}' is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(PipelineError::invalid(
                        at,
                        format!(
                            "'{url}': a webhook is an http:// or https:// URL with a host, \
                             e.g. https://hooks.example.com/nomaly"
                        ),
                    ));
                }
                NotifySpec::Webhook {
                    url,
                    on: *on,
                    format: *format,
                    anomaly_rate_above: *anomaly_rate_above,
                    drift_above: *drift_above,
                }
            }
            NotifySpec::Email { .. } => compile_email(file, i, n, sandbox)?,
            NotifySpec::File {
                path,
                on,
                anomaly_rate_above,
                drift_above,
            } => {
                let at = place(file, "[[notify]]", i, Some("path"));
                if nomaly_engine::RemoteStore::of(path).is_some() {
                    // An object in a store (beside a remote output): put there at the end.
                    let url = sandbox
                        .url(path, "notification file")
                        .map_err(|r| PipelineError::refused(&at, r))?;
                    out.push(NotifySpec::File {
                        path: url,
                        on: *on,
                        anomaly_rate_above: *anomaly_rate_above,
                        drift_above: *drift_above,
                    });
                    continue;
                }
                let resolved = PathBuf::from(resolve_path(&base, path));
                let canonical = sandbox
                    .output(&resolved, "notification file")
                    .map_err(|r| PipelineError::refused(&at, r))?;
                let path = if sandbox.is_confined() {
                    canonical.display().to_string()
                } else {
                    path.clone()
                };
                NotifySpec::File {
                    path,
                    on: *on,
                    anomaly_rate_above: *anomaly_rate_above,
                    drift_above: *drift_above,
                }
            }
            other => other.clone(),
        };
        out.push(n);
    }
    Ok(out)
}

/// An email: 1 to 20 recipients and a sender that parse as addresses, an SMTP server the
/// sandbox allows (TLS unless `plaintext`, which only a loopback server without a password
/// may use), a `password_env` the sandbox may read.
fn compile_email(
    file: &PipelineFile,
    i: usize,
    spec: &NotifySpec,
    sandbox: &Sandbox,
) -> Result<NotifySpec> {
    let NotifySpec::Email {
        to,
        from,
        server,
        password_env,
        plaintext,
        ..
    } = spec
    else {
        unreachable!("compile_email is called for emails");
    };
    let at = |key: &str| place(file, "[[notify]]", i, Some(key));
    if to.is_empty() || to.len() > email::MAX_RECIPIENTS {
        return Err(PipelineError::invalid(
            at("to"),
            format!(
                "{} recipients: give 1 to {}, e.g. to = [\"ops@example.com\"]",
                to.len(),
                email::MAX_RECIPIENTS
            ),
        ));
    }
    for address in to {
        email::mailbox(address).map_err(|e| PipelineError::invalid(at("to"), e))?;
    }
    email::mailbox(from).map_err(|e| PipelineError::invalid(at("from"), e))?;
    let checked = sandbox
        .url(server, "SMTP server")
        .map_err(|r| PipelineError::refused(at("server"), r))?;
    let parsed =
        email::parse_server(&checked).map_err(|e| PipelineError::invalid(at("server"), e))?;
    if let Some(name) = password_env {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(PipelineError::invalid(
                at("password_env"),
                format!("'{name}' is not an environment variable's name, e.g. SMTP_PASSWORD"),
            ));
        }
        sandbox
            .env(name)
            .map_err(|r| PipelineError::refused(at("password_env"), r))?;
        if parsed.user.is_none() {
            return Err(PipelineError::invalid(
                at("server"),
                format!(
                    "'{server}' names no user to log in as with password_env {name}; write \
                     it before the host, e.g. smtps://alerts%40example.com@{}",
                    parsed.host
                ),
            ));
        }
    }
    if *plaintext {
        let why = if parsed.implicit_tls {
            Some("an smtps:// server speaks TLS; drop plaintext or use smtp://")
        } else if password_env.is_some() {
            Some("a password is never sent without TLS; drop password_env or plaintext")
        } else if !(parsed.host == "localhost"
            || parsed
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
        {
            Some("plain text only reaches a server on this host (localhost, 127.0.0.1 or ::1)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(PipelineError::invalid(at("plaintext"), why.to_string()));
        }
    }
    let mut spec = spec.clone();
    if let NotifySpec::Email { server, .. } = &mut spec {
        *server = checked;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_in;

    /// Compiles a pipeline with one email notification in a server's sandbox that allows
    /// `locations` and the environment names `env`.
    fn compile_email_in(locations: &[&str], env: &[&str], email: &str) -> Result<NotifySpec> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("tx.csv"), "amount\n1\n2\n").unwrap();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sandbox = Sandbox::confined(
            std::slice::from_ref(&root),
            &strings(locations),
            &strings(env),
        )
        .unwrap();
        let text = format!(
            "input = \"tx.csv\"\noutput = \"out/\"\n[detect]\nalgorithm = \"zscore\"\n\
             columns = [\"amount\"]\n[[notify]]\ntype = \"email\"\nto = [\"ops@example.com\"]\n\
             from = \"nomaly@example.com\"\n{email}"
        );
        let file = PipelineFile::parse(
            &root.join("p.toml"),
            &text,
            &[],
            &|name| sandbox.env(name),
            &crate::RunRequest::default(),
        )?;
        Ok(compile_in(file, &sandbox)?.notifications.remove(0))
    }

    #[test]
    fn a_server_sends_mail_only_where_and_as_its_operator_allowed() {
        let server = "server = \"smtps://u@smtp.example.com\"\npassword_env = \"SMTP_PASSWORD\"\n";
        let e = compile_email_in(&[], &["SMTP_*"], server)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SMTP server smtps://u@smtp.example.com is not an allowed"),
            "{e}"
        );
        let e = compile_email_in(&["smtps://u@smtp.example.com*"], &[], server)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("password_env") && e.contains("--allow-env"),
            "{e}"
        );
        let ok = compile_email_in(&["smtps://u@smtp.example.com*"], &["SMTP_*"], server);
        assert!(matches!(ok, Ok(NotifySpec::Email { .. })), "{ok:?}");
        // An internal address needs a pattern naming the host itself, as for webhooks.
        let inside = "server = \"smtp://127.0.0.1:2525\"\n";
        let e = compile_email_in(&["smtp://*"], &[], inside)
            .unwrap_err()
            .to_string();
        assert!(e.contains("internal address"), "{e}");
        assert!(compile_email_in(&["smtp://127.0.0.1:2525*"], &[], inside).is_ok());
        let bad_name = "server = \"smtps://u@smtp.example.com\"\npassword_env = \"A-B\"\n";
        let e = compile_email_in(&["smtps://*"], &["*"], bad_name)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an environment variable's name"), "{e}");
    }
}
