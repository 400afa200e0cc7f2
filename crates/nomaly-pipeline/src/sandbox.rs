//! What a pipeline may touch: every local path, remote location and environment variable it
//! names, checked at compile time (SECURITY.md, "What a submitted pipeline may touch").
//!
//! A pipeline run by the operator (`nomaly run`) is trusted: [`Sandbox::operator`] allows
//! everything. A pipeline submitted to `nomaly serve` is not: [`Sandbox::confined`] allows local
//! paths under the server's `--allow-root` directories only (their canonical form, so neither
//! `..` nor a symlink leads out), remote locations matching an `--allow-location` pattern only,
//! and `${VAR}` names matching an `--allow-env` pattern only. Each check returns the canonical
//! path or location that passed, and compilation stores that one, so the run opens what was
//! checked.

use nomaly_engine::confined_store::canonical_within;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why something a pipeline names is refused; the message names it, the rule and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

type Checked<T> = std::result::Result<T, Refused>;

/// The rules of a confined sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    roots: Vec<PathBuf>,
    locations: Vec<String>,
    env: Vec<String>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    rules: Option<Rules>,
}

impl Sandbox {
    /// The operator's own run: every path, location and variable is allowed.
    pub fn operator() -> Sandbox {
        Sandbox { rules: None }
    }

