//! TLS on the cluster's ports (SECURITY.md, "The cluster"). `--tls-cert/--tls-key` make a
//! scheduler serve its port, and an executor its Flight port, over TLS (rustls; ALPN `h2`);
//! `--tls-ca` names the CA that signed the cluster's certificates, which a process trusts for the
//! connections it opens to the others. Clients trust the CA in the file named by
//! `NOMALY_CLUSTER_CA`, and then speak HTTPS to the scheduler (gRPC and REST).
//!
//! Ballista 55 writes `http://` into every URL it connects to (the executor's scheduler URL, the
//! shuffle and result fetches); the endpoint override, the one hook those clients offer, rebuilds
//! the endpoint as `https://` with the CA ([`https_endpoint`]).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The CA (PEM) a client trusts for the cluster's TLS ports.
pub const CA_ENV: &str = "NOMALY_CLUSTER_CA";

/// A PEM file holding at least one certificate (the CA), read whole; the error names `flag`.
pub fn read_ca(path: &Path, flag: &str) -> Result<Arc<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(Arc::new(pem))
}

/// The CA this client trusts for a remote cluster (`NOMALY_CLUSTER_CA`), if any.
pub fn client_ca() -> Result<Option<Arc<Vec<u8>>>, String> {
    match std::env::var_os(CA_ENV).filter(|v| !v.is_empty()) {
        Some(f) => read_ca(Path::new(&f), CA_ENV).map(Some),
        None => Ok(None),
    }
}

/// `endpoint` (Ballista's, for an `http://host:port` URL) rebuilt as `https://host:port`, verified
/// against `ca` for the name `host`, with the timeouts Ballista's endpoints have.
pub fn https_endpoint(
    endpoint: Endpoint,
    ca: &[u8],
) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let uri = endpoint.uri();
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{uri}: no host to connect to"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(host);
    Ok(Endpoint::from_shared(format!("https://{authority}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(20))
        .tcp_keepalive(Some(Duration::from_secs(3600)))
        .http2_keep_alive_interval(Duration::from_secs(300))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// The base URL of the REST API of a remote scheduler at `address` (`host:port`): `https://`
/// when this client trusts a cluster CA, else `http://`.
pub fn rest_base(address: &str) -> Result<String, String> {
    Ok(match client_ca()? {
        Some(_) => format!("https://{address}"),
        None => format!("http://{address}"),
    })
}

/// An HTTP client for a scheduler's REST API that trusts the cluster CA (if any) besides the
/// system's roots.
pub fn rest_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = client_ca()? {
        for cert in
            reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| format!("{CA_ENV}: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("{CA_ENV}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballista_http_endpoints_become_https_on_the_same_authority() {
        for (from, to) in [
            ("http://127.0.0.1:50050", "https://127.0.0.1:50050/"),
            ("http://sched.example:7/", "https://sched.example:7/"),
            ("http://[::1]:9", "https://[::1]:9/"),
        ] {
            let e = https_endpoint(Endpoint::from_shared(from.to_string()).unwrap(), b"").unwrap();
            assert_eq!(e.uri().to_string(), to);
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = read_ca(&file, "--tls-ca").unwrap_err();
        assert!(
            e.contains("--tls-ca") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = read_ca(&dir.path().join("missing.pem"), "--tls-ca").unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
