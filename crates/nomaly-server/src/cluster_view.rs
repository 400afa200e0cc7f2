//! The Cluster view's data: `nomaly serve --scheduler` reads a Ballista scheduler's REST API
//! (executors, jobs, stages, plans) and cancels its jobs, so the dashboard shows the cluster
//! without the browser reaching the scheduler itself.

use crate::error::{Result, ServerError};
use serde_json::Value;
use std::time::Duration;

pub struct SchedulerProxy {
    base: String,
    http: reqwest::Client,
}

impl SchedulerProxy {
    /// From `ballista://host:port`, `http://host:port` or `host:port`.
    pub fn new(engine: &str) -> Result<SchedulerProxy> {
        let rest = engine
            .strip_prefix("ballista://")
            .or_else(|| engine.strip_prefix("http://"))
            .unwrap_or(engine)
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(ServerError::Config(format!(
                "--scheduler {engine}: give the scheduler as ballista://HOST:PORT"
            )));
        }
        let rest = if rest.contains(':') {
            rest.to_string()
        } else {
            format!("{rest}:{}", nomaly_engine::session::DEFAULT_SCHEDULER_PORT)
        };
        let http = nomaly_engine::cluster_tls::rest_client(Duration::from_secs(10))
            .map_err(|e| ServerError::Config(format!("--scheduler: {e}")))?;
        let base = nomaly_engine::cluster_tls::rest_base(&rest)
            .map_err(|e| ServerError::Config(format!("--scheduler: {e}")))?;
        Ok(SchedulerProxy { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, mut request: reqwest::RequestBuilder, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base);
        if let Some(token) =
            nomaly_engine::cluster_auth::client_token().map_err(ServerError::Config)?
        {
            request = request.header("authorization", nomaly_engine::cluster_auth::bearer(&token));
        }
        let response = request.send().await.map_err(|e| {
            ServerError::Upstream(format!(
                "the scheduler at {} does not answer ({e}); is `nomaly scheduler` running?",
                self.base
            ))
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(body),
            404 => Err(ServerError::NotFound(format!(
                "{url}: not found on the scheduler"
            ))),
            s => Err(ServerError::Upstream(format!(
                "{url}: the scheduler answered {s}: {}",
                body.trim()
            ))),
        }
    }

    pub async fn json(&self, path: &str) -> Result<Value> {
        let body = self
            .send(self.http.get(format!("{}{path}", self.base)), path)
            .await?;
        serde_json::from_str(&body).map_err(|e| {
            ServerError::Upstream(format!("{path}: the scheduler's answer is not JSON ({e})"))
        })
    }

    pub async fn text(&self, path: &str) -> Result<String> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    /// Cancels a job (Ballista's `PATCH /api/job/{id}`).
    pub async fn cancel(&self, job: &str) -> Result<Value> {
        let path = format!("/api/job/{job}");
        let body = self
            .send(self.http.patch(format!("{}{path}", self.base)), &path)
            .await?;
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// A Ballista job id: letters, digits, `-` and `_` (anything else never reaches the scheduler).
pub fn check_job_id(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id)
    } else {
        Err(ServerError::BadRequest(format!(
            "'{id}' is not a Ballista job id (letters, digits, - and _)"
        )))
    }
}
