//! Webhooks post the run report through a real HTTP client: plain HTTP, and HTTPS verified
//! against the roots `SSL_CERT_FILE` names (a self-signed certificate made here with openssl);
//! redirects are not followed; a failed webhook is a warning, never a failed run, and a
//! password in its URL never reaches the report. The receivers are
//! `tests/pipeline/webhook_receiver.py` processes.

use crate::{free_port, nomaly_env, report, root, stderr};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One receiver process: what it was sent lands in `dir`.
pub struct Receiver {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Receiver {
    /// Answers every POST with `status`; over TLS with `tls` = (certificate, key).
    pub fn start(dir: &Path, status: u16, tls: Option<(&Path, &Path)>) -> Receiver {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let script = root().join("crates/nomaly-cli/tests/pipeline/webhook_receiver.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .arg(status.to_string());
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the receiver did not start");
        Receiver {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The bodies received (JSON) and their heads (path and headers), in order.
    pub fn received(&self) -> Vec<(serde_json::Value, String)> {
        (1..)
            .map(|n| self.dir.join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| {
                let body = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                let head = std::fs::read_to_string(p.with_extension("head")).unwrap();
                (body, head.to_ascii_lowercase())
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, made with openssl; marked as no CA, as
/// webpki wants of a server's own certificate.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/test-services.sh installs it)");
    assert!(made.success());
    (cert, key)
}

fn pipeline(dir: &Path, name: &str, hooks: &[String]) -> PathBuf {
    let mut text = format!(
        "name = \"{name}\"\ninput = \"{}\"\noutput = \"{name}_out/\"\n[detect]\n\
         algorithm = \"zscore\"\ncolumns = [\"amount\"]\n",
        root().join("examples/data/tx.csv").display()
    );
    for url in hooks {
        text.push_str(&format!(
            "[[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\n"
        ));
    }
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn webhooks_post_the_report_over_http_and_https() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, key) = self_signed(dir);
    let plain = Receiver::start(&dir.join("plain"), 204, None);
    let tls = Receiver::start(&dir.join("tls"), 200, Some((&cert, &key)));
    let moved = Receiver::start(&dir.join("moved"), 302, None);
    let hooks = vec![
        format!("http://127.0.0.1:{}/hook?run=1", plain.port),
        format!("https://127.0.0.1:{}/hook", tls.port),
        format!("http://user:hunter2@127.0.0.1:{}/moved", moved.port),
    ];
    let file = pipeline(dir, "hooked", &hooks);
    let o = nomaly_env(
        &["run", file.to_str().unwrap(), "--json"],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["status"], "succeeded");

    for receiver in [&plain, &tls] {
        let got = receiver.received();
        assert_eq!(got.len(), 1, "{}", receiver.dir.display());
        let (body, head) = &got[0];
        assert_eq!(body["status"], "succeeded");
        assert_eq!(body["pipeline"], "hooked");
        assert_eq!(body["output_rows"], r["output_rows"]);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("user-agent: nomaly/"), "{head}");
    }
    assert!(plain.received()[0].1.starts_with("/hook?run=1\n"));

    // The redirect is a warning (it was not followed), the password is not in it.
    assert_eq!(moved.received().len(), 1);
    let warnings: Vec<String> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("HTTP 302"), "{warnings:?}");
    assert!(warnings[0].contains("not followed"), "{warnings:?}");
    assert!(warnings[0].contains("user:***@"), "{warnings:?}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hunter2"));
    assert!(!stderr(&o).contains("hunter2"));

    // Without the certificate's root, the HTTPS webhook is refused by TLS: a warning, the run
    // still succeeds, and nothing reaches the receiver.
    let file = pipeline(dir, "untrusted", &hooks[1..2]);
    let o = nomaly_env(&["run", file.to_str().unwrap(), "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    let warning = r["warnings"][0].as_str().unwrap_or_default().to_string();
    assert!(warning.contains("certificate"), "{warning}");
    assert_eq!(
        tls.received().len(),
        1,
        "an untrusted server was sent the report"
    );
}

/// Chat webhooks (`format = "slack"` / `"teams"`) over HTTPS: a run whose anomaly rate is above
/// a notification's `anomaly_rate_above` sends that one Slack message (and not the failure one,
/// nor the Teams one with a higher threshold); a run that fails its validation sends only the
/// failure message, naming the failed check.
#[test]
fn chat_webhooks_alert_on_failure_and_on_a_high_anomaly_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, key) = self_signed(dir);
    let chat = Receiver::start(&dir.join("chat"), 200, Some((&cert, &key)));
    let url = format!("https://127.0.0.1:{}/services/T0/B0/x", chat.port);
    let hooks = format!(
        "[[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\nformat = \"slack\"\non = \"failure\"\n\
         [[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\nformat = \"slack\"\non = \"success\"\n\
         anomaly_rate_above = 0.05\n\
         [[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\nformat = \"teams\"\n\
         anomaly_rate_above = 0.5\n"
    );
    let write = |name: &str, extra: &str| {
        let file = dir.join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ninput = \"{}\"\noutput = \"{}\"\n[detect]\n\
             algorithm = \"zscore\"\ncolumns = [\"amount\"]\n{extra}{hooks}",
            root().join("examples/data/tx.csv").display(),
            dir.join(format!("{name}_out/")).display()
        );
        std::fs::write(&file, text).unwrap();
        file
    };
    let run = |file: &Path| {
        nomaly_env(
            &["run", file.to_str().unwrap(), "--json"],
            &[("SSL_CERT_FILE", cert.to_str().unwrap())],
        )
    };

    let o = run(&write("nightly", ""));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    let rate = r["anomaly_rate"].as_f64().unwrap();
    assert!(rate > 0.05 && rate < 0.5, "{r}");
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    let got = chat.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let text = got[0].0["text"].as_str().unwrap();
    assert!(
        text.starts_with("*nomaly: pipeline nightly succeeded*\n"),
        "{text}"
    );
    assert!(text.contains("above the alert threshold 5.00%"), "{text}");
    assert!(got[0].1.starts_with("/services/t0/b0/x\n"), "{}", got[0].1);

    let check = "[[validate]]\ncheck = \"anomaly_rate\"\nmax = 0.01\n";
    let o = run(&write("strict", check));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Failed, so only the failure message: the rate alert waits for a success.
    let got = chat.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let text = got[1].0["text"].as_str().unwrap();
    assert!(
        text.starts_with("*nomaly: pipeline strict failed a validation check*\n"),
        "{text}"
    );
    assert!(text.contains("\ncheck anomaly_rate failed: "), "{text}");
}

/// `[resources] deadline`: a run still going when it passes sends its `on = "deadline"` message
/// once, and goes on to succeed; a run that ends in time sends none.
#[test]
fn a_missed_deadline_alerts_once_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, key) = self_signed(dir);
    let chat = Receiver::start(&dir.join("chat"), 200, Some((&cert, &key)));
    let url = format!("https://127.0.0.1:{}/hooks/sla", chat.port);
    let write = |name: &str, deadline: &str| {
        let file = dir.join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ninput = \"{}\"\noutput = \"{}\"\n[detect]\n\
             algorithm = \"zscore\"\ncolumns = [\"amount\"]\n[run]\nchunk_rows = 1000\n\
             [resources]\ndeadline = \"{deadline}\"\n\
             [[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\nformat = \"slack\"\non = \"deadline\"\n\
             [[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\nformat = \"slack\"\n",
            root().join("examples/data/tx.csv").display(),
            dir.join(format!("{name}_out/")).display()
        );
        std::fs::write(&file, text).unwrap();
        file
    };
    // Each chunk waits 1.5 s first: the 1 s deadline passes while the run goes on.
    let o = nomaly_env(
        &["run", write("late", "1s").to_str().unwrap(), "--json"],
        &[
            ("SSL_CERT_FILE", cert.to_str().unwrap()),
            ("NOMALY_FAULTS", "chunk_delay_ms=1500"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o)["status"], "succeeded");
    let got = chat.received();
    let texts: Vec<&str> = got.iter().map(|g| g.0["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("*nomaly: pipeline late missed its deadline*\n")
            && texts[0].contains("not finished 1s after it was started"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].starts_with("*nomaly: pipeline late succeeded*"),
        "{}",
        texts[1]
    );
    // In time: only the end's message.
    let o = nomaly_env(
        &["run", write("prompt", "10m").to_str().unwrap()],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = chat.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[2].0["text"]
            .as_str()
            .unwrap()
            .contains("prompt succeeded")
    );
}
