//! A typed client of a Ballista scheduler's REST API: what `nomaly jobs`, the server's Cluster
//! view and a pipeline's client (task slots, cancelling its jobs) read from a scheduler.
//!
//! Jobs and stages are Ballista's own transfer types (`ballista-api-types`, which derive
//! `Deserialize`); the scheduler's state and its executors are serialised from types that only
//! derive `Serialize`, so their mirrors are here. Every request carries the cluster token (when
//! the client has one), goes over TLS when the client has a cluster CA, and ends within 10 s.

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use ballista_api_types::dto::{
    JobResponse as Job, Percentiles, QueryStageSummary as Stage, QueryStagesResponse as JobStages,
    TaskStatus, TaskSummary,
};

/// How long one request to the scheduler may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the scheduler's REST API failed; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the scheduler at {url} ({reason}); is `nomaly scheduler` running there?")]
    Unreachable { url: String, reason: String },
    #[error("{url}: not found on the scheduler")]
    NotFound { url: String },
    #[error("{url}: the scheduler answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: the scheduler's answer is not what Ballista 55 sends ({reason})")]
    Body { url: String, reason: String },
}

/// `GET /api/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerState {
    /// Milliseconds since the epoch.
    pub started: u64,
    pub scheduler_id: String,
    pub version: String,
    pub datafusion_version: String,
    pub scheduling_policy: String,
    #[serde(default)]
    pub substrait_support: bool,
    #[serde(default)]
    pub keda_support: bool,
    #[serde(default)]
    pub prometheus_support: bool,
    #[serde(default)]
    pub graphviz_support: bool,
    #[serde(default)]
    pub spark_support: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_flight_endpoint: Option<String>,
    #[serde(default)]
    pub enable_embedded_flight_proxy: bool,
}

/// One executor of `GET /api/executors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Executor {
    pub id: String,
    pub host: String,
    pub port: u16,
    /// Milliseconds since the epoch of its last heartbeat.
    pub last_seen: Option<u64>,
    pub specification: ExecutorSpecification,
    #[serde(default)]
    pub metrics: Vec<ExecutorMetric>,
    pub os_info: Option<ExecutorOs>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorSpecification {
    /// Task slots: the tasks the executor runs at once.
    pub vcores: u32,
}

/// An executor's memory figures, as Ballista tags them (`{"type": "used_memory", "value": n}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ExecutorMetric {
    AvailableMemory(u64),
    TotalMemory(u64),
    UsedMemory(u64),
    ProcPhysicalMemory(u64),
    ProcVirtualMemory(u64),
    PeakPhysicalMemory(u64),
    PeakVirtualMemory(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorOs {
    pub system_name: String,
    pub kernel_ver: String,
    pub os_ver: String,
    pub os_ver_long: String,
    pub physical_cores: u32,
    pub num_disks: u32,
    pub total_disk_space: u64,
    pub total_available_disk_space: u64,
    pub open_files_limit: u64,
}

/// `PATCH /api/job/{id}`: whether the job was cancelled (a finished one is not, with a reason).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelJob {
    pub cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A Ballista job id: letters, digits, `-` and `_`, at most 64 (anything else never reaches the
/// scheduler, so no id can change the URL it is put in).
pub fn check_job_id(id: &str) -> Result<&str, String> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id)
    } else {
        Err(format!(
            "'{id}' is not a Ballista job id (letters, digits, - and _)"
        ))
    }
}

