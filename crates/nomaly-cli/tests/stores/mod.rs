//! Remote inputs through object-store servers on 127.0.0.1, read by the real binary.
//!
//! - S3: `moto_server`, an S3-compatible server (the MinIO-style endpoint case: `AWS_ENDPOINT_URL`);
//! - Azure Blob: Azurite, Microsoft's emulator (`AZURE_STORAGE_USE_EMULATOR`);
//! - HTTP(S) and Google Cloud Storage: [`FileServer`] below. Nomaly's GCS client speaks GCS's XML
//!   API, which no emulator installable from this machine's registries serves, so the server here
//!   answers the three requests a read needs (list, HEAD, ranged GET) in that API's format.
//!
//! Every remote run must write part files byte-identical to the same pipeline on the local copy.
//! `scripts/test-services.sh` (run by `scripts/test.sh`) installs moto and Azurite under ~/.cache.

use super::{free_port, nomaly_env, part_files, report, stderr, stdout, write_tx_parquet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod incremental;
mod outputs;
mod remote_lock;

const BUCKET: &str = "nomaly-in";
/// 2 files × 10000 rows in 2500-row row groups: 8 chunks at chunk_rows = 2500.
const FILE_ROWS: u64 = 10_000;
const CHUNK_ROWS: u64 = 2_500;

fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME"))
}

/// A tool installed by scripts/test-services.sh.
fn tool(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-services.sh (it installs moto and Azurite under ~/.cache), or set {env}",
        path.display()
    );
    path
}

/// The test services are there, or the test is to be skipped: a bare `cargo test` (without
/// scripts/test.sh) on a machine where scripts/test-services.sh never ran skips the object-store
/// tests with a message. scripts/test.sh sets the variables, so there a missing tool fails.
pub(crate) fn services_installed() -> bool {
    let vars = [
        "NOMALY_TEST_PYTHON",
        "NOMALY_TEST_MOTO",
        "NOMALY_TEST_AZURITE",
    ];
    if vars.iter().any(|v| std::env::var_os(v).is_some()) {
        return true;
    }
    let installed = home().join(".cache/nomaly-py/bin/moto_server").exists()
        && home()
            .join(".cache/nomaly-node/node_modules/.bin/azurite-blob")
            .exists();
    if !installed {
        eprintln!(
            "skipped: the S3/Azure servers are not installed; ./scripts/test.sh installs them (scripts/test-services.sh) and runs this test"
        );
    }
    installed
}

pub(crate) fn python() -> PathBuf {
    tool(
        "NOMALY_TEST_PYTHON",
        home().join(".cache/nomaly-py/bin/python"),
    )
}

/// A server process, killed when the test ends.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(name: &str, mut cmd: Command, port: u16) -> Service {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut service = Service { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("{name} exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "{name} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points an S3 client at this (moto) server with its test credentials.
    fn s3_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "nomaly".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "nomaly-secret".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }
}

/// The S3 emulator's program.
pub(crate) fn moto_server() -> PathBuf {
    tool(
        "NOMALY_TEST_MOTO",
        home().join(".cache/nomaly-py/bin/moto_server"),
    )
}

fn moto() -> Service {
    let port = free_port();
    let mut cmd = Command::new(moto_server());
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    Service::start("moto_server", cmd, port)
}

fn azurite(dir: &Path) -> Service {
    let port = free_port();
    let mut cmd = Command::new(tool(
        "NOMALY_TEST_AZURITE",
        home().join(".cache/nomaly-node/node_modules/.bin/azurite-blob"),
    ));
    cmd.args([
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--location",
        dir.to_str().unwrap(),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--silent",
    ]);
    Service::start("azurite", cmd, port)
}

/// Uploads every file under `dir` into the input bucket with scripts/store_fixture.py.
fn upload(kind: &str, endpoint: &str, dir: &Path) {
    upload_into(kind, endpoint, BUCKET, dir)
}

/// Uploads every file under `dir` into `bucket` (created if missing).
fn upload_into(kind: &str, endpoint: &str, bucket: &str, dir: &Path) {
    let o = Command::new(python())
        .arg(super::root().join("scripts/store_fixture.py"))
        .args([kind, endpoint, bucket, dir.to_str().unwrap()])
        .output()
        .expect("run store_fixture.py");
    assert!(o.status.success(), "upload to {kind}: {}", stderr(&o));
}

