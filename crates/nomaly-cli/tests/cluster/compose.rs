//! `docker-compose.yml` describes a working cluster. Docker does not run here, so each service's
//! `command` is started as a local process: service host names become 127.0.0.1, each port
//! becomes a free port of this host (the same one wherever the file names it: the written ports
//! lie in Linux's ephemeral range, where a test running beside this one may hold them), every
//! volume becomes a directory shared by the services that mount it, and other
//! absolute paths a service names live under a directory of its own (its container's filesystem).
//! Each compose secret becomes a file of its own holding a token made for the test, at the path
//! the service reads (`/run/secrets/NAME`). The `pipeline` service then runs its example pipeline
//! on that cluster, and the part files equal a local run's.

use super::{Cluster, alive};
use crate::{nomaly_env, part_files, root, stderr};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One service of the compose file, as this host runs it.
struct Service {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

struct ComposeFile {
    services: BTreeMap<String, Value>,
    /// Named volume or bind source → directory on this host.
    volumes: BTreeMap<String, PathBuf>,
    /// Where each service's own absolute paths go.
    roots: PathBuf,
    /// Secret name → the file on this host that holds it.
    secrets: BTreeMap<String, PathBuf>,
    /// Port the file names → the free port it becomes here.
    ports: BTreeMap<String, String>,
}

/// The token the test puts in every secret file.
const TEST_TOKEN: &str = "compose-test-token-0123456789abcdef";

impl ComposeFile {
    fn read(tmp: &Path) -> ComposeFile {
        let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
        let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
        doc.apply_merge().expect("merge keys resolve");
        let services: BTreeMap<String, Value> =
            serde_yaml::from_value(doc["services"].clone()).expect("services is a map");
        let declared: BTreeMap<String, Value> =
            serde_yaml::from_value(doc["secrets"].clone()).unwrap_or_default();
        let mut secrets = BTreeMap::new();
        for (name, def) in declared {
            assert!(def["file"].as_str().is_some(), "secret {name} names a file");
            let file = tmp.join("secrets").join(&name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, format!("{TEST_TOKEN}\n")).unwrap();
            secrets.insert(name, file);
        }
        ComposeFile {
            services,
            volumes: BTreeMap::new(),
            roots: tmp.to_path_buf(),
            secrets,
            ports: BTreeMap::new(),
        }
    }