/// A client of the REST API of one scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerRest {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl SchedulerRest {
    /// The scheduler at `address` (`ballista://HOST[:PORT]`, `http://…` or `HOST[:PORT]`),
    /// with the cluster token and CA of this process (`NOMALY_CLUSTER_TOKEN_FILE`,
    /// `NOMALY_CLUSTER_CA`).
    pub fn new(address: &str) -> Result<SchedulerRest, RestError> {
        let address = super::scheduler_address(address).map_err(RestError::Config)?;
        SchedulerRest::at_base(super::tls::rest_base(&address).map_err(RestError::Config)?)
    }

    /// The scheduler whose REST API is at `base` (`http(s)://host:port`).
    pub fn at_base(base: String) -> Result<SchedulerRest, RestError> {
        let http = super::tls::rest_client(REQUEST_TIMEOUT).map_err(RestError::Config)?;
        let token = super::auth::client_token().map_err(RestError::Config)?;
        Ok(SchedulerRest { base, http, token })
    }

    /// `http(s)://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn state(&self) -> Result<SchedulerState, RestError> {
        self.json("/api/state").await
    }

    pub async fn executors(&self) -> Result<Vec<Executor>, RestError> {
        self.json("/api/executors").await
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, RestError> {
        self.json("/api/jobs").await
    }

    pub async fn job(&self, id: &str) -> Result<Job, RestError> {
        self.json(&format!("/api/job/{}", self.job_id(id)?)).await
    }

    pub async fn stages(&self, id: &str) -> Result<JobStages, RestError> {
        self.json(&format!("/api/job/{}/stages", self.job_id(id)?))
            .await
    }

    /// The job's plan as Graphviz text.
    pub async fn dot(&self, id: &str) -> Result<String, RestError> {
        let path = format!("/api/job/{}/dot", self.job_id(id)?);
        self.send(self.http.get(self.url(&path)), &path)
            .await
            .map(|(_, body)| body)
    }

    /// Cancels a job; a job that already finished answers 409 and is reported as not cancelled.
    pub async fn cancel(&self, id: &str) -> Result<CancelJob, RestError> {
        let path = format!("/api/job/{}", self.job_id(id)?);
        let url = self.url(&path);
        match self.send(self.http.patch(&url), &path).await {
            Ok((_, body)) => parse(&url, &body),
            Err(RestError::Status {
                status: 409, body, ..
            }) => parse(&url, &body),
            Err(e) => Err(e),
        }
    }

    fn job_id<'a>(&self, id: &'a str) -> Result<&'a str, RestError> {
        check_job_id(id).map_err(RestError::Config)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        let url = self.url(path);
        let (_, body) = self.send(self.http.get(&url), path).await?;
        parse(&url, &body)
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<(u16, String), RestError> {
        let url = self.url(path);
        if let Some(token) = &self.token {
            request = request.header("authorization", super::auth::bearer(token));
        }
        let response = request.send().await.map_err(|e| RestError::Unreachable {
            url: url.clone(),
            reason: if e.is_timeout() {
                format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
            } else {
                e.to_string()
            },
        })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| RestError::Body {
            url: url.clone(),
            reason: format!("reading it: {e}"),
        })?;
        match status {
            200..=299 => Ok((status, body)),
            404 => Err(RestError::NotFound { url }),
            _ => Err(RestError::Status {
                url,
                status,
                body: body.trim().chars().take(500).collect(),
            }),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, RestError> {
    serde_json::from_str(body).map_err(|e| RestError::Body {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Ballista 55's handlers serialise (their own types, written out by hand from
    /// `ballista-scheduler`'s `api/handlers.rs`) reads into the mirrors here.
    #[test]
    fn ballista_answers_read_into_the_mirrors() {
        let executors = r#"[{"id":"e1","host":"127.0.0.1","port":50051,"last_seen":1765000000000,
            "specification":{"vcores":2},
            "metrics":[{"type":"available_memory","value":1024},{"type":"peak_physical_memory","value":7}],
            "os_info":{"system_name":"Linux","kernel_ver":"6","os_ver":"12","os_ver_long":"Debian 12",
            "physical_cores":2,"num_disks":1,"total_disk_space":10,"total_available_disk_space":5,
            "open_files_limit":1024}}]"#;
        let executors: Vec<Executor> = parse("u", executors).unwrap();
        assert_eq!(executors[0].specification.vcores, 2);
        assert!(matches!(
            executors[0].metrics[1],
            ExecutorMetric::PeakPhysicalMemory(7)
        ));
        let state = r#"{"started":1,"scheduler_id":"s","version":"55.0.0","datafusion_version":"55.2.0",
            "substrait_support":false,"keda_support":false,"prometheus_support":true,
            "graphviz_support":false,"spark_support":false,"scheduling_policy":"pull-staged",
            "enable_embedded_flight_proxy":false}"#;
        let state: SchedulerState = parse("u", state).unwrap();
        assert_eq!(state.scheduling_policy, "pull-staged");
        let cancel: CancelJob = parse("u", r#"{"cancelled":false,"reason":"done"}"#).unwrap();
        assert_eq!(cancel.reason.as_deref(), Some("done"));
        let err = parse::<Vec<Executor>>("http://s/api/executors", "{}").unwrap_err();
        assert!(
            err.to_string().starts_with("http://s/api/executors: "),
            "{err}"
        );
    }

    #[test]
    fn job_ids_that_would_change_the_url_are_refused() {
        assert_eq!(check_job_id("aB3-_x"), Ok("aB3-_x"));
        for bad in ["", "../state", "a/b", "a?b", "a b", &"x".repeat(65)] {
            assert!(check_job_id(bad).is_err(), "{bad}");
        }
    }
}