/// Runs the binary with an environment of owned values.
fn cli(args: &[&str], env: &[(&str, String)]) -> Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    nomaly_env(args, &env)
}

/// The fixtures: `<dir>/<BUCKET>/tx/{a,b}.parquet` (ids 0..20000 over both) and
/// `<dir>/<BUCKET>/tx.csv` (the same rows as CSV).
fn write_fixtures(dir: &Path) -> PathBuf {
    let root = dir.join(BUCKET);
    std::fs::create_dir_all(root.join("tx")).unwrap();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let path = root.join(format!("tx/{name}.parquet"));
        write_tx_parquet(&path, i as u64 * FILE_ROWS, FILE_ROWS, CHUNK_ROWS);
    }
    let sql = format!(
        "COPY (SELECT * FROM t ORDER BY id) TO '{}' STORED AS CSV",
        root.join("tx.csv").display()
    );
    let table = format!("t={}/", root.join("tx").display());
    let o = cli(&["sql", "--table", &table, "-e", &sql], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    root
}

/// A run's report and part files.
type RunOutput = (serde_json::Value, Vec<(String, Vec<u8>)>);

/// Runs `input` through the hbos pipeline into `<work>/<name>/`; returns the report and part files.
fn run(
    work: &Path,
    name: &str,
    input: &str,
    env: &[(&str, String)],
) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    run_on(work, name, input, env, "local")
}

/// [`run`] on `engine`.
fn run_on(
    work: &Path,
    name: &str,
    input: &str,
    env: &[(&str, String)],
    engine: &str,
) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "input = \"{input}\"\noutput = \"out/\"\n[detect]\nalgorithm = \"hbos\"\n\
             columns = [\"amount\", \"latency_ms\"]\n[run]\nchunk_rows = {CHUNK_ROWS}\n"
        ),
    )
    .unwrap();
    let o = cli(
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--engine",
            engine,
            "--json",
            "--no-progress",
        ],
        env,
    );
    assert_eq!(o.status.code(), Some(0), "{input}: {}", stderr(&o));
    (report(&o), part_files(&dir.join("out")))
}

fn assert_same_output(
    what: &str,
    local: &(serde_json::Value, Vec<(String, Vec<u8>)>),
    remote: &(serde_json::Value, Vec<(String, Vec<u8>)>),
) {
    assert_eq!(remote.0["status"], "succeeded", "{what}: {}", remote.0);
    for key in ["input_rows", "output_rows", "anomalies"] {
        assert_eq!(remote.0[key], local.0[key], "{what}: {key}");
    }
    assert_eq!(remote.0["chunks"], local.0["chunks"], "{what}: chunks");
    crate::assert_same_parts(what, &local.1, &remote.1);
}

#[test]
fn s3_and_azure_inputs_score_like_their_local_copy() {
    if !services_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = write_fixtures(work.path());
    let s3 = moto();
    upload("s3", &s3.endpoint(), &root);
    let az = azurite(&work.path().join("azurite"));
    upload("azure", &az.endpoint(), &root);

    let local = run(
        work.path(),
        "local",
        &format!("{}/tx/*.parquet", root.display()),
        &[],
    );
    assert_eq!(local.0["input_rows"], 2 * FILE_ROWS);
    assert_eq!(local.0["chunks"], 8, "{}", local.0);
    assert_eq!(local.1.len(), 8);

    let s3_env = s3.s3_env();
    let remote = run(
        work.path(),
        "s3",
        &format!("s3://{BUCKET}/tx/*.parquet"),
        &s3_env,
    );
    assert_same_output("s3 glob", &local, &remote);

    s3_on_a_cluster(work.path(), &local, &s3_env);

    let az_env = vec![
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", az.endpoint()),
    ];
    let remote = run(
        work.path(),
        "azure",
        &format!("az://{BUCKET}/tx/*.parquet"),
        &az_env,
    );
    assert_same_output("azure glob", &local, &remote);

    // `nomaly sql` reads a prefix (format from its first file) and a single CSV object.
    let o = cli(
        &[
            "sql",
            "--format",
            "csv",
            "--table",
            &format!("t=s3://{BUCKET}/tx/"),
            "--table",
            &format!("c=s3://{BUCKET}/tx.csv"),
            "-e",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids, (SELECT count(*) FROM c) AS csv_rows FROM t",
        ],
        &s3_env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "n,ids,csv_rows\n20000,20000,20000\n"
    );

    store_errors_name_the_url_and_the_settings(work.path(), &s3_env);
}