    /// A submitted pipeline's sandbox. `roots` must exist (they are canonicalised);
    /// `locations` and `env` are patterns where `*` matches any run of characters and `?` one.
    pub fn confined(roots: &[PathBuf], locations: &[String], env: &[String]) -> Checked<Sandbox> {
        let roots = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|e| {
                    Refused(format!(
                        "--allow-root {}: {e}; give an existing directory",
                        r.display()
                    ))
                })
            })
            .collect::<Checked<Vec<_>>>()?;
        if roots.is_empty() {
            return Err(Refused(
                "a confined sandbox needs at least one --allow-root directory".into(),
            ));
        }
        Ok(Sandbox {
            rules: Some(Rules {
                roots,
                locations: locations.to_vec(),
                env: env.to_vec(),
            }),
        })
    }

    pub fn is_confined(&self) -> bool {
        self.rules.is_some()
    }

    /// The canonical roots (empty for the operator's sandbox).
    pub fn roots(&self) -> &[PathBuf] {
        self.rules.as_ref().map(|r| &r.roots[..]).unwrap_or(&[])
    }

    /// A local path the pipeline reads or writes: its canonical form if it lies inside a root.
    /// A path that does not exist yet (an output) is checked through its nearest existing
    /// ancestor. The operator's sandbox returns the path unchanged.
    pub fn path(&self, path: &Path, what: &str) -> Checked<PathBuf> {
        let Some(rules) = &self.rules else {
            return Ok(path.to_path_buf());
        };
        let canonical =
            canonical_within(path, &rules.roots).ok_or_else(|| self.outside(path, what))?;
        Ok(canonical)
    }

    /// An output directory: as [`path`](Self::path), and strictly below a root, since its
    /// staging directory and lock file are made beside it.
    pub fn output(&self, path: &Path, what: &str) -> Checked<PathBuf> {
        let canonical = self.path(path, what)?;
        if self.roots().iter().any(|r| r == &canonical) {
            return Err(Refused(format!(
                "{what} {} is an allowed root itself; write into a directory below it (its \
                 staging directory and lock are made beside it)",
                path.display()
            )));
        }
        Ok(canonical)
    }

    /// A source location: a local path or glob (the glob's fixed directory must be inside a
    /// root; the canonical directory replaces the written one), or a URL (see
    /// [`url`](Self::url)).
    pub fn location(&self, location: &str, what: &str) -> Checked<String> {
        refuse_control_characters(location, what)?;
        if !self.is_confined() {
            return Ok(location.to_string());
        }
        if let Some((scheme, rest)) = location.split_once("://") {
            if scheme == "file" {
                return Ok(format!("file://{}", self.location(rest, what)?));
            }
            return self.url(location, what);
        }
        let cut = location
            .find(['*', '?', '[', '{'])
            .unwrap_or(location.len());
        if cut == location.len() {
            let canonical = self.path(Path::new(location), what)?;
            let mut s = canonical.to_string_lossy().to_string();
            if location.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            return Ok(s);
        }
        // The glob's fixed directory, canonical, then the pattern as written.
        let dir_end = location[..cut].rfind('/').map(|i| i + 1).unwrap_or(0);
        let (dir, pattern) = location.split_at(dir_end);
        if pattern.contains("..") {
            return Err(self.outside(Path::new(location), what));
        }
        let canonical = self.path(Path::new(dir), what)?;
        Ok(format!("{}/{pattern}", canonical.display()))
    }

    /// A remote location, webhook or SMTP server URL. Confined, it must match an
    /// `--allow-location` pattern; an `http(s)` or `smtp(s)` URL to a loopback, link-local or private address (or `localhost`)
    /// must match a pattern that names that host without a wildcard.
    pub fn url(&self, url: &str, what: &str) -> Checked<String> {
        refuse_control_characters(url, what)?;
        let Some(rules) = &self.rules else {
            return Ok(url.to_string());
        };
        let listed: Vec<&String> = rules
            .locations
            .iter()
            .filter(|p| pattern_matches(p, url))
            .collect();
        if listed.is_empty() {
            return Err(Refused(format!(
                "{what} {url} is not an allowed location: this server reads and writes remote \
                 locations only where the operator allowed them (--allow-location PATTERN; \
                 allowed: {}); see SECURITY.md",
                describe(&rules.locations)
            )));
        }
        let scheme = url.split("://").next().unwrap_or_default();
        // Webhooks and SMTP servers are connections the server makes for the submitter.
        if matches!(scheme, "http" | "https" | "smtp" | "smtps") {
            let host = host_of(url);
            if !names_host_itself(&listed, &host) {
                if is_internal_host(&host) {
                    return Err(Refused(format!(
                        "{what} {url} points at {host}, an internal address (loopback, \
                         link-local or private); such a URL is allowed only by an \
                         --allow-location pattern that names the host {host} itself; see \
                         SECURITY.md"
                    )));
                }
                // A name is checked by what it resolves to now (webhooks check again when they
                // connect); a name that does not resolve is left to fail when it is read.
                if let Some(ip) = resolves_inside(&host, scheme) {
                    return Err(Refused(format!(
                        "{what} {url}: {host} resolves to {ip}, an internal address (loopback, \
                         link-local or private); such a URL is allowed only by an \
                         --allow-location pattern that names the host {host} itself; see \
                         SECURITY.md"
                    )));
                }
            }
        }
        Ok(url.to_string())
    }

    /// Whether a connection for `url` may go to an internal address (checked again after DNS,
    /// where a public-looking name may resolve to one): the operator's may; a confined sandbox's
    /// only when an allowed pattern names the URL's host itself, without wildcards.
    pub fn may_reach_internal(&self, url: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let listed: Vec<&String> = rules
            .locations
            .iter()
            .filter(|p| pattern_matches(p, url))
            .collect();
        names_host_itself(&listed, &host_of(url))
    }

    /// A `${NAME}` in the pipeline text: the operator's sandbox reads the environment; a
    /// confined one only names matching `--allow-env` (never saying a refused one's value).
    pub fn env(&self, name: &str) -> Checked<Option<String>> {
        match &self.rules {
            None => Ok(std::env::var(name).ok()),
            Some(rules) if rules.env.iter().any(|p| pattern_matches(p, name)) => {
                Ok(std::env::var(name).ok())
            }
            Some(rules) => Err(Refused(format!(
                "${{{name}}} is not expanded: this server expands only environment variables \
                 whose names match --allow-env (allowed: {}); write the value itself, or ask \
                 the operator to allow {name}",
                describe(&rules.env)
            ))),
        }
    }

    fn outside(&self, path: &Path, what: &str) -> Refused {
        Refused(format!(
            "{what} {} is outside the server's allowed roots ({}); move it under one, or start \
             the server with --allow-root for its directory",
            path.display(),
            self.roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// `*` matches any run of characters (also none), `?` one character; the rest literally.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear in practice, never
    // exponential in hostile patterns.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn describe(patterns: &[String]) -> String {
    if patterns.is_empty() {
        "none".into()
    } else {
        patterns.join(", ")
    }
}

/// Control characters and whitespace end a request line or a header in HTTP and have no place
/// in a path or URL a pipeline names.
fn refuse_control_characters(text: &str, what: &str) -> Checked<()> {
    match text
        .chars()
        .find(|c| c.is_control() || *c == ' ' && text.contains("://"))
    {
        Some(c) => Err(Refused(format!(
            "{what} holds the character {c:?}; control characters and (in URLs) spaces are \
             refused; percent-encode them (%20)"
        ))),
        None => Ok(()),
    }
}

/// The first internal address `host` resolves to, if any.
fn resolves_inside(host: &str, scheme: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let port = if scheme == "https" { 443 } else { 80 };
    (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| is_internal_ip(*ip))
}

/// Whether one of `patterns` names `host` literally (no wildcard in its host part).
fn names_host_itself(patterns: &[&String], host: &str) -> bool {
    patterns
        .iter()
        .any(|p| !host_of(p).contains(['*', '?']) && host_of(p) == host)
}

/// The host of `scheme://[user@]host[:port]/...`, lower-case, IPv6 brackets removed.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.to_ascii_lowercase()
}

/// Loopback, link-local, private, unspecified or `localhost`: addresses a server reaches that
/// a submitter should not reach through it (SSRF).
pub fn is_internal_host(host: &str) -> bool {
    // A trailing dot names the same host (`localhost.`).
    let host = host.strip_suffix('.').unwrap_or(host);
    if host == "localhost" || host.ends_with(".localhost") || host.is_empty() {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => is_internal_ip(ip),
        // A bare number or hex form (http://2130706433/) is an address to curl and browsers.
        Err(_) => host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == 'x' || c == '.'),
    }
}

