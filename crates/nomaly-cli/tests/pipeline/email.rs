//! Email alerts through a real SMTP server (aiosmtpd, `tests/pipeline/smtp_receiver.py`) on
//! 127.0.0.1: STARTTLS and TLS from the first byte, both verified against the roots
//! `SSL_CERT_FILE` names (a self-signed certificate made here), a login whose password comes
//! from the environment variable `password_env` names. The same conditions as webhooks; a
//! failed email is a warning, never a failed run; the pipeline file never holds the password.

use super::webhooks::self_signed;
use crate::stores::{python, services_installed};
use crate::{free_port, nomaly, nomaly_env, report, root, stderr};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const USER: &str = "alerts@example.com";
const PASSWORD: &str = "correct horse";

/// One aiosmtpd process; what it was sent lands in `dir`.
struct SmtpServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl SmtpServer {
    /// `mode`: "starttls" or "tls".
    fn start(dir: &Path, mode: &str, cert: &Path, key: &Path) -> SmtpServer {
        let port = free_port();
        let script = root().join("crates/nomaly-cli/tests/pipeline/smtp_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .arg(mode)
            .arg(cert)
            .arg(key)
            .arg(USER)
            .arg(PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the test venv's python runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The messages received, parsed by the server, in order.
    fn received(&self) -> Vec<serde_json::Value> {
        (1..)
            .map(|n| self.dir.join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\ninput = \"{}\"\noutput = \"{}\"\n[detect]\n\
         algorithm = \"zscore\"\ncolumns = [\"amount\"]\n{extra}",
        root().join("examples/data/tx.csv").display(),
        dir.join(format!("{name}_out/")).display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn email(server: &str, on: &str, extra: &str) -> String {
    format!(
        "[[notify]]\ntype = \"email\"\nto = [\"Ops <ops@example.com>\", \"oncall@example.com\"]\n\
         from = \"nomaly@example.com\"\nserver = \"{server}\"\n\
         password_env = \"NOMALY_TEST_SMTP_PASSWORD\"\non = \"{on}\"\n{extra}"
    )
}

/// An anomaly-rate alert over TLS and a failure alert over STARTTLS reach the server, logged in,
/// with the summary as the body and the report attached; the alert whose threshold is not
/// crossed sends nothing; a wrong password and an untrusted certificate are warnings.
#[test]
fn email_alerts_go_out_over_tls_and_starttls_with_a_login() {
    if !services_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, key) = self_signed(dir);
    let starttls = SmtpServer::start(&dir.join("starttls"), "starttls", &cert, &key);
    let tls = SmtpServer::start(&dir.join("tls"), "tls", &cert, &key);
    let user = "alerts%40example.com";
    let notify = [
        email(
            &format!("smtp://{user}@127.0.0.1:{}", starttls.port),
            "failure",
            "",
        ),
        email(
            &format!("smtps://{user}@127.0.0.1:{}", tls.port),
            "success",
            "anomaly_rate_above = 0.05\n",
        ),
        email(
            &format!("smtps://{user}@127.0.0.1:{}", tls.port),
            "always",
            "anomaly_rate_above = 0.5\n",
        ),
    ]
    .concat();
    let run = |file: &Path, password: &str, roots: bool| {
        let mut env = vec![("NOMALY_TEST_SMTP_PASSWORD", password)];
        if roots {
            env.push(("SSL_CERT_FILE", cert.to_str().unwrap()));
        }
        nomaly_env(&["run", file.to_str().unwrap(), "--json"], &env)
    };

    let nightly = write(dir, "nightly", &notify);
    let o = run(&nightly, PASSWORD, true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    assert!(starttls.received().is_empty());
    let got = tls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    assert_eq!(mail["login"], USER);
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["mail_from"], "nomaly@example.com");
    assert_eq!(
        mail["rcpt_to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(mail["subject"], "nomaly: pipeline nightly succeeded");
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("above the alert threshold 5.00%"), "{text}");
    let attached: serde_json::Value =
        serde_json::from_str(mail["attachments"]["report.json"].as_str().unwrap()).unwrap();
    assert_eq!(attached["pipeline"], "nightly");
    assert_eq!(attached["anomalies"], r["anomalies"]);

    let check = "[[validate]]\ncheck = \"anomaly_rate\"\nmax = 0.01\n";
    let strict = write(dir, "strict", &format!("{check}{notify}"));
    let o = run(&strict, PASSWORD, true);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let got = starttls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["subject"],
        "nomaly: pipeline strict failed a validation check"
    );
    assert_eq!(
        (got[0]["login"].as_str(), got[0]["tls"].as_bool()),
        (Some(USER), Some(true))
    );
    assert!(
        got[0]["text"]
            .as_str()
            .unwrap()
            .contains("check anomaly_rate failed: "),
        "{}",
        got[0]["text"]
    );
    // Failed, so the success alert stays quiet; the "always" one's threshold is not crossed.
    assert_eq!(tls.received().len(), 1);

    // A wrong password: the server refuses the login; a warning, the run's own status stands.
    let o = run(&strict, "wrong", true);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let warnings = report(&o)["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "email via smtp://{user}@127.0.0.1:{}",
            starttls.port
        )) && warnings.contains("535"),
        "{warnings}"
    );
    assert!(!warnings.contains("wrong"), "{warnings}");
    // The certificate's root not given: TLS refuses the server.
    let o = run(&nightly, PASSWORD, false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let warnings = report(&o)["warnings"].to_string();
    assert!(warnings.contains("certificate"), "{warnings}");
    assert_eq!((starttls.received().len(), tls.received().len()), (1, 1));
}

/// What `validate` refuses: a password in the URL (not echoed), plain text to another host or
/// with a password, a bad address, too many recipients, and on a server a `password_env` that
/// its `--allow-env` does not allow (shown through the library's confined sandbox in unit
/// tests; here the file's own mistakes).
#[test]
fn email_settings_are_checked_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        (
            "server = \"smtps://u:hunter2@smtp.example.com\"\n",
            "holds a password: put it in an environment variable",
        ),
        (
            "server = \"smtp://mail.example.com:25\"\nplaintext = true\n",
            "plain text only reaches a server on this host",
        ),
        (
            "server = \"smtp://u@127.0.0.1:25\"\nplaintext = true\npassword_env = \"P\"\n",
            "a password is never sent without TLS",
        ),
        (
            "server = \"smtps://smtp.example.com\"\npassword_env = \"P\"\n",
            "names no user to log in as",
        ),
        ("server = \"imap://smtp.example.com\"\n", "not imap://"),
    ];
    for (i, (server, expected)) in cases.iter().enumerate() {
        let text = format!(
            "[[notify]]\ntype = \"email\"\nto = [\"ops@example.com\"]\n\
             from = \"nomaly@example.com\"\n{server}"
        );
        let file = write(dir, &format!("p{i}"), &text);
        let o = nomaly(&["validate", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{server}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(expected), "{server}: {e}");
        assert!(e.contains("[[notify]]"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let many: Vec<String> = (0..21).map(|i| format!("\"u{i}@example.com\"")).collect();
    let text = format!(
        "[[notify]]\ntype = \"email\"\nto = [{}]\nfrom = \"nomaly@example.com\"\n\
         server = \"smtps://smtp.example.com\"\n",
        many.join(", ")
    );
    let o = nomaly(&["validate", write(dir, "many", &text).to_str().unwrap()]);
    assert!(
        stderr(&o).contains("21 recipients: give 1 to 20"),
        "{}",
        stderr(&o)
    );
    let text = "[[notify]]\ntype = \"email\"\nto = [\"not an address\"]\n\
                from = \"nomaly@example.com\"\nserver = \"smtps://smtp.example.com\"\n";
    let o = nomaly(&["validate", write(dir, "bad", text).to_str().unwrap()]);
    assert!(
        stderr(&o).contains("'not an address' is not an email address"),
        "{}",
        stderr(&o)
    );
}