/// On a cluster the executors read the objects: they build the store from their own environment
/// (the scheduler too, to plan SQL over an s3:// table).
fn s3_on_a_cluster(work: &Path, local: &RunOutput, s3_env: &[(&str, String)]) {
    let env: Vec<(String, String)> = s3_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cluster = crate::cluster::Cluster::start_with_env(2, &[], &[], &env);
    let on_cluster = run_on(
        work,
        "s3_cluster",
        &format!("s3://{BUCKET}/tx/*.parquet"),
        s3_env,
        &cluster.engine(),
    );
    assert_same_output("s3 glob on a cluster", local, &on_cluster);
    let o = cli(
        &[
            "sql",
            "--engine",
            &cluster.engine(),
            "--format",
            "csv",
            "--table",
            &format!("t=s3://{BUCKET}/tx/"),
            "-e",
            "SELECT count(*) AS n FROM t",
        ],
        s3_env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("n\n{}", 2 * FILE_ROWS));
    drop(cluster);
}

/// A bucket that is not there, an endpoint nobody listens on: exit 2 naming the URL, the
/// server's reason and the variables to check; nothing written.
fn store_errors_name_the_url_and_the_settings(work: &Path, s3_env: &[(&str, String)]) {
    // A bucket that is not there: exit 2, the URL, the server's reason, where settings come from.
    let missing = work.join("missing");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(
        missing.join("p.toml"),
        "input = \"s3://no-such-bucket/tx.parquet\"\noutput = \"out/\"\n[detect]\nalgorithm = \"zscore\"\ncolumns = [\"amount\"]\n",
    )
    .unwrap();
    let o = cli(&["run", missing.join("p.toml").to_str().unwrap()], s3_env);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for part in [
        "s3://no-such-bucket/tx.parquet",
        "NoSuchBucket",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(err.contains(part), "missing '{part}' in: {err}");
    }
    assert!(!err.contains("<?xml"), "{err}");
    assert!(!missing.join("out").exists(), "nothing written on failure");

    // An endpoint nobody listens on: exit 2 within seconds, naming the cause and the variable.
    let mut dead_env = s3_env.to_vec();
    dead_env[3].1 = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let o = cli(
        &[
            "run",
            missing.join("p.toml").to_str().unwrap(),
            "--set",
            &format!("input=s3://{BUCKET}/tx/a.parquet"),
        ],
        &dead_env,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an unreachable store fails planning quickly, took {:?}",
        started.elapsed()
    );
    assert!(!missing.join("out").exists(), "nothing written on failure");
}

