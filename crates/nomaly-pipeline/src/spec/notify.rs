//! `[[notify]]`: who hears about a run, and when.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When a notification fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyWhen {
    #[default]
    Always,
    Success,
    Failure,
    /// The run is not finished by its `[resources] deadline` (sent once; the run goes on).
    Deadline,
}

/// A notification with the run report. It fires when `on` matches the run's end and, if
/// `anomaly_rate_above` (`drift_above`) is given, the run's anomaly rate (score drift) is above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NotifySpec {
    /// POST the JSON report (or a chat message, see `format`) to an http(s):// URL.
    Webhook {
        /// `webhook`: the http(s) URL the report is POSTed to.
        url: String,
        /// When it fires: "always" (default), "success" or "failure".
        #[serde(default)]
        on: NotifyWhen,
        /// `webhook`: what is POSTed: "report" (the JSON run report, default), "slack" (a Slack
        /// incoming-webhook message) or "teams" (a Microsoft Teams connector card).
        #[serde(default, skip_serializing_if = "WebhookFormat::is_report")]
        format: WebhookFormat,
        /// Fire only when the share of rows flagged is above this fraction (e.g. 0.05 = 5%).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anomaly_rate_above: Option<f64>,
        /// Fire only when the run's scores drifted from its model's training scores by more
        /// than this population-stability index (a `[detect] model` or `train` run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drift_above: Option<f64>,
    },
    /// Run a shell command; the report's path is in `$NOMALY_REPORT`, its status in `$NOMALY_STATUS`.
    Command {
        /// `command`: the shell command (a server needs `--allow-notify-commands`).
        command: String,
        #[serde(default)]
        on: NotifyWhen,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anomaly_rate_above: Option<f64>,
        /// Fire only when the run's scores drifted from its model's training scores by more
        /// than this population-stability index (a `[detect] model` or `train` run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drift_above: Option<f64>,
    },
    /// Send an email through an SMTP server: a summary in the body, the JSON report attached.
    Email {
        /// `email`: the recipients, 1 to 20 addresses ("ops@example.com" or "Ops <ops@example.com>").
        to: Vec<String>,
        /// `email`: the sender's address.
        from: String,
        /// `email`: the SMTP server: "smtps://host" (TLS from the start, port 465 unless given)
        /// or "smtp://host" (STARTTLS, required; port 587 unless given); a user name to log in
        /// with goes before the host ("smtps://alerts%40example.com@smtp.example.com").
        server: String,
        /// `email`: the environment variable that holds the SMTP password, read when the mail
        /// is sent (a server reads only names its --allow-env allows). Never in the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_env: Option<String>,
        /// `email`: send without TLS; only to a server on this host (loopback), without a
        /// password (a local relay such as Postfix on 127.0.0.1:25).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        plaintext: bool,
        #[serde(default)]
        on: NotifyWhen,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anomaly_rate_above: Option<f64>,
        /// Fire only when the run's scores drifted from its model's training scores by more
        /// than this population-stability index (a `[detect] model` or `train` run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drift_above: Option<f64>,
    },
    /// Write the JSON report to a file, or put it into an object store (`path = "s3://bucket/reports/run.json"`, checked against `--allow-location` on a server).
    File {
        /// `file`: where the JSON report is written: a path, or an object-store URL.
        path: String,
        #[serde(default)]
        on: NotifyWhen,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anomaly_rate_above: Option<f64>,
        /// Fire only when the run's scores drifted from its model's training scores by more
        /// than this population-stability index (a `[detect] model` or `train` run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drift_above: Option<f64>,
    },
}

impl NotifySpec {
    /// When it fires: the run's end it waits for, and the anomaly rate and the drift it must
    /// exceed.
    pub fn condition(&self) -> (NotifyWhen, Option<f64>, Option<f64>) {
        match self {
            NotifySpec::Webhook {
                on,
                anomaly_rate_above,
                drift_above,
                ..
            }
            | NotifySpec::Command {
                on,
                anomaly_rate_above,
                drift_above,
                ..
            }
            | NotifySpec::Email {
                on,
                anomaly_rate_above,
                drift_above,
                ..
            }
            | NotifySpec::File {
                on,
                anomaly_rate_above,
                drift_above,
                ..
            } => (*on, *anomaly_rate_above, *drift_above),
        }
    }
}

/// What a webhook POSTs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The JSON run report.
    #[default]
    Report,
    /// A Slack incoming-webhook message (`{"text": ...}`) summing the run up.
    Slack,
    /// A Microsoft Teams connector card (`MessageCard`) summing the run up.
    Teams,
}

impl WebhookFormat {
    fn is_report(&self) -> bool {
        *self == WebhookFormat::Report
    }
}
