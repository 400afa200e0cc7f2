//! Email alerts through an SMTP server (lettre): the chat summary as the plain-text body, the
//! JSON run report attached. The server's name is resolved and checked as a webhook's is
//! (SECURITY.md), then the connection goes to exactly the address that was checked while TLS
//! verifies the certificate against the name. TLS is required unless the pipeline asked for
//! plain text to a server on this host, without a password (compile checks that).

use super::{NotifyError, chain, chat, check_addresses};
use crate::report::RunReport;
use crate::sandbox::Sandbox;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// The most recipients one `[[notify]]` may name.
pub const MAX_RECIPIENTS: usize = 20;

/// An `[[notify]] type = "email"` as the run sends it.
pub struct Email<'a> {
    pub to: &'a [String],
    pub from: &'a str,
    pub server: &'a str,
    pub password_env: Option<&'a str>,
    pub plaintext: bool,
    pub rate_above: Option<f64>,
    pub drift_above: Option<f64>,
}

/// How to reach an SMTP server, from its `smtp://` or `smtps://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (`smtps://`), not STARTTLS.
    pub implicit_tls: bool,
    /// The user name to log in with (percent-decoded), if the URL has one.
    pub user: Option<String>,
}

/// Parses a server URL: `smtp://` or `smtps://`, a host, an optional port and user name, no
/// password (it belongs in `password_env`), no path beyond `/`.
pub fn parse_server(server: &str) -> Result<SmtpServer, String> {
    let url = reqwest::Url::parse(server).map_err(|e| format!("'{server}' is not a URL: {e}"))?;
    let implicit_tls = match url.scheme() {
        "smtps" => true,
        "smtp" => false,
        other => {
            return Err(format!(
                "'{server}': an SMTP server is smtps://host (TLS) or smtp://host (STARTTLS), \
                 not {other}://"
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("'{server}' names no host, e.g. smtps://smtp.example.com"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if url.password().is_some() {
        return Err(format!(
            "'{}' holds a password: put it in an environment variable and name that in \
             password_env",
            super::without_password(server)
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{server}': an SMTP server URL is scheme://[user@]host[:port], nothing after it"
        ));
    }
    let user = match url.username() {
        "" => None,
        name => Some(
            percent_encoding_decode(name)
                .ok_or_else(|| format!("'{server}': the user name is not UTF-8"))?,
        ),
    };
    let port = url.port().unwrap_or(if implicit_tls { 465 } else { 587 });
    Ok(SmtpServer {
        host,
        port,
        implicit_tls,
        user,
    })
}

/// `%XX` sequences decoded (a user name such as `alerts%40example.com`).
fn percent_encoding_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses an address as a mailbox ("a@b.c" or "Name <a@b.c>").
pub fn mailbox(address: &str) -> Result<Mailbox, String> {
    address
        .parse::<Mailbox>()
        .map_err(|e| format!("'{address}' is not an email address ({e}), e.g. ops@example.com"))
}

/// The message: subject = the summary's title, body = its lines, the report attached.
fn message(email: &Email<'_>, report: &RunReport, body: &[u8]) -> Result<Message, NotifyError> {
    let (title, lines) = chat::plain_summary(report, email.rate_above, email.drift_above);
    let mut builder = Message::builder()
        .from(mailbox(email.from).map_err(NotifyError)?)
        .subject(title);
    for to in email.to {
        builder = builder.to(mailbox(to).map_err(NotifyError)?);
    }
    let text = format!(
        "{}\n\nThe run's report is attached (report.json).\n",
        lines.join("\n")
    );
    let json = ContentType::parse("application/json").map_err(|e| NotifyError(e.to_string()))?;
    builder
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(text))
                // As text, so lettre writes its lines with CRLF as SMTP wants (bytes go as-is).
                .singlepart(
                    Attachment::new("report.json".into())
                        .body(String::from_utf8_lossy(body).into_owned(), json),
                ),
        )
        .map_err(|e| NotifyError(format!("the message cannot be built: {e}")))
}

/// Sends the alert; 30 s in all.
pub(super) async fn send(
    email: &Email<'_>,
    report: &RunReport,
    body: &[u8],
    sandbox: &Sandbox,
) -> Result<(), NotifyError> {
    let server = parse_server(email.server).map_err(NotifyError)?;
    let password = match email.password_env {
        None => None,
        Some(name) => Some(
            sandbox
                .env(name)
                .map_err(|r| NotifyError(r.0))?
                .ok_or_else(|| {
                    NotifyError(format!(
                        "the environment variable {name} (password_env) is not set"
                    ))
                })?,
        ),
    };
    let message = message(email, report, body)?;
    let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((&*server.host, server.port)),
    )
    .await
    .map_err(|_| NotifyError(format!("{} did not resolve within 5 s", server.host)))?
    .map_err(|e| NotifyError(format!("cannot resolve {}: {e}", server.host)))?
    .collect();
    check_addresses(sandbox, email.server, &server.host, &addrs)?;
    let tls = if email.plaintext {
        Tls::None
    } else {
        let parameters = TlsParameters::new(server.host.clone())
            .map_err(|e| NotifyError(format!("TLS: {}", chain(&e))))?;
        if server.implicit_tls {
            Tls::Wrapper(parameters)
        } else {
            Tls::Required(parameters)
        }
    };
    // The checked address, not the name: no second lookup between the check and the connect.
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addrs[0].ip().to_string())
            .port(server.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (server.user, password) {
        transport = transport.credentials(Credentials::new(user, password));
    }
    let transport = transport.build();
    tokio::time::timeout(Duration::from_secs(30), transport.send(message))
        .await
        .map_err(|_| NotifyError("the SMTP server did not take the mail within 30 s".into()))?
        .map_err(|e| NotifyError(chain(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_tls_port_and_user() {
        assert_eq!(
            parse_server("smtps://alerts%40example.com@smtp.example.com").unwrap(),
            SmtpServer {
                host: "smtp.example.com".into(),
                port: 465,
                implicit_tls: true,
                user: Some("alerts@example.com".into()),
            }
        );
        let starttls = parse_server("smtp://[::1]:2525/").unwrap();
        assert_eq!((starttls.host.as_str(), starttls.port), ("::1", 2525));
        assert!(!starttls.implicit_tls && starttls.user.is_none());
        assert_eq!(parse_server("smtp://mail.example").unwrap().port, 587);
        let e = parse_server("smtps://u:hunter2@smtp.example.com").unwrap_err();
        assert!(e.contains("password_env") && !e.contains("hunter2"), "{e}");
        assert!(
            parse_server("https://smtp.example.com")
                .unwrap_err()
                .contains("not https://")
        );
        assert!(parse_server("smtp://smtp.example.com/x?y").is_err());
        assert!(parse_server("smtp:///").is_err());
    }

    #[test]
    fn addresses_are_mailboxes() {
        assert!(mailbox("ops@example.com").is_ok());
        assert_eq!(
            mailbox("Ops <ops@example.com>").unwrap().email.to_string(),
            "ops@example.com"
        );
        assert!(
            mailbox("not an address")
                .unwrap_err()
                .contains("e.g. ops@example.com")
        );
        assert!(mailbox("a@b.c\r\nBcc: x@y.z").is_err());
    }
}
