//! A cluster of separate hosts on this machine (`nomaly_tests::netns`): an S3 emulator, the
//! scheduler, executors and the client, each in its own network namespace with its own address.
//! Scheduler, executors and the emulator see a private tmpfs over the temp directories (the
//! client's files, anything another host wrote there), so the object store is the only thing the
//! hosts share. Every process is killed when this is dropped, before the namespaces are removed.

use crate::stores::python;
use crate::{root, stderr};
use nomaly_tests::cluster::{Launcher, Processes};
use nomaly_tests::netns::Network;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The hosts: `s3`, `scheduler`, executors `e0`..`e2` and `client`.
const HOSTS: [&str; 6] = ["s3", "scheduler", "e0", "e1", "e2", "client"];
/// Every server listens on these ports of its own address.
const S3_PORT: u16 = 9000;
const SCHEDULER_PORT: u16 = 50050;
pub(crate) const IN_BUCKET: &str = "nomaly-in";
pub(crate) const OUT_BUCKET: &str = "nomaly-out";

pub(crate) struct SeparateHosts {
    /// Declared first: dropped (killed, reaped) before the network goes.
    processes: Processes,
    net: Network,
    /// The client's directory (private to the client: the other hosts see a tmpfs there).
    pub client_dir: tempfile::TempDir,
    token: String,
    /// Each executor's environment (object-store credentials, faults).
    executor_env: Vec<(String, String)>,
    /// The hosts whose process was started, in order (the processes' order).
    started: Vec<String>,
    /// Processes the test killed (by index).
    killed: Vec<usize>,
}