    fn str_list(v: &Value, what: &str) -> Vec<String> {
        v.as_sequence()
            .unwrap_or_else(|| panic!("{what} must be a list"))
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{what}: {other:?} is not a string"),
            })
            .collect()
    }

    /// The free port of this host that the file's `port` becomes.
    fn port(&mut self, port: &str) -> String {
        self.ports
            .entry(port.to_string())
            .or_insert_with(|| crate::free_port().to_string())
            .clone()
    }

    /// Maps one absolute container path of `service` to this host.
    fn host_path(&mut self, service: &str, mounts: &[(String, String)], path: &str) -> String {
        if let Some(name) = path.strip_prefix("/run/secrets/") {
            let has = self.services[service]["secrets"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(name)));
            assert!(
                has,
                "{service} reads secret {name} without listing it in `secrets`"
            );
            return self.secrets[name].display().to_string();
        }
        for (source, target) in mounts {
            if let Some(rest) = path.strip_prefix(target.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                let dir = match source.strip_prefix("./") {
                    Some(relative) => root().join(relative),
                    None => self
                        .volumes
                        .entry(source.clone())
                        .or_insert_with(|| self.roots.join("volumes").join(source))
                        .clone(),
                };
                std::fs::create_dir_all(&dir).unwrap();
                return format!("{}{rest}", dir.display());
            }
        }
        let own = self.roots.join(service).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&own).unwrap();
        own.display().to_string()
    }

    fn service(&mut self, name: &str) -> Service {
        let def = self
            .services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service '{name}'"))
            .clone();
        let mounts: Vec<(String, String)> = match def.get("volumes") {
            Some(v) => Self::str_list(v, "volumes")
                .into_iter()
                .map(|m| {
                    let mut parts = m.split(':');
                    let source = parts.next().unwrap().to_string();
                    let target = parts.next().expect("source:target").to_string();
                    (source, target)
                })
                .collect(),
            None => Vec::new(),
        };
        let hosts: Vec<String> = self.services.keys().cloned().collect();
        // A value after a `--*-host` flag, an absolute path, or a URL naming a service.
        let map = |this: &mut Self, flag: &str, value: &str| -> String {
            if flag.ends_with("host") && hosts.iter().any(|h| h == value) {
                return "127.0.0.1".into();
            }
            if flag.starts_with("--") && flag.ends_with("port") {
                return this.port(value);
            }
            if value.starts_with('/') {
                return this.host_path(name, &mounts, value);
            }
            let mut v = value.to_string();
            for h in &hosts {
                if let Some((before, after)) = v.split_once(&format!("//{h}:")) {
                    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
                    let rest = after[digits.len()..].to_string();
                    v = format!("{before}//127.0.0.1:{}{rest}", this.port(&digits));
                }
            }
            v
        };
        let command = Self::str_list(&def["command"], &format!("{name}.command"));
        assert_eq!(command[0], "nomaly", "{name} runs the nomaly binary");
        let mut args: Vec<String> = Vec::new();
        for (i, a) in command.iter().enumerate().skip(1) {
            args.push(map(self, &command[i - 1], a));
        }
        let env = match def.get("environment") {
            Some(Value::Mapping(m)) => {
                m.iter()
                    .map(|(k, v)| {
                        let k = k.as_str().unwrap().to_string();
                        let v = v.as_str().map(str::to_string).unwrap_or_else(|| {
                            serde_yaml::to_string(v).unwrap().trim().to_string()
                        });
                        (k, map(self, "", &v))
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Service { args, env }
    }
}

/// The ports a command listens on: the values of its `--bind-*port` flags.
fn bind_ports(args: &[String]) -> Vec<u16> {
    args.windows(2)
        .filter(|w| w[0].starts_with("--bind") && w[0].ends_with("port"))
        .map(|w| w[1].parse().unwrap())
        .collect()
}

#[test]
fn the_compose_file_describes_a_working_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut compose = ComposeFile::read(tmp.path());
    let scheduler = compose.service("scheduler");
    let executors: Vec<Service> = ["executor-1", "executor-2"]
        .iter()
        .map(|e| compose.service(e))
        .collect();
    let pipeline = compose.service("pipeline");
    let port = bind_ports(&scheduler.args)[0];
    let mut cluster = Cluster::empty(port);
    // The harness's own REST calls send the compose file's token.
    cluster.token = Some(TEST_TOKEN.to_string());
    cluster.spawn_env(
        "scheduler",
        &scheduler
            .args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &scheduler.env,
    );
    cluster.wait_for(|c| c.http_get("/api/state").is_some_and(|(s, _)| s == 200));
    for (i, e) in executors.iter().enumerate() {
        cluster.spawn_env(
            &format!("executor-{}", i + 1),
            &e.args.iter().map(String::as_str).collect::<Vec<_>>(),
            &e.env,
        );
    }
    cluster.wait_for(|c| c.executors() == 2);

    let o = Command::new(env!("CARGO_BIN_EXE_nomaly"))
        .args(&pipeline.args)
        .envs(pipeline.env.iter().map(|(k, v)| (k, v)))
        .current_dir(root())
        .output()
        .unwrap();
    cluster.assert_succeeded(&o);
    let out = pipeline
        .env
        .iter()
        .find(|(k, _)| k == "NOMALY_OUT")
        .map(|(_, v)| PathBuf::from(v))
        .expect("the pipeline service sets NOMALY_OUT");
    let example = pipeline
        .args
        .iter()
        .find(|a| a.ends_with(".toml"))
        .expect("the pipeline service runs a pipeline file");
    let local_out = tmp.path().join("local");
    let local = nomaly_env(
        &["run", example],
        &[("NOMALY_OUT", local_out.to_str().unwrap())],
    );
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    let (a, b) = (
        part_files(&local_out.join("minimal")),
        part_files(&out.join("minimal")),
    );
    assert!(!a.is_empty());
    crate::assert_same_parts("the compose cluster vs local", &a, &b);

    let pids = cluster.pids();
    drop(cluster);
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "cluster processes left running: {left:?}");
}
