//! The cluster token (SECURITY.md, "The cluster"): `nomaly scheduler --auth-token-file F` makes
//! its port refuse every request without the token, but for health checks, the Cluster page's
//! static files and Flight SQL (which checks the same token, or its own
//! `--flight-sql-token-file`, in its handshake). `nomaly executor --auth-token-file F` presents
//! it to the scheduler and makes the executor's Flight port (shuffle and result fetches) refuse
//! requests without it. Clients (`nomaly sql --engine ballista://`, pipelines on a cluster,
//! `nomaly jobs`, `nomaly serve --scheduler`) send it from `NOMALY_CLUSTER_TOKEN` or the file
//! named by `NOMALY_CLUSTER_TOKEN_FILE`.
//!
//! How it travels: as `authorization: Bearer <token>` where the caller can set metadata (REST,
//! the client's submissions), and as a `nomaly-cluster-token/<token>` product in `user-agent`
//! where Ballista 55 lets us shape only the connection (the executors' calls to the scheduler,
//! every shuffle and result fetch): its endpoint override is the one hook those clients offer.
//! Both are read the same way by [`require_token`], compared in constant time.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ballista_core::extension::{BallistaGrpcMetadataInterceptor, SessionConfigExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use datafusion::prelude::SessionConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The token a client sends.
pub const TOKEN_ENV: &str = "NOMALY_CLUSTER_TOKEN";
/// A file holding the token a client sends (when `NOMALY_CLUSTER_TOKEN` is not set).
pub const TOKEN_FILE_ENV: &str = "NOMALY_CLUSTER_TOKEN_FILE";

/// The `user-agent` product that carries the token on connections Ballista builds itself.
const AGENT_PRODUCT: &str = "nomaly-cluster-token/";

/// What a guarded port lets through without the token.
#[derive(Clone, Debug)]
pub struct ClusterGuard {
    token: Arc<String>,
    /// Flight SQL is on and checks a token in its own handshake, so Flight calls pass here (a
    /// scheduler without Flight SQL serves Ballista's Flight proxy on that path: guarded).
    flight_checks_itself: bool,
}

impl ClusterGuard {
    pub fn new(token: Arc<String>, flight_checks_itself: bool) -> ClusterGuard {
        ClusterGuard {
            token,
            flight_checks_itself,
        }
    }

    fn is_open(&self, path: &str) -> bool {
        matches!(path, "/" | "/healthz" | "/readyz")
            || path.starts_with("/ui/")
            || (self.flight_checks_itself && path.starts_with("/arrow.flight.protocol."))
    }
}

/// A token file's token; an empty or unreadable file, or a token that cannot travel in a header
/// (anything but visible ASCII), is an error naming it.
pub fn read_token_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{flag} {}: the file is empty; put the token in it",
            path.display()
        ));
    }
    check_token(token).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    Ok(token.to_string())
}

/// A token travels in headers: visible ASCII only, no spaces, at most 4 KiB.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be one word of visible ASCII (at most 4096 characters), \
                    e.g. `openssl rand -hex 32`"
                .into(),
        );
    }
    Ok(())
}

/// What a process presents on the connections Ballista opens for it (to the scheduler, to
/// executors' Flight ports): the cluster token and the CA its TLS ports are signed by.
#[derive(Clone, Debug, Default)]
pub struct ClusterLink {
    pub token: Option<Arc<String>>,
    pub ca: Option<Arc<Vec<u8>>>,
}

impl ClusterLink {
    /// An endpoint override: `https://` verified by the CA (if any), and every call carrying the
    /// token (in `user-agent`, the one header Ballista 55 lets an endpoint override set). `None`
    /// when there is nothing to present.
    pub fn endpoint_override(&self) -> Option<ballista_core::extension::EndpointOverrideFn> {
        if self.token.is_none() && self.ca.is_none() {
            return None;
        }
        let (token, ca) = (self.token.clone(), self.ca.clone());
        Some(Arc::new(move |endpoint: Endpoint| {
            let mut endpoint = endpoint;
            if let Some(ca) = &ca {
                endpoint = crate::ballista::tls::https_endpoint(endpoint, ca)?;
            }
            if let Some(token) = &token {
                endpoint = endpoint.user_agent(format!("{AGENT_PRODUCT}{token}"))?;
            }
            Ok(endpoint)
        }))
    }
}

/// The token a request presents: a bearer `authorization`, or the `user-agent` product.
fn presented_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())?
            .split_ascii_whitespace()
            .find_map(|product| product.strip_prefix(AGENT_PRODUCT))
    })
}

