//! Hosts on one machine: each a Linux network namespace with its own address, joined by a bridge
//! that lives in a namespace of its own. Nothing is added to the machine's own network: no
//! interface, no route, no NAT; the namespaces have no default route, so their traffic cannot
//! leave them. Processes started on a host see their own private filesystem over the directories
//! the test names (a tmpfs mounted in the process's own mount namespace), so a path written on
//! one host cannot be read on another.
//!
//! Namespaces are named `nmt<pid>n<k>-<host>`; dropping a [`Network`] deletes them (also when a
//! test fails), and creating one deletes those of test processes that no longer exist.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Networks made by this process, for unique names.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// Set to 1 (scripts/test.sh's default) where namespaces must work: failing to make one fails
/// the test instead of skipping it.
pub const REQUIRED_ENV: &str = "NOMALY_TEST_NETNS";

/// One host: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    pub address: String,
    /// Its link's end in the bridge's namespace.
    link: String,
}

/// A network's hosts (a copy: processes can be started on them without the network).
#[derive(Debug, Clone)]
pub struct Hosts(Vec<Host>);

impl Hosts {
    pub fn host(&self, name: &str) -> &Host {
        self.0
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program args...` on host `name`, with an empty private tmpfs over each of `private`
    /// (what other hosts wrote there is not visible) and, if `secret` is given as
    /// `(path, text)`, `text` written to `path` inside that private view (a token file that no
    /// other host can read). The process replaces the shell: its pid is the program's.
    pub fn command(
        &self,
        name: &str,
        private: &[&Path],
        secret: Option<(&Path, &str)>,
        program: &Path,
    ) -> Command {
        let mut script = String::from("set -e\n");
        for i in 0..private.len() {
            script.push_str(&format!(
                "mkdir -p \"$NMT_PRIVATE_{i}\"\nmount -t tmpfs -o size=4g nomaly-private \"$NMT_PRIVATE_{i}\"\n"
            ));
        }
        if secret.is_some() {
            script.push_str(
                "mkdir -p \"$(dirname \"$NMT_SECRET_PATH\")\"\n\
                 (umask 077; printf %s \"$NMT_SECRET\" > \"$NMT_SECRET_PATH\")\n\
                 unset NMT_SECRET NMT_SECRET_PATH\n",
            );
        }
        script.push_str("exec \"$@\"\n");
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.host(name).namespace,
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(program);
        for (i, dir) in private.iter().enumerate() {
            c.env(format!("NMT_PRIVATE_{i}"), dir);
        }
        if let Some((path, text)) = secret {
            c.env("NMT_SECRET_PATH", path).env("NMT_SECRET", text);
        }
        c
    }
}

/// The hosts and the bridge between them.
pub struct Network {
    switch: String,
    hosts: Hosts,
}

/// Runs `ip` with `args`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Namespaces left by test processes that are gone.
fn remove_stale() {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("nmt")
            .and_then(|rest| rest.split('n').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Network {
    /// Hosts named `names` on 10.77.0.0/24 (addresses .2, .3, ... in order). `Err` says why
    /// namespaces cannot be made here (not root, no `ip`); see [`Network::create_or_skip`].
    pub fn create(names: &[&str]) -> Result<Network, String> {
        remove_stale();
        let prefix = format!(
            "nmt{}n{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Network {
            switch: format!("{prefix}-switch"),
            hosts: Hosts(Vec::new()),
        };
        ip(&["netns", "add", &net.switch])?;
        let sw = net.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                namespace: format!("{prefix}-{name}"),
                address: format!("10.77.0.{}", i + 2),
                link: format!("v{i}"),
            };
            let ns = host.namespace.as_str();
            ip(&["netns", "add", ns])?;
            net.hosts.0.push(host.clone());
            ip(&[
                "-n", &sw, "link", "add", &host.link, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &host.link, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &host.link, "up"])?;
            let cidr = format!("{}/24", host.address);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// [`Network::create`], or `None` after saying why on stderr where namespaces cannot be
    /// made and [`REQUIRED_ENV`] is not 1 (where it is, failing to make them fails the test).
    pub fn create_or_skip(names: &[&str]) -> Option<Network> {
        match Network::create(names) {
            Ok(net) => Some(net),
            Err(e) if std::env::var(REQUIRED_ENV).as_deref() != Ok("1") => {
                eprintln!(
                    "skipped: network namespaces cannot be made here ({e}); the separate-hosts \
                     tests need root and iproute2 (scripts/test.sh sets {REQUIRED_ENV}=1 unless \
                     told 0, and then this fails)"
                );
                None
            }
            Err(e) => panic!("{REQUIRED_ENV}=1 but namespaces cannot be made: {e}"),
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.host(name)
    }

    /// The hosts, to start processes on them from elsewhere (a launcher closure).
    pub fn hosts(&self) -> Hosts {
        self.hosts.clone()
    }

    /// Takes host `name`'s link down: it is cut off from every other host (its processes run on,
    /// their connections get no answer).
    pub fn cut(&self, name: &str) {
        let host = self.host(name);
        ip(&["-n", &self.switch, "link", "set", &host.link, "down"]).expect("take a link down");
    }

    /// The pids of processes still running in any of the network's namespaces.
    pub fn processes_left(&self) -> Vec<(String, String)> {
        let mut left = Vec::new();
        for ns in self
            .hosts
            .0
            .iter()
            .map(|h| &h.namespace)
            .chain([&self.switch])
        {
            let o = Command::new("ip").args(["netns", "pids", ns]).output();
            if let Ok(o) = o {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    left.push((ns.clone(), pid.to_string()));
                }
            }
        }
        left
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for h in &self.hosts.0 {
            let _ = ip(&["netns", "del", &h.namespace]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}
