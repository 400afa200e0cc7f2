//! Arrow Flight SQL on `nomaly scheduler --flight-sql`: a Flight SQL client (Rust's `arrow-flight`,
//! what ADBC and JDBC drivers speak) runs `detect_anomalies` on the cluster and gets the local
//! engine's answer; with `--flight-sql-token-file`, a client without the token is refused.

use super::Cluster;
use crate::{nomaly, stderr, stdout};
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use futures::TryStreamExt;
use tonic::transport::Channel;

const QUERY: &str = "SELECT value AS id, detect_anomalies('iforest', CAST((value * 7919) % 1000 AS DOUBLE))['score'] AS s \
                     FROM generate_series(1, 3000) ORDER BY s DESC, id LIMIT 5";

async fn client(port: u16) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the scheduler");
    FlightSqlServiceClient::new(channel)
}

/// Runs `sql`, returning (id, score) rows, or the error's status code and message.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<(i64, f64)>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let batches: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        for b in batches {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let scores = b.column(1).as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                assert!(!scores.is_null(i));
                rows.push((ids.value(i), scores.value(i)));
            }
        }
    }
    Ok(rows)
}

#[test]
fn flight_sql_clients_run_detectors_and_need_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "correct-horse-battery\n").unwrap();
    let cluster = Cluster::start_with(
        1,
        &[
            "--flight-sql",
            "--flight-sql-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );

    let local = nomaly(&["sql", "--format", "csv", "-e", QUERY]);
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    let expected: Vec<(i64, f64)> = stdout(&local)
        .lines()
        .skip(1)
        .map(|l| {
            let (id, s) = l.split_once(',').unwrap();
            (id.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    assert_eq!(expected.len(), 5);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // No handshake, or the wrong token: refused.
        let mut anonymous = client(cluster.port).await;
        let refused = run(&mut anonymous, QUERY).await.unwrap_err();
        let unauthenticated = "does not have valid authentication credentials";
        assert!(refused.contains(unauthenticated), "{refused}");
        let mut wrong = client(cluster.port).await;
        let e = wrong.handshake("ann", "battery-staple").await.unwrap_err();
        assert!(e.to_string().contains(unauthenticated), "{e}");

        let mut ann = client(cluster.port).await;
        ann.handshake("ann", "correct-horse-battery")
            .await
            .expect("the token is accepted");
        let rows = run(&mut ann, QUERY).await.expect("the query runs");
        assert_eq!(rows.len(), expected.len());
        for ((id, s), (eid, es)) in rows.iter().zip(&expected) {
            assert_eq!(id, eid);
            assert!((s - es).abs() <= 1e-12 * es.abs(), "{s} vs {es}");
        }
    });
}
