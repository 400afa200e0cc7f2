//! The serve tests' HTTP, through the harness's one client (`nomaly_tests::http`): one request,
//! and a run's event stream.

use super::now_ms;
use nomaly_tests::http::Request;
use std::time::Duration;

/// A request with a JSON body and a token, through the harness's one HTTP client.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let request = Request {
        method,
        path,
        body: Some(body.unwrap_or(b"")),
        token,
        ..Default::default()
    };
    request.send(port).map(|r| (r.status, r.body))
}

/// One event read from an SSE stream, with the time it arrived here.
#[derive(Debug)]
pub struct Received {
    pub at_ms: i64,
    pub event: serde_json::Value,
}

/// Reads a run's event stream until it ends.
pub fn follow_events(port: u16, id: i64, token: Option<&str>) -> Vec<Received> {
    let path = format!("/api/runs/{id}/events");
    let request = Request {
        token,
        timeout: Some(Duration::from_secs(60)),
        ..Request::get(&path)
    };
    let mut out = Vec::new();
    request.events(port, |data| {
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        out.push(Received {
            at_ms: now_ms(),
            event,
        });
        true
    });
    out
}