#[test]
fn http_and_gcs_inputs_score_like_their_local_copy() {
    let work = tempfile::tempdir().unwrap();
    let root = write_fixtures(work.path());
    let server = FileServer::start(work.path());

    // CSV over HTTP, chunked by byte ranges (ranged GETs) like the local file.
    let local = run(
        work.path(),
        "local_csv",
        &root.join("tx.csv").display().to_string(),
        &[],
    );
    assert!(local.1.len() >= 4, "{}", local.0);
    let remote = run(
        work.path(),
        "http_csv",
        &format!("{}/{BUCKET}/tx.csv", server.endpoint()),
        &[],
    );
    assert_same_output("http csv", &local, &remote);
    assert!(
        server.ranged_gets() >= local.1.len(),
        "each chunk is a ranged read, saw {}",
        server.ranged_gets()
    );

    // Parquet from GCS, listed by glob.
    let local = run(
        work.path(),
        "local_pq",
        &format!("{}/tx/*.parquet", root.display()),
        &[],
    );
    let key = format!(
        "{{\"gcs_base_url\": \"{}\", \"disable_oauth\": true, \"client_email\": \"\", \"private_key\": \"\", \"private_key_id\": \"\"}}",
        server.endpoint()
    );
    let gcs_env = vec![
        ("GOOGLE_SERVICE_ACCOUNT_KEY", key),
        ("GOOGLE_ALLOW_HTTP", "true".to_string()),
    ];
    let remote = run(
        work.path(),
        "gcs",
        &format!("gs://{BUCKET}/tx/*.parquet"),
        &gcs_env,
    );
    assert_same_output("gcs glob", &local, &remote);

    // A missing object over HTTP: exit 2 naming the URL.
    let o = cli(
        &[
            "sql",
            "--table",
            &format!("t={}/{BUCKET}/nope.csv", server.endpoint()),
            "-e",
            "SELECT count(*) FROM t",
        ],
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.csv"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("HEAD and ranged GET"), "{err}");
}

/// Serves a directory over HTTP/1.1: HEAD, GET with `Range`, and GCS's XML object listing
/// (`GET /<bucket>?list-type=2&prefix=…`). Counts ranged GETs.
struct FileServer {
    port: u16,
    ranged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ranged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (dir, counter) = (dir.to_path_buf(), ranged.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (dir, counter) = (dir.clone(), counter.clone());
                std::thread::spawn(move || serve_connection(stream, &dir, &counter));
            }
        });
        FileServer { port, ranged }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ranged_gets(&self) -> usize {
        self.ranged.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn serve_connection(stream: TcpStream, dir: &Path, ranged: &std::sync::atomic::AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut range = None;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().trim_start_matches("bytes=").to_string()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let path = percent_decode(path);
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), percent_decode(&v.replace('+', " ")))
            })
            .collect();
        let param = |k: &str| params.iter().find(|p| p.0 == k).map(|p| p.1.clone());
        let response = if param("list-type").is_some() {
            list_objects(
                dir,
                path.trim_matches('/'),
                &param("prefix").unwrap_or_default(),
            )
        } else {
            get_file(dir, &path, range.as_deref(), method == "HEAD", ranged)
        };
        if out.write_all(&response).is_err() {
            return;
        }
    }
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8], head: bool) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let mut out = text.into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

fn get_file(
    dir: &Path,
    path: &str,
    range: Option<&str>,
    head: bool,
    ranged: &std::sync::atomic::AtomicUsize,
) -> Vec<u8> {
    let file = dir.join(path.trim_start_matches('/'));
    let Ok(data) = std::fs::read(&file)
        .map_err(|_| ())
        .and_then(|d| if file.is_file() { Ok(d) } else { Err(()) })
    else {
        return response("404 Not Found", &[], b"not found", head);
    };
    let meta = [
        ("Last-Modified", "Mon, 23 Nov 2026 00:00:00 GMT".to_string()),
        (
            "ETag",
            format!("\"{}-{}\"", data.len(), crc32fast::hash(&data)),
        ),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    let Some(range) = range else {
        return response("200 OK", &meta, &data, head);
    };
    ranged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let len = data.len();
    let (start, end) = match range.split_once('-') {
        Some(("", suffix)) => (len.saturating_sub(suffix.parse().unwrap_or(0)), len),
        Some((s, "")) => (s.parse().unwrap_or(0), len),
        Some((s, e)) => (
            s.parse().unwrap_or(0),
            (e.parse::<usize>().unwrap_or(0) + 1).min(len),
        ),
        None => (0, len),
    };
    if start >= len || start >= end {
        return response("416 Range Not Satisfiable", &[], b"", head);
    }
    let mut headers = meta.to_vec();
    headers.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
    response("206 Partial Content", &headers, &data[start..end], head)
}

/// GCS XML API `ListBucketResult` (the S3 shape) for keys under `prefix` in bucket `bucket`.
fn list_objects(dir: &Path, bucket: &str, prefix: &str) -> Vec<u8> {
    let root = dir.join(bucket);
    let mut keys = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                if key.starts_with(prefix) {
                    keys.push((key, p.metadata().unwrap().len()));
                }
            }
        }
    }
    keys.sort();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>{bucket}</Name>\
         <Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><IsTruncated>false</IsTruncated>",
        keys.len()
    );
    for (key, size) in keys {
        xml.push_str(&format!(
            "<Contents><Key>{key}</Key><LastModified>2026-11-23T00:00:00.000Z</LastModified>\
             <ETag>\"{size}\"</ETag><Size>{size}</Size></Contents>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    response(
        "200 OK",
        &[("Content-Type", "application/xml".to_string())],
        xml.as_bytes(),
        false,
    )
}