impl SeparateHosts {
    /// Starts the S3 emulator, the scheduler and executors `e0` and `e1`, or `None` (having
    /// said why) where namespaces cannot be made and the test may skip.
    pub fn start(executor_env: &[(&str, &str)]) -> Option<SeparateHosts> {
        let net = Network::create_or_skip(&HOSTS)?;
        let client_dir = tempfile::tempdir().unwrap();
        let hosts = net.hosts();
        let private = private_dirs(client_dir.path());
        let token_file = client_dir.path().join("cluster.token");
        let token: String = format!("{:032x}", rand_seed());
        let secret = (token_file.clone(), token.clone());
        let launcher: Launcher = Box::new(move |role: &str| {
            let (host, program) = role.split_once(':').expect("host:program");
            let private: Vec<&Path> = private.iter().map(PathBuf::as_path).collect();
            if program == "moto" {
                return hosts.command(host, &private, None, &crate::stores::moto_server());
            }
            let secret = Some((secret.0.as_path(), secret.1.as_str()));
            let mut c = hosts.command(
                host,
                &private,
                secret,
                Path::new(env!("CARGO_BIN_EXE_nomaly")),
            );
            c.arg(program);
            c
        });
        let mut c = SeparateHosts {
            processes: Processes::new(SCHEDULER_PORT, launcher),
            net,
            client_dir,
            token,
            executor_env: Vec::new(),
            started: Vec::new(),
            killed: Vec::new(),
        };
        let s3 = c.address("s3");
        c.spawn(
            "s3",
            "s3:moto",
            &["-H", &s3, "-p", &S3_PORT.to_string()],
            &[],
        );
        c.executor_env = c
            .s3_env()
            .into_iter()
            .chain(
                executor_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .collect();
        let sched = c.address("scheduler");
        let token_file = token_file.to_str().unwrap().to_string();
        let port = SCHEDULER_PORT.to_string();
        let mut args = vec![
            "--bind-host",
            &sched,
            "--external-host",
            &sched,
            "--bind-port",
            &port,
            "--auth-token-file",
            &token_file,
            "--log-level-setting",
            "warn",
        ];
        args.extend(super::QUICK_SCHEDULER);
        // The scheduler plans SQL jobs: it lists and reads the footers of the store's files.
        let env = c.s3_env();
        c.spawn("scheduler", "scheduler:scheduler", &args, &env);
        c.start_executor("e0");
        c.start_executor("e1");
        c.wait_until("two executors registered", |c| c.executors() == 2);
        c.wait_until("the S3 emulator answers", |c| {
            c.client_python(&[
                "-c",
                "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)",
                &c.address("s3"),
                &S3_PORT.to_string(),
            ])
            .status
            .success()
        });
        Some(c)
    }

    fn spawn(&mut self, name: &str, role: &str, args: &[&str], env: &[(String, String)]) {
        self.processes.spawn(name, role, args, env, &root());
        self.started.push(name.to_string());
    }

    /// Starts executor `host` (2 task slots, heartbeats every second, INFO logs: each task it
    /// receives is a line).
    pub fn start_executor(&mut self, host: &str) {
        let addr = self.address(host);
        let sched = self.address("scheduler");
        let token_file = self.client_dir.path().join("cluster.token");
        let work = self.client_dir.path().join("executor-work");
        let args = [
            "--scheduler-host",
            &sched,
            "--scheduler-port",
            "50050",
            "--bind-host",
            &addr,
            "--external-host",
            &addr,
            "--bind-port",
            "50051",
            "--bind-grpc-port",
            "50052",
            "--bind-health-port",
            "50053",
            "--work-dir",
            work.to_str().unwrap(),
            "--vcores",
            "2",
            "--auth-token-file",
            token_file.to_str().unwrap(),
            "--scheduler-connect-timeout-seconds",
            "30",
        ];
        let mut all: Vec<&str> = args.to_vec();
        all.extend(super::QUICK_EXECUTOR);
        let env = self.executor_env.clone();
        self.spawn(host, &format!("{host}:executor"), &all, &env);
    }

    pub fn address(&self, host: &str) -> String {
        self.net.host(host).address.clone()
    }

    pub fn engine(&self) -> String {
        format!("ballista://{}:{SCHEDULER_PORT}", self.address("scheduler"))
    }

    pub fn s3_endpoint(&self) -> String {
        format!("http://{}:{S3_PORT}", self.address("s3"))
    }

    /// The client's environment for the store and the cluster.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "nomaly".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "nomaly-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.s3_endpoint()),
        ]
    }

    /// `nomaly args` on the client host, with the store's and the cluster's settings and `env`.
    pub fn client_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c =
            self.net
                .hosts()
                .command("client", &[], None, Path::new(env!("CARGO_BIN_EXE_nomaly")));
        c.args(args).current_dir(self.client_dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("AZURE_") || k.starts_with("GOOGLE_") {
                c.env_remove(k);
            }
        }
        c.envs(self.s3_env())
            .env("NOMALY_CLUSTER_TOKEN", &self.token);
        c.envs(env.iter().copied());
        c
    }

    pub fn client(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.client_command(args, env)
            .output()
            .expect("run nomaly on the client")
    }

    /// The test's Python (boto3) on the client host.
    pub fn client_python(&self, args: &[&str]) -> Output {
        let mut c = self.net.hosts().command("client", &[], None, &python());
        c.args(args).current_dir(root());
        c.output().expect("run python on the client")
    }

    /// scripts/store_fixture.py `mode` against the S3 emulator, on the client host.
    fn store_fixture(&self, mode: &str, args: &[&str]) -> Output {
        let script = root().join("scripts/store_fixture.py");
        let endpoint = self.s3_endpoint();
        let mut all = vec![script.to_str().unwrap(), mode, &endpoint];
        all.extend_from_slice(args);
        let o = self.client_python(&all);
        assert!(
            o.status.success(),
            "store_fixture.py {mode}: {}",
            stderr(&o)
        );
        o
    }

    /// Uploads every file under `dir` into `bucket` (created if new), keys relative to `dir`.
    pub fn upload(&self, bucket: &str, dir: &Path) {
        self.store_fixture("s3", &[bucket, dir.to_str().unwrap()]);
    }

    /// Downloads `prefix` of the output bucket into `dir`: the object names, sorted.
    pub fn download(&self, prefix: &str, dir: &Path) -> Vec<String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let o = self.store_fixture("s3-get", &[OUT_BUCKET, prefix, dir.to_str().unwrap()]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The scheduler's REST API, asked from the client host.
    fn executors(&self) -> usize {
        let url = format!(
            "http://{}:{SCHEDULER_PORT}/api/executors",
            self.address("scheduler")
        );
        let auth = format!("Authorization: Bearer {}", self.token);
        let mut c = self
            .net
            .hosts()
            .command("client", &[], None, Path::new("curl"));
        let o = c
            .args(["-s", "-m", "5", "-H", &auth, &url])
            .output()
            .expect("curl");
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// Tasks executor `host` has received so far (its log says each).
    pub fn tasks_received(&self, host: &str) -> usize {
        ["out", "err"]
            .iter()
            .map(|ext| {
                std::fs::read_to_string(self.processes.dir().join(format!("{host}.{ext}")))
                    .unwrap_or_default()
                    .matches("Received task")
                    .count()
            })
            .sum()
    }

    /// Waits up to 60 s for `ready`, failing with every log if a process exits or time runs out.
    pub fn wait_until(&mut self, what: &str, ready: impl Fn(&SeparateHosts) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "not within 60 s: {what}\n{}",
                self.processes.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails, with every log, if a process the test did not kill has exited.
    fn assert_running(&mut self) {
        let killed = self.killed.clone();
        for (i, c) in self.processes.children_mut().iter_mut().enumerate() {
            if !killed.contains(&i)
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "{} exited ({status}):\n{}",
                    self.started[i],
                    self.processes.logs()
                );
            }
        }
    }

    /// SIGKILLs executor `host` (no goodbye).
    pub fn kill(&mut self, host: &str) {
        let i = self.index_of(host);
        self.killed.push(i);
        let child = &mut self.processes.children_mut()[i];
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// Cuts host `host` off the network; its processes run on.
    pub fn cut(&self, host: &str) {
        self.net.cut(host);
    }

    fn index_of(&self, host: &str) -> usize {
        self.started
            .iter()
            .position(|n| n == host)
            .expect("a started host")
    }

    pub fn logs(&self) -> String {
        self.processes.logs()
    }

    /// Stops every process, then asserts none is left in any of the namespaces.
    pub fn stop_and_check_gone(self) {
        let SeparateHosts { processes, net, .. } = self;
        drop(processes);
        let left = net.processes_left();
        assert!(
            left.is_empty(),
            "processes left in the namespaces: {left:?}"
        );
    }
}

/// What a server host sees as its own empty directories: the temp directory (and the client's
/// directory, wherever it is).
fn private_dirs(client: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![std::env::temp_dir()];
    if !client.starts_with(std::env::temp_dir()) {
        dirs.push(client.to_path_buf());
    }
    // An executor's work directory, made empty on each.
    dirs.push(client.join("executor-work"));
    dirs
}

/// A token unique to this test run (not a secret anyone else could guess beforehand).
fn rand_seed() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t ^ ((std::process::id() as u128) << 64)
}
