//! Names are resolved (SECURITY.md, "What a submitted pipeline may touch"): a name that passes
//! `--allow-location http://*` but resolves to an internal address (here this machine's own host
//! name, which resolves to loopback or to the container's private address) is refused at
//! submission, as a source and as a webhook; an `--allow-location` pattern naming that host
//! itself lets the webhook through.

use super::Playground;
use crate::pipeline::webhooks::Receiver;
use crate::serve::Served;
use std::net::ToSocketAddrs;

/// This machine's host name, which must resolve to an internal address for the test to mean
/// anything (it does on every container and VM we run on: /etc/hosts names it).
fn internal_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let addrs: Vec<_> = (name.as_str(), 80)
        .to_socket_addrs()
        .unwrap_or_else(|e| {
            panic!("this host's name {name} does not resolve ({e}): add it to /etc/hosts")
        })
        .collect();
    assert!(
        addrs.iter().all(|a| {
            let ip = a.ip();
            ip.is_loopback() || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_private())
        }),
        "this host's name {name} resolves to {addrs:?}; the test needs an internal address"
    );
    name
}

/// Submits `toml` and expects 403 naming `host` and the internal address it resolves to.
fn refused_for_resolving_inside(server: &Served, toml: &str, host: &str) {
    let (status, v) = server.json(
        "POST",
        "/api/runs",
        Some(serde_json::json!({ "toml": toml })),
    );
    assert_eq!(status, 403, "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{host} resolves to")) && error.contains("internal address"),
        "{error}"
    );
}

fn served_webhook(p: &Playground, allow: &str, url: &str) -> serde_json::Value {
    let server = Served::start(&p.root, &["--allow-location", allow], &[]);
    let toml = p.toml(
        "",
        &format!("[[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\n"),
    );
    let id = server.submit(serde_json::json!({ "toml": toml }));
    let run = server.wait_ended(id);
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log());
    let (_, report) = server.json("GET", &format!("/api/runs/{id}/report"), None);
    report
}

#[test]
fn a_served_webhook_to_a_name_that_resolves_inside_is_refused() {
    let p = Playground::new();
    let host = internal_host_name();
    let receiver = Receiver::start(&p.base.join("received"), 204, None);
    let url = format!("http://{host}:{}/hook", receiver.port);

    // Refused at submission by what the name resolves to (the run checks it again when it
    // connects: notify.rs, `check_addresses`).
    let server = Served::start(&p.root, &["--allow-location", "http://*"], &[]);
    let toml = p.toml(
        "",
        &format!("[[notify]]\ntype = \"webhook\"\nurl = \"{url}\"\n"),
    );
    refused_for_resolving_inside(&server, &toml, &host);
    drop(server);
    assert!(receiver.received().is_empty(), "the webhook was sent");

    // A pattern naming the host itself lets it through, and the report is delivered.
    let named = format!("http://{host}:{}/*", receiver.port);
    let report = served_webhook(&p, &named, &url);
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["status"], "succeeded");
}

#[test]
fn a_served_source_on_a_name_that_resolves_inside_is_refused() {
    let p = Playground::new();
    let host = internal_host_name();
    let server = Served::start(&p.root, &["--allow-location", "http://*"], &[]);
    let toml = p.toml(
        &format!("input = \"http://{host}:9/tx.csv\"\noutput = \"out/\""),
        "",
    );
    refused_for_resolving_inside(&server, &toml, &host);
}
