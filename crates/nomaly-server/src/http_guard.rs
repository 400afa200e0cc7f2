//! Requests a browser could be tricked into sending are refused (SECURITY.md, "The HTTP API").
//!
//! A page on another site can make a visitor's browser send requests to a server on loopback:
//! "simple" requests (a form's `text/plain` POST) reach the server without a CORS preflight, and
//! DNS rebinding makes another name resolve to 127.0.0.1. So, before any route:
//! - the `Host` must be a name this server answers to (loopback names and the bound address,
//!   plus `--allow-host`), unless it listens on every address (then the token guards it);
//! - an `Origin`, when sent, must be this server's own (`http(s)://` + the `Host`);
//! - a request with a body must say `Content-Type: application/json`, which no form can send.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The names a server answers to in `Host`; `None` answers to any (a server bound to every
/// address, whose token is required).
#[derive(Debug, Clone)]
pub struct HostRule {
    names: Option<Arc<Vec<String>>>,
}

impl HostRule {
    /// Loopback names, the bound address and the extra names (`--allow-host`).
    pub fn for_bind(bind: std::net::IpAddr, extra: &[String]) -> HostRule {
        if bind.is_unspecified() && extra.is_empty() {
            return HostRule { names: None };
        }
        let mut names: Vec<String> = ["127.0.0.1", "localhost", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !bind.is_unspecified() {
            names.push(bind.to_string());
        }
        names.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        HostRule {
            names: Some(Arc::new(names)),
        }
    }

    /// Any host (tests and embedders that put their own front in place).
    pub fn any() -> HostRule {
        HostRule { names: None }
    }

    fn allows(&self, host_header: &str) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        let name = host_name(host_header);
        names.contains(&name)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`; lower-case.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Why a request is refused before routing, if it is. `authority` is the request URI's (HTTP/2
/// sends the host there, as `:authority`, instead of a `Host` header).
pub fn check(
    rule: &HostRule,
    method: &Method,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
        .unwrap_or("");
    if !rule.allows(host) {
        return Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to the host '{}'; use its address, or start it \
                 with --allow-host for that name",
                host_name(host)
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = [format!("http://{host}"), format!("https://{host}")];
        if !own.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused: Origin {origin} is not this server's own; \
                     call the API from its own dashboard or from a non-browser client"
                ),
            ));
        }
    }
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && has_body {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Some(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request bodies must be JSON: send `Content-Type: application/json`".into(),
            ));
        }
    }
    None
}

/// The middleware form of [`check`].
pub async fn guard(State(rule): State<HostRule>, request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str());
    match check(&rule, request.method(), authority, request.headers()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn foreign_hosts_origins_and_form_bodies_are_refused() {
        let rule = HostRule::for_bind("127.0.0.1".parse().unwrap(), &[]);
        let status =
            |m: Method, h: &HeaderMap| check(&rule, &m, None, h).map(|r| r.status().as_u16());
        let own = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert_eq!(status(Method::GET, &own), None);
        let rebound = headers(&[(header::HOST, "attacker.example:8080")]);
        assert_eq!(status(Method::GET, &rebound), Some(421));
        let cross = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert_eq!(status(Method::POST, &cross), Some(403));
        let same = headers(&[
            (header::HOST, "localhost:8080"),
            (header::ORIGIN, "http://localhost:8080"),
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CONTENT_LENGTH, "2"),
        ]);
        assert_eq!(status(Method::POST, &same), None);
        let form = headers(&[
            (header::HOST, "127.0.0.1"),
            (header::CONTENT_TYPE, "text/plain"),
            (header::CONTENT_LENGTH, "10"),
        ]);
        assert_eq!(status(Method::POST, &form), Some(415));
        let any = HostRule::for_bind("0.0.0.0".parse().unwrap(), &[]);
        assert!(check(&any, &Method::GET, None, &rebound).is_none());
        // HTTP/2 names the host in the URI's authority, not in a Host header.
        let h2 = HeaderMap::new();
        assert!(check(&rule, &Method::GET, Some("127.0.0.1:8080"), &h2).is_none());
        assert!(check(&rule, &Method::GET, Some("evil.example"), &h2).is_some());
        assert_eq!(host_name("[::1]:80"), "::1");
    }
}
