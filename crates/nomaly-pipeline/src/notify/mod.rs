//! Notifications with the run report: an HTTP POST, an email, a shell command, or a file.
//! A failed notification is a warning in the report, never a failed run.

use crate::report::{RunReport, RunStatus};
use crate::sandbox::{Sandbox, is_internal_ip};
use crate::sink_writer::write_atomic;
use crate::spec::{NotifySpec, NotifyWhen};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Why a notification could not be sent (a warning in the report, not a failed run).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(String);

mod chat;
pub mod email;

/// Whether a notification with this condition fires for `report`.
fn fires(
    (on, rate_above, drift_above): (NotifyWhen, Option<f64>, Option<f64>),
    report: &RunReport,
) -> bool {
    let status = report.status;
    let drift = report.model.as_ref().and_then(|m| m.drift_psi);
    let rate = rate_above.is_none_or(|limit| report.anomaly_rate > limit)
        && drift_above.is_none_or(|limit| drift.is_some_and(|d| d > limit));
    // A report of a run still going is the deadline's; every other condition is of a run's end.
    let running = status == RunStatus::Running;
    rate && match on {
        NotifyWhen::Deadline => running,
        _ if running => false,
        NotifyWhen::Always => true,
        NotifyWhen::Success => matches!(
            status,
            RunStatus::Succeeded | RunStatus::DryRun | RunStatus::NothingNew
        ),
        NotifyWhen::Failure => matches!(
            status,
            RunStatus::Failed
                | RunStatus::ValidationFailed
                | RunStatus::Cancelled
                | RunStatus::TimedOut
        ),
    }
}

/// Sends every notification that applies; returns warnings for the ones that failed. Webhooks
/// reach what `sandbox` (the compiled pipeline's) allows.
pub async fn notify_all(
    specs: &[NotifySpec],
    report: &RunReport,
    report_path: Option<&Path>,
    base: &Path,
    sandbox: &Sandbox,
) -> Vec<String> {
    let body = serde_json::to_vec_pretty(report).unwrap_or_default();
    let mut warnings = Vec::new();
    for spec in specs {
        if !fires(spec.condition(), report) {
            continue;
        }
        let result = match spec {
            NotifySpec::Webhook {
                url,
                format,
                anomaly_rate_above,
                drift_above,
                ..
            } => {
                let message = chat::message(*format, report, *anomaly_rate_above, *drift_above);
                post_json(url, message.as_deref().unwrap_or(&body), sandbox)
                    .await
                    .map_err(|e| format!("webhook {}: {e}", without_password(url)))
            }
            NotifySpec::Email {
                to,
                from,
                server,
                password_env,
                plaintext,
                anomaly_rate_above,
                drift_above,
                ..
            } => {
                let email = email::Email {
                    to,
                    from,
                    server,
                    password_env: password_env.as_deref(),
                    plaintext: *plaintext,
                    rate_above: *anomaly_rate_above,
                    drift_above: *drift_above,
                };
                email::send(&email, report, &body, sandbox)
                    .await
                    .map_err(|e| format!("email via {}: {e}", without_password(server)))
            }
            NotifySpec::Command { command, .. } => {
                run_command(command, report, report_path, &body, base)
                    .await
                    .map_err(|e| format!("command `{command}`: {e}"))
            }
            NotifySpec::File { path, .. } if nomaly_engine::RemoteStore::of(path).is_some() => {
                put_object(path, &body)
                    .await
                    .map_err(|e| format!("file {path}: {e}"))
            }
            NotifySpec::File { path, .. } => {
                let p = base.join(path);
                write_atomic(&p, &body).map_err(|e| format!("file {}: {e}", p.display()))
            }
        };
        if let Err(w) = result {
            warnings.push(format!("notification failed: {w}"));
        }
    }
    warnings
}

/// Puts a notification file into an object store (one request: a report is small).
async fn put_object(url: &str, body: &[u8]) -> Result<(), String> {
    use datafusion::object_store::ObjectStoreExt;
    let (store, location) = crate::sink_writer::open_prefix(url)?;
    store
        .put(&location, body.to_vec().into())
        .await
        .map(|_| ())
        .map_err(|e| nomaly_engine::object_stores::root_message(&e))
}