/// Loopback, link-local, private, shared (100.64/10), unspecified or broadcast.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.octets()[0] == 0
                || (ip.octets()[0] == 100 && (64..128).contains(&ip.octets()[1]))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal_ip(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("NOMALY_*", "NOMALY_DATA"));
        assert!(!pattern_matches("NOMALY_*", "HOME"));
        assert!(pattern_matches("s3://bucket/*", "s3://bucket/a/b.parquet"));
        assert!(!pattern_matches("s3://bucket/*", "s3://bucket2/a"));
        assert!(pattern_matches("a?c", "abc") && !pattern_matches("a?c", "ac"));
        assert!(pattern_matches("*", "") && pattern_matches("**x", "yx"));
        let hostile = "a".repeat(5000);
        assert!(!pattern_matches(&"*a".repeat(50), &format!("{hostile}b")));
    }

    #[test]
    fn internal_hosts() {
        for h in [
            "127.0.0.1",
            "localhost",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.9",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "0.0.0.0",
            "2130706433",
            "0x7f000001",
            "::ffff:127.0.0.1",
            "localhost.",
            "api.localhost",
            "100.64.0.1",
        ] {
            assert!(is_internal_host(h), "{h}");
        }
        for h in ["example.com", "8.8.8.8", "2001:4860::8888"] {
            assert!(!is_internal_host(h), "{h}");
        }
        assert_eq!(host_of("http://user@[::1]:80/x"), "::1");
        assert_eq!(host_of("https://Example.COM:8443/a?b"), "example.com");
    }

    #[test]
    fn confined_paths_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let s = Sandbox::confined(
            std::slice::from_ref(&root),
            &["s3://ok/*".into(), "http://127.0.0.1:9/hook".into()],
            &["NOMALY_*".into()],
        )
        .unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(
            s.path(&root.join("sub/new"), "output").unwrap(),
            root.join("sub/new")
        );
        assert!(s.path(&root.join("link/x"), "input").is_err());
        assert!(s.path(&root.join("sub/../../outside"), "input").is_err());
        assert!(s.path(&root.join("no/../../outside"), "input").is_err());
        assert!(s.output(&root, "output").is_err());
        let glob = format!("{}/sub/*.parquet", root.display());
        assert_eq!(s.location(&glob, "input").unwrap(), glob);
        assert!(
            s.location(&format!("{}/link/*.csv", root.display()), "input")
                .is_err()
        );
        assert!(
            s.location(&format!("{}/sub/../*.csv", root.display()), "input")
                .is_ok()
        );
        assert!(
            s.location(&format!("{}/sub/*/../../x", root.display()), "input")
                .is_err()
        );
        assert!(s.url("s3://ok/a.parquet", "input").is_ok());
        let e = s.url("s3://other/a.parquet", "input").unwrap_err().0;
        assert!(
            e.contains("--allow-location") && e.contains("s3://ok/*"),
            "{e}"
        );
        assert!(s.url("http://127.0.0.1:9/hook", "webhook").is_ok());
        assert!(s.url("http://x/a\r\nHost: y", "webhook").is_err());
        let open = Sandbox::confined(std::slice::from_ref(&root), &["http*".into()], &[]).unwrap();
        let e = open
            .url("http://169.254.169.254/latest", "input")
            .unwrap_err()
            .0;
        assert!(e.contains("internal address"), "{e}");
        assert!(open.url("https://example.com/x.csv", "input").is_ok());
        // SAFETY: tests in this crate read no environment variable concurrently by this name.
        unsafe { std::env::set_var("NOMALY_SANDBOX_TEST", "v") };
        assert_eq!(s.env("NOMALY_SANDBOX_TEST").unwrap().as_deref(), Some("v"));
        let e = s.env("HOME").unwrap_err().0;
        assert!(e.contains("--allow-env") && e.contains("${HOME}"), "{e}");
        assert!(!e.contains(&std::env::var("HOME").unwrap_or("/root".into())));
        let op = Sandbox::operator();
        assert_eq!(op.location("../x/*.csv", "input").unwrap(), "../x/*.csv");
    }
}
