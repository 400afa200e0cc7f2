//! The API's connections against a real `nomaly serve` (SECURITY.md, "The HTTP API"): the
//! token it makes, event streams per client, slow and excess connections, and TLS.

use super::Playground;
use crate::serve::Served;
use crate::{nomaly_env, stderr};

/// A server given no token makes one, private (0600), once; keeps it across restarts; refuses a
/// token file others can read; and `--no-auth` is loopback only.
#[test]
fn the_api_token_is_made_private_once() {
    use std::os::unix::fs::PermissionsExt;
    let p = Playground::new();
    let mut server = Served::start(&p.root, &[], &[]);
    let file = p.root.join("jobs.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = server.token.clone().unwrap();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        server
            .log()
            .contains(&format!("API token in {}", file.display()))
    );
    server.kill_and_restart();
    assert_eq!(server.token.as_deref(), Some(token.as_str()));
    assert_eq!(server.request("GET", "/api/runs", None).unwrap().0, 200);
    drop(server);
    let db = p.root.join("jobs.db");
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--port", "1", "--db", db.to_str().unwrap()];
        args.extend(extra);
        nomaly_env(&args, &[("NOMALY_TOKEN", "")])
    };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = serve(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("readable by others"), "{}", stderr(&o));
    let o = serve(&["--no-auth", "--bind", "0.0.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("loopback only"), "{}", stderr(&o));
}

/// A client holds at most `--max-streams-per-client` event streams; a closed one frees its slot.
#[test]
fn event_streams_per_client_are_capped() {
    use std::io::{BufRead, BufReader, Write};
    let p = Playground::new();
    let server = Served::start(&p.root, &["--max-streams-per-client", "2"], &[]);
    let token = server.token.clone().unwrap();
    let open = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        (status, reader)
    };
    let (a, first) = open();
    let (b, _second) = open();
    let (c, _) = open();
    assert_eq!((a, b, c), (200, 200, 429));
    drop(first);
    // The server sees the closed stream when it next writes to it (a keep-alive, every 10 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (d, _) = open();
        if d == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A client that never finishes its headers is cut off after `--header-timeout`, and a
/// connection beyond `--max-connections` is closed at once; the server then serves as before.
#[test]
fn slow_and_excess_connections_are_closed() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let connect = |port: u16| {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let half_sent = |port: u16| {
        let mut s = connect(port);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        s
    };
    // Read until the server closes the connection (EOF or reset); how long that took.
    let until_closed = |mut s: std::net::TcpStream| {
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        (started.elapsed(), String::from_utf8_lossy(&buf).to_string())
    };

    // The cap. The header timeout is long, so that however loaded the machine, two half-sent
    // requests hold both slots while a third connection, though its request is complete, is
    // closed unanswered (without the cap it would be answered 200).
    let p = Playground::new();
    let server = Served::start(
        &p.root,
        &["--max-connections", "2", "--header-timeout", "120s"],
        &[],
    );
    // A connection the server has closed peeks as EOF; an open one would block.
    let held = |s: &std::net::TcpStream| {
        s.set_nonblocking(true).unwrap();
        let open =
            matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    };
    // The start-up health check's slot is freed when its task ends, which may be after it
    // returned: until both half-sent requests are seen held, open them again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, b) = loop {
        let (a, b) = (half_sent(server.port), half_sent(server.port));
        std::thread::sleep(Duration::from_millis(1000));
        if held(&a) && held(&b) {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "two slots were never held");
    };
    let mut third = connect(server.port);
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (_, said) = until_closed(third);
    assert!(
        !said.contains("200 OK"),
        "the third connection was served: {said}"
    );
    // Their clients gone, the slots come back.
    drop((a, b));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.request("GET", "/health", None).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the slots never came back");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The header timeout: a request whose headers never end is closed, unanswered.
    let q = Playground::new();
    let server = Served::start(&q.root, &["--header-timeout", "1s"], &[]);
    let (took, said) = until_closed(half_sent(server.port));
    assert!(
        took < Duration::from_secs(20),
        "a half-sent request held its connection {took:?}"
    );
    assert!(!said.contains("200 OK"), "{said}");
    assert_eq!(server.request("GET", "/health", None).unwrap().0, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// `--tls-cert/--tls-key`: the API answers over TLS with a self-signed certificate (made here
/// with openssl), the token still required; plain HTTP gets no answer.
#[test]
fn the_api_serves_tls_with_a_self_signed_certificate() {
    use std::process::{Command, Stdio};
    let p = Playground::new();
    let (cert, key) = crate::pipeline::webhooks::self_signed(&p.base);
    let port = crate::free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(["serve", "--port", &port.to_string(), "--allow-root"])
        .arg(&p.root)
        .arg("--db")
        .arg(p.root.join("jobs.db"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let curl = |path: &str, extra: &[&str]| {
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let ca = ["--cacert", cert.to_str().unwrap()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while curl("/health", &ca).1 != "200" {
        assert!(std::time::Instant::now() < deadline, "no TLS answer");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(p.root.join("jobs.token")).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(curl("/api/runs", &ca).1, "401");
    assert_eq!(curl("/api/runs", &[ca[0], ca[1], "-H", &auth]).1, "200");
    // Without the CA the certificate is not trusted (curl exit 60); plain HTTP gets no answer.
    assert_eq!(curl("/health", &[]).0, Some(60));
    let plain = crate::serve::raw_request(port, "GET", "/health", None, None);
    assert!(
        plain.as_ref().is_none_or(|(status, _)| *status != 200),
        "{plain:?}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
