//! Notifications with the run report: an HTTP POST, a shell command, or a file.
//! A failed notification is a warning in the report, never a failed run.

use crate::report::{RunReport, RunStatus};
use crate::sink::write_atomic;
use crate::spec::{NotifySpec, NotifyWhen};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a notification could not be sent (a warning in the report, not a failed run).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(String);

fn fires(on: NotifyWhen, status: RunStatus) -> bool {
    match on {
        NotifyWhen::Always => true,
        NotifyWhen::Success => matches!(status, RunStatus::Succeeded | RunStatus::DryRun),
        NotifyWhen::Failure => matches!(
            status,
            RunStatus::Failed
                | RunStatus::ValidationFailed
                | RunStatus::Cancelled
                | RunStatus::TimedOut
        ),
    }
}

/// Sends every notification that applies; returns warnings for the ones that failed.
pub async fn notify_all(
    specs: &[NotifySpec],
    report: &RunReport,
    report_path: Option<&Path>,
    base: &Path,
) -> Vec<String> {
    let body = serde_json::to_vec_pretty(report).unwrap_or_default();
    let mut warnings = Vec::new();
    for spec in specs {
        let result = match spec {
            NotifySpec::Webhook { url, on } if fires(*on, report.status) => post_json(url, &body)
                .await
                .map_err(|e| format!("webhook {url}: {e}")),
            NotifySpec::Command { command, on } if fires(*on, report.status) => {
                run_command(command, report, report_path, &body, base)
                    .await
                    .map_err(|e| format!("command `{command}`: {e}"))
            }
            NotifySpec::File { path, on } if fires(*on, report.status) => {
                let p = base.join(path);
                write_atomic(&p, &body).map_err(|e| format!("file {}: {e}", p.display()))
            }
            _ => Ok(()),
        };
        if let Err(w) = result {
            warnings.push(format!("notification failed: {w}"));
        }
    }
    warnings
}

/// POSTs JSON to an http:// URL (HTTP/1.1, one request, 10 s timeout); any 2xx is success.
async fn post_json(url: &str, body: &[u8]) -> Result<(), NotifyError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| NotifyError("only http:// URLs are supported".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| NotifyError(format!("cannot connect to {addr}: {e}")))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: nomaly/{}\r\nConnection: close\r\n\r\n",
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| NotifyError(e.to_string()))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| NotifyError(e.to_string()))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        // The status line is enough.
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| NotifyError(e.to_string()))?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        let status_line = String::from_utf8_lossy(&response);
        let code = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| NotifyError("no HTTP status in the response".into()))?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(NotifyError(format!("the server answered HTTP {code}")))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| NotifyError("no answer within 10 s".into()))?
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