/// POSTs the report to a webhook (SECURITY.md, "What a submitted pipeline may touch"): HTTP or
/// HTTPS (rustls, the system's roots; `SSL_CERT_FILE` names others), 10 s in all, redirects not
/// followed; any 2xx is success. The host is resolved first and, unless `sandbox` lets this URL
/// reach internal addresses, a name that resolves to one (loopback, link-local, private) is
/// refused; the connection then goes to exactly the addresses that were checked.
async fn post_json(url: &str, body: &[u8], sandbox: &Sandbox) -> Result<(), NotifyError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| NotifyError(format!("not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| NotifyError("the URL names no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| NotifyError("the URL names no port".into()))?;
    let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((&*host, port)),
    )
    .await
    .map_err(|_| NotifyError(format!("{host} did not resolve within 5 s")))?
    .map_err(|e| NotifyError(format!("cannot resolve {host}: {e}")))?
    .collect();
    check_addresses(sandbox, url, &host, &addrs)?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("nomaly/", env!("CARGO_PKG_VERSION")));
    if sandbox.is_confined() {
        // The checked addresses and nothing else: no proxy, no second lookup.
        client = client.no_proxy().resolve_to_addrs(&host, &addrs);
    }
    let client = client.build().map_err(|e| NotifyError(chain(&e)))?;
    let response = client
        .post(parsed)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| NotifyError(chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(NotifyError(format!(
            "the server answered HTTP {} (redirects are not followed; give the final URL)",
            status.as_u16()
        )))
    } else {
        Err(NotifyError(format!(
            "the server answered HTTP {}",
            status.as_u16()
        )))
    }
}

/// Refuses `addrs` (what `host` resolved to) when one is internal and `sandbox` does not let
/// `url` reach internal addresses.
fn check_addresses(
    sandbox: &Sandbox,
    url: &str,
    host: &str,
    addrs: &[std::net::SocketAddr],
) -> Result<(), NotifyError> {
    if addrs.is_empty() {
        return Err(NotifyError(format!("{host} resolved to no address")));
    }
    match addrs.iter().find(|a| is_internal_ip(a.ip())) {
        Some(a) if !sandbox.may_reach_internal(url) => Err(NotifyError(format!(
            "{host} resolves to {}, an internal address (loopback, link-local or private): \
             not sent; only an --allow-location pattern naming the host {host} itself allows \
             that (SECURITY.md)",
            a.ip()
        ))),
        _ => Ok(()),
    }
}

/// An error and its causes, one line (reqwest's own message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `url` with any password replaced by `***`, for messages and reports.
pub fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

async fn run_command(
    command: &str,
    report: &RunReport,
    report_path: Option<&Path>,
    body: &[u8],
    base: &Path,
) -> Result<(), NotifyError> {
    let status = report.status.name();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(base)
        .env("NOMALY_STATUS", status)
        .env("NOMALY_PIPELINE", &report.pipeline)
        .env(
            "NOMALY_REPORT",
            report_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NotifyError(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The report is also on stdin; a command that does not read it is fine.
        let _ = stdin.write_all(body).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| NotifyError("still running after 60 s".into()))?
        .map_err(|e| NotifyError(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(NotifyError(format!("exited with {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confined(locations: &[&str]) -> Sandbox {
        let root = std::env::temp_dir();
        let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
        Sandbox::confined(&[root], &locations, &[]).unwrap()
    }

    #[test]
    fn names_that_resolve_inside_are_refused_unless_the_host_is_named() {
        let url = "http://hooks.example:8080/x";
        let inside: Vec<std::net::SocketAddr> = vec!["10.0.0.7:8080".parse().unwrap()];
        let outside: Vec<std::net::SocketAddr> = vec!["93.184.216.34:8080".parse().unwrap()];
        let mixed = [outside[0], "127.0.0.1:8080".parse().unwrap()];
        let wildcard = confined(&["http://*"]);
        let named = confined(&["http://hooks.example:8080/*"]);
        let e = check_addresses(&wildcard, url, "hooks.example", &inside).unwrap_err();
        assert!(
            e.0.contains("resolves to 10.0.0.7, an internal address"),
            "{e}"
        );
        assert!(check_addresses(&wildcard, url, "hooks.example", &mixed).is_err());
        assert!(check_addresses(&wildcard, url, "hooks.example", &outside).is_ok());
        assert!(check_addresses(&named, url, "hooks.example", &inside).is_ok());
        assert!(check_addresses(&Sandbox::operator(), url, "hooks.example", &inside).is_ok());
        assert!(check_addresses(&wildcard, url, "hooks.example", &[]).is_err());
    }

    #[test]
    fn passwords_in_webhook_urls_are_hidden() {
        assert_eq!(
            without_password("https://user:secret@hooks.example/x"),
            "https://user:***@hooks.example/x"
        );
        assert_eq!(
            without_password("https://hooks.example/x"),
            "https://hooks.example/x"
        );
    }
}
