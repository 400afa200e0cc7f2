//! The terminal side of the API: what `nomaly submit | runs | status | cancel | schedule` call.

use crate::backfills::{BackfillList, BackfillRequest, BackfillView};
use crate::bodies::{ErrorBody, RunList, RunView, ScheduleList, ScheduleRequest};
use crate::run_logs::LogList;

/// Which runs `runs` lists.
#[derive(Debug, Clone, Default)]
pub struct RunsQuery<'a> {
    pub state: Option<&'a str>,
    pub pipeline: Option<&'a str>,
    pub limit: usize,
    pub offset: usize,
}
use crate::server::{QueueView, ScheduleView, StreamEvent, SubmitRequest};
use futures::StreamExt;
use nomaly_pipeline::RunReport;
use serde::de::DeserializeOwned;

/// The server a CLI talks to by default (`nomaly serve`'s default address).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// A client error: the server's message, or why it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the nomaly server at {url}: {reason}; start one with `nomaly serve`, or \
         point --server (or NOMALY_SERVER) at it"
    )]
    Unreachable { url: String, reason: String },
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("the server's answer is not what this nomaly expects: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The exit code: 2 for a request the server refused as invalid, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Status { status, .. } if (400..500).contains(status) => 2,
            _ => 1,
        }
    }
}

pub struct ServerClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ServerClient {
    pub fn new(base: &str, token: Option<String>) -> ServerClient {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        ServerClient {
            base,
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = r.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.send(r)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub async fn submit(&self, req: &SubmitRequest) -> Result<RunView, ClientError> {
        self.json(self.request(reqwest::Method::POST, "/api/runs").json(req))
            .await
    }

    pub async fn runs(&self, query: &RunsQuery<'_>) -> Result<RunList, ClientError> {
        let mut r = self.get("/api/runs").query(&[
            ("limit", query.limit.to_string()),
            ("offset", query.offset.to_string()),
        ]);
        if let Some(s) = query.state {
            r = r.query(&[("state", s)]);
        }
        if let Some(p) = query.pipeline {
            r = r.query(&[("pipeline", p)]);
        }
        self.json(r).await
    }

    /// A run's log lines after `after` (0: all).
    pub async fn logs(&self, id: i64, after: i64) -> Result<LogList, ClientError> {
        self.json(self.get(&format!("/api/runs/{id}/logs?after={after}")))
            .await
    }

    pub async fn run(&self, id: i64) -> Result<RunView, ClientError> {
        self.json(self.get(&format!("/api/runs/{id}"))).await
    }

    /// The report of a finished run.
    pub async fn report(&self, id: i64) -> Result<RunReport, ClientError> {
        self.json(self.get(&format!("/api/runs/{id}/report"))).await
    }

    /// `cancel`, `retry` or `resume`.
    pub async fn act(&self, id: i64, action: RunAction) -> Result<RunView, ClientError> {
        let path = format!("/api/runs/{id}/{}", action.name());
        self.json(self.request(reqwest::Method::POST, &path)).await
    }

    pub async fn queue(&self) -> Result<QueueView, ClientError> {
        self.json(self.get("/api/queue")).await
    }

    pub async fn schedules(&self) -> Result<ScheduleList, ClientError> {
        self.json(self.get("/api/schedules")).await
    }

    pub async fn add_schedule(
        &self,
        path: &str,
        priority: Option<i64>,
    ) -> Result<ScheduleView, ClientError> {
        let body = ScheduleRequest {
            path: path.to_string(),
            priority,
        };
        self.json(
            self.request(reqwest::Method::POST, "/api/schedules")
                .json(&body),
        )
        .await
    }

    pub async fn backfill(&self, req: &BackfillRequest) -> Result<BackfillView, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, "/api/backfills")
                .json(req),
        )
        .await
    }

    pub async fn backfills(&self, limit: usize) -> Result<BackfillList, ClientError> {
        self.json(self.get(&format!("/api/backfills?limit={limit}")))
            .await
    }

    pub async fn backfill_view(&self, id: i64) -> Result<BackfillView, ClientError> {
        self.json(self.get(&format!("/api/backfills/{id}"))).await
    }

    pub async fn cancel_backfill(&self, id: i64) -> Result<BackfillView, ClientError> {
        let path = format!("/api/backfills/{id}/cancel");
        self.json(self.request(reqwest::Method::POST, &path)).await
    }

    pub async fn remove_schedule(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/api/schedules/{name}");
        self.send(self.request(reqwest::Method::DELETE, &path))
            .await
            .map(|_| ())
    }

    /// Follows a run's event stream, calling `on_event` for each, until it ends (`finished`).
    pub async fn follow(
        &self,
        id: i64,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> Result<(), ClientError> {
        let response = self
            .send(self.request(reqwest::Method::GET, &format!("/api/runs/{id}/events")))
            .await?;
        let mut bytes = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse_block(&block) {
                    on_event(&event);
                }
            }
        }
        Ok(())
    }
}

/// What `act` asks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    /// Stop it; committed chunks are kept.
    Cancel,
    /// Start it again from nothing.
    Retry,
    /// Continue from its committed chunks.
    Resume,
}

impl RunAction {
    pub fn name(self) -> &'static str {
        match self {
            RunAction::Cancel => "cancel",
            RunAction::Retry => "retry",
            RunAction::Resume => "resume",
        }
    }
}

/// The event in one SSE block (`event:` / `data:` lines; comments and keep-alives give None).
pub fn parse_sse_block(block: &str) -> Option<StreamEvent> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_and_keep_alives_are_skipped() {
        let e = parse_sse_block(
            "event: progress\ndata: {\"run\":3,\"kind\":\"progress\",\"at_ms\":5,\"data\":{}}\n\n",
        )
        .unwrap();
        assert_eq!((e.run, e.event.kind(), e.at_ms), (3, "progress", 5));
        assert!(parse_sse_block(":\n\n").is_none());
    }
}