/// The token this client sends, if any.
pub fn client_token() -> Result<Option<String>, String> {
    if let Some(t) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    match std::env::var_os(TOKEN_FILE_ENV) {
        Some(f) => read_token_file(std::path::Path::new(&f), TOKEN_FILE_ENV).map(Some),
        None => Ok(None),
    }
}

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `config` with the client's token on every gRPC call Ballista makes (in the metadata of its
/// calls to the scheduler, and on the connections that fetch results from executors) and, for a
/// `remote` cluster, TLS verified by the client's cluster CA (`NOMALY_CLUSTER_CA`).
pub fn with_client_credentials(config: SessionConfig, remote: bool) -> SessionConfig {
    let token = client_token().unwrap_or_else(|e| {
        tracing::warn!("{e}; sending no cluster token");
        None
    });
    let ca = if remote {
        crate::ballista::tls::client_ca().unwrap_or_else(|e| {
            tracing::warn!("{e}; connecting without TLS");
            None
        })
    } else {
        None
    };
    let config = match &token {
        Some(t) => {
            config.with_ballista_grpc_metadata(HashMap::from([("authorization".into(), bearer(t))]))
        }
        None => config,
    };
    let link = ClusterLink {
        token: token.map(Arc::new),
        ca,
    };
    match link.endpoint_override() {
        Some(f) => config.with_ballista_override_create_grpc_client_endpoint(f),
        None => config,
    }
}

/// A client of the scheduler at `url` whose every call carries the client's token; an
/// `https://` URL is verified by the client's cluster CA.
pub async fn scheduler_client(
    url: String,
) -> Result<SchedulerGrpcClient<InterceptedService<Channel, BallistaGrpcMetadataInterceptor>>, String>
{
    let channel = connect(&url).await?;
    let metadata = match client_token()? {
        Some(t) => HashMap::from([("authorization".to_string(), bearer(&t))]),
        None => HashMap::new(),
    };
    Ok(SchedulerGrpcClient::with_interceptor(
        channel,
        BallistaGrpcMetadataInterceptor::new(metadata),
    ))
}

/// A channel to `url`: plain for `http://`, TLS with the client's cluster CA for `https://`.
pub async fn connect(url: &str) -> Result<Channel, String> {
    let endpoint = create_grpc_client_endpoint(url.to_string(), Some(&GrpcClientConfig::default()))
        .map_err(|e| format!("{url}: {e}"))?;
    let endpoint = match (
        url.starts_with("https://"),
        crate::ballista::tls::client_ca()?,
    ) {
        (true, Some(ca)) => crate::ballista::tls::https_endpoint(endpoint, &ca)
            .map_err(|e| format!("{url}: {e}"))?,
        (true, None) => {
            return Err(format!(
                "{url}: TLS needs the cluster's CA: set {} to its PEM file",
                crate::ballista::tls::CA_ENV
            ));
        }
        (false, _) => endpoint,
    };
    endpoint.connect().await.map_err(|e| format!("{url}: {e}"))
}

/// Compares in time that depends on the lengths only, not on where the bytes first differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A guarded port's middleware (the scheduler's, an executor's Flight port): refuses requests
/// without the token (REST: 401, gRPC: `UNAUTHENTICATED`).
pub async fn require_token(
    State(guard): State<ClusterGuard>,
    request: Request,
    next: Next,
) -> Response {
    if guard.is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let given = presented_token(request.headers()).unwrap_or("");
    if same_secret(given.as_bytes(), guard.token.as_bytes()) {
        return next.run(request).await;
    }
    let message = "this scheduler needs its token: clients set NOMALY_CLUSTER_TOKEN (or \
                   NOMALY_CLUSTER_TOKEN_FILE); REST calls send `Authorization: Bearer <token>`";
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unauthenticated(message).into_http::<axum::body::Body>()
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_and_the_page_are_open_and_flight_when_it_checks_itself() {
        let token = Arc::new("t".to_string());
        let plain = ClusterGuard::new(token.clone(), false);
        let flight_sql = ClusterGuard::new(token, true);
        for open in ["/healthz", "/readyz", "/", "/ui/app.js"] {
            assert!(plain.is_open(open), "{open}");
        }
        for guarded in [
            "/api/jobs",
            "/api/job/x",
            "/ballista.protobuf.SchedulerGrpc/ExecuteQuery",
            "/ballista.protobuf.SchedulerGrpc/RegisterExecutor",
            "/ballista.protobuf.SchedulerGrpc/PollWork",
            "/ballista.protobuf.SchedulerGrpc/NewMethod",
            "/arrow.flight.protocol.FlightService/DoGet",
            "/ballista-tui",
        ] {
            assert!(!plain.is_open(guarded), "{guarded}");
        }
        assert!(flight_sql.is_open("/arrow.flight.protocol.FlightService/Handshake"));
        assert!(!flight_sql.is_open("/ballista.protobuf.SchedulerGrpc/PollWork"));
    }

    #[test]
    fn the_token_is_read_from_a_bearer_or_the_user_agent() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            header::USER_AGENT,
            "nomaly-cluster-token/abc tonic/0.14.9".parse().unwrap(),
        );
        assert_eq!(presented_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(presented_token(&h), Some("xyz"));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            "curl/8 nomaly-cluster-tokenabc".parse().unwrap(),
        );
        assert_eq!(presented_token(&h), None);
    }

    #[test]
    fn tokens_that_cannot_travel_in_a_header_are_refused() {
        assert!(check_token("0123abcdef").is_ok());
        for bad in ["two words", "tab\there", "é", &"x".repeat(4097)] {
            assert!(check_token(bad).is_err(), "{bad}");
        }
    }
}
