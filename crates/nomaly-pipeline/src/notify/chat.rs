//! Chat messages summing a run up, for webhooks with `format = "slack"` or `"teams"`: a title
//! line (the pipeline and how it ended) and the figures a person acts on (rows, anomalies and
//! their rate, the alert threshold crossed, the error). Text from the run (the pipeline's name,
//! an error) is escaped for the chat's markup, so it cannot forge links or mentions.

use crate::report::{RunReport, RunStatus};
use crate::spec::WebhookFormat;
use serde::Serialize;

/// A Slack incoming-webhook message.
#[derive(Debug, Serialize)]
struct SlackMessage {
    text: String,
}

/// A Microsoft Teams connector card.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TeamsCard {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@context")]
    context: &'static str,
    summary: String,
    theme_color: &'static str,
    title: String,
    text: String,
}

fn ended(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "missed its deadline",
        RunStatus::Succeeded => "succeeded",
        RunStatus::DryRun => "finished a dry run",
        RunStatus::ValidationFailed => "failed a validation check",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "was cancelled",
        RunStatus::TimedOut => "timed out",
        RunStatus::NothingNew => "found no new files",
    }
}

/// `&`, `<` and `>` as Slack's and Teams' markup want them written.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The title and the lines of a plain-text message (an email), nothing escaped.
pub(super) fn plain_summary(
    report: &RunReport,
    rate_above: Option<f64>,
    drift_above: Option<f64>,
) -> (String, Vec<String>) {
    summary(report, rate_above, drift_above, &|t| t.to_string())
}

/// The title and the lines of the message, the run's own text passed through `escape`.
fn summary(
    report: &RunReport,
    rate_above: Option<f64>,
    drift_above: Option<f64>,
    escape: &dyn Fn(&str) -> String,
) -> (String, Vec<String>) {
    let title = format!(
        "nomaly: pipeline {} {}",
        escape(&report.pipeline),
        ended(report.status)
    );
    let mut lines = vec![format!(
        "{} rows scored, {} anomalies ({:.2}%) in {:.1} s",
        report.output_rows,
        report.anomalies,
        report.anomaly_rate * 100.0,
        report.seconds
    )];
    if let Some(limit) = rate_above {
        lines.push(format!(
            "the anomaly rate {:.2}% is above the alert threshold {:.2}%",
            report.anomaly_rate * 100.0,
            limit * 100.0
        ));
    }
    if let (Some(limit), Some(m)) = (drift_above, &report.model)
        && let Some(psi) = m.drift_psi
    {
        lines.push(format!(
            "the scores drifted from model {} v{}: population-stability index {psi:.3} is above \
             the alert threshold {limit}",
            escape(m.name.as_deref().unwrap_or("-")),
            m.version.unwrap_or(0)
        ));
    }
    for check in report.checks.iter().filter(|c| !c.passed) {
        lines.push(format!(
            "check {} failed: {}",
            escape(&check.check),
            escape(&check.detail)
        ));
    }
    if let Some(error) = &report.error {
        lines.push(format!("error: {}", escape(error)));
    }
    if report.status == RunStatus::Running {
        lines.extend(report.warnings.iter().map(|w| escape(w)));
    }
    (title, lines)
}

/// The body a webhook of `format` POSTs; `None` for the plain report.
pub(super) fn message(
    format: WebhookFormat,
    report: &RunReport,
    rate_above: Option<f64>,
    drift_above: Option<f64>,
) -> Option<Vec<u8>> {
    let (title, lines) = summary(report, rate_above, drift_above, &escape);
    let body = match format {
        WebhookFormat::Report => return None,
        WebhookFormat::Slack => serde_json::to_vec(&SlackMessage {
            text: format!("*{title}*\n{}", lines.join("\n")),
        }),
        WebhookFormat::Teams => serde_json::to_vec(&TeamsCard {
            kind: "MessageCard",
            context: "https://schema.org/extensions",
            summary: title.clone(),
            theme_color: if report.status == RunStatus::Succeeded
                && rate_above.is_none()
                && drift_above.is_none()
            {
                "2EB886"
            } else {
                "D70000"
            },
            title,
            text: lines.join("\n\n"),
        }),
    };
    Some(body.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: RunStatus, error: Option<&str>) -> RunReport {
        RunReport {
            pipeline: "tx <nightly>".into(),
            status,
            seconds: 12.34,
            output_rows: 10_000,
            anomalies: 710,
            anomaly_rate: 0.071,
            error: error.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn slack_messages_sum_the_run_up_and_escape_its_text() {
        let failed = report(RunStatus::Failed, Some("chunk 3: a & b"));
        let body = message(WebhookFormat::Slack, &failed, None, None).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"text":"*nomaly: pipeline tx &lt;nightly&gt; failed*\n10000 rows scored, 710 anomalies (7.10%) in 12.3 s\nerror: chunk 3: a &amp; b"}"#
        );
        let alert = report(RunStatus::Succeeded, None);
        let body = message(WebhookFormat::Slack, &alert, Some(0.05), None).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("the anomaly rate 7.10% is above the alert threshold 5.00%"),
            "{text}"
        );
        assert_eq!(message(WebhookFormat::Report, &alert, None, None), None);
    }

    #[test]
    fn teams_cards_are_message_cards_colored_by_outcome() {
        let ok = report(RunStatus::Succeeded, None);
        let card: serde_json::Value =
            serde_json::from_slice(&message(WebhookFormat::Teams, &ok, None, None).unwrap())
                .unwrap();
        assert_eq!(card["@type"], "MessageCard");
        assert_eq!(card["themeColor"], "2EB886");
        assert_eq!(
            card["title"],
            "nomaly: pipeline tx &lt;nightly&gt; succeeded"
        );
        let timed_out = report(RunStatus::TimedOut, Some("the run took longer than 2h"));
        let card: serde_json::Value =
            serde_json::from_slice(&message(WebhookFormat::Teams, &timed_out, None, None).unwrap())
                .unwrap();
        assert_eq!(card["themeColor"], "D70000");
        assert!(
            card["text"]
                .as_str()
                .unwrap()
                .ends_with("error: the run took longer than 2h")
        );
    }
}
