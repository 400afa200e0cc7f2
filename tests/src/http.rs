//! The tests' one HTTP/1.1 client, written by hand over a `TcpStream` so that no client library
//! stands between a test and the server (a test of a malformed request must send exactly its
//! bytes, and a test of a header must see exactly what the server wrote).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A request to 127.0.0.1:`port`.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Sent with `Content-Type: application/json` and its length.
    pub body: Option<&'a [u8]>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<&'a str>,
    /// The `Host` header (default `127.0.0.1`).
    pub host: Option<&'a str>,
    /// How long to wait for the answer (default 30 s).
    pub timeout: Option<Duration>,
}

/// An answer: its status, its head (status line and headers) and its body, de-chunked.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Request<'_> {
    /// `GET path`.
    pub fn get(path: &str) -> Request<'_> {
        Request {
            method: "GET",
            path,
            ..Default::default()
        }
    }

    fn head(&self) -> String {
        let auth = self
            .token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = self
            .body
            .map(|b| {
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    b.len()
                )
            })
            .unwrap_or_default();
        format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}{body}\r\n",
            self.method,
            self.path,
            self.host.unwrap_or("127.0.0.1")
        )
    }

    fn connect(&self, port: u16) -> Option<TcpStream> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(self.timeout.unwrap_or(Duration::from_secs(30))))
            .ok()?;
        s.write_all(self.head().as_bytes()).ok()?;
        if let Some(body) = self.body {
            // A server may answer (and close) before reading a body it refuses.
            let _ = s.write_all(body);
        }
        Some(s)
    }

    /// Sends the request and reads the whole answer; `None` while nothing answers on `port`.
    pub fn send(&self, port: u16) -> Option<Response> {
        let mut s = self.connect(port)?;
        // The head, then Content-Length bytes when given (a server may keep the connection
        // open after answering), else to the end.
        let mut response = Vec::new();
        let mut buf = [0u8; 65536];
        let mut head_end = None;
        loop {
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| response.len() >= end + 4 + n) {
                    break;
                }
            }
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            response.extend_from_slice(&buf[..n]);
            if head_end.is_none() {
                head_end = response.windows(4).position(|w| w == b"\r\n\r\n");
            }
        }
        let text = String::from_utf8_lossy(&response).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Some(Response {
            status,
            head: head.to_string(),
            body: if chunked {
                dechunk(body)
            } else {
                body.to_string()
            },
        })
    }

    /// Sends the request and reads only the status line (for answers that never end, such as
    /// event streams).
    pub fn status_only(&self, port: u16) -> Option<u16> {
        let s = self.connect(port)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        line.split(' ').nth(1)?.parse().ok()
    }

    /// Sends the request and yields each `data:` line of its event stream, as it arrives, until
    /// the stream ends or `each` returns false.
    pub fn events(&self, port: u16, mut each: impl FnMut(&str) -> bool) {
        let Some(s) = self.connect(port) else {
            return;
        };
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:")
                && !each(data.trim())
            {
                break;
            }
        }
    }
}

/// Sends `bytes` as they are (a malformed request, say) and reads the answer's status.
pub fn send_raw(port: u16, head: &[u8], body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(head).ok()?;
    let _ = s.write_all(body);
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split(' ').nth(1)?.parse().ok()
}

/// A `Transfer-Encoding: chunked` body, joined.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

/// A port nothing listens on now (the OS's pick; free until someone binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}
