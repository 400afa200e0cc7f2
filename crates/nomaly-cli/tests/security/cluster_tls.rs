//! TLS on the cluster's ports (SECURITY.md, "The cluster"), with real `nomaly scheduler` and
//! `nomaly executor` processes serving a self-signed certificate (made here with openssl) and
//! trusting it as their CA, the token on as well: a client that trusts the CA runs a query whose
//! stages shuffle between the executors and reads the REST API; plain text gets no answer from
//! the scheduler's port or an executor's Flight port, and a client without the CA is refused.

use crate::cluster::{Cluster, SHUFFLED_ANSWER};
use crate::pipeline::webhooks::self_signed;
use crate::{nomaly_env, stderr, stdout};
use std::process::Command;

#[test]
fn a_cluster_speaks_tls_on_every_port() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let token = "tls-cluster-token";
    let token_file = dir.path().join("cluster.token");
    std::fs::write(&token_file, token).unwrap();
    let flags = [
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-ca",
        cert,
        "--auth-token-file",
        token_file.to_str().unwrap(),
    ];
    let env = [
        ("NOMALY_CLUSTER_TOKEN".to_string(), token.to_string()),
        ("NOMALY_CLUSTER_CA".to_string(), cert.to_string()),
    ];
    let cluster = Cluster::start_with_env(2, &flags, &flags, &env);
    let client = [("NOMALY_CLUSTER_TOKEN", token), ("NOMALY_CLUSTER_CA", cert)];

    // A query that shuffles between the executors, over TLS end to end.
    let o = cluster.shuffled_query(dir.path(), &client);
    cluster.assert_succeeded(&o);
    assert_eq!(stdout(&o), SHUFFLED_ANSWER);
    // The REST API through `nomaly jobs`, over HTTPS.
    let address = format!("127.0.0.1:{}", cluster.port);
    let o = nomaly_env(&["jobs", "--scheduler", &address, "--json"], &client);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("executors"), "{}", stdout(&o));

    // Without the CA the client is refused; plain text gets no HTTP answer from any port.
    let o = cluster.shuffled_query(dir.path(), &[("NOMALY_CLUSTER_TOKEN", token)]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    let executors = cluster
        .json("/api/executors")
        .expect("executors over HTTPS");
    let mut ports = vec![cluster.port];
    for e in executors.as_array().unwrap() {
        ports.push(e["port"].as_u64().unwrap() as u16);
    }
    assert_eq!(ports.len(), 3);
    for port in ports {
        let plain = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://127.0.0.1:{port}/healthz"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&plain.stdout),
            "000",
            "port {port} answered plain text"
        );
    }
}
