//! The tests' one cluster harness: a scheduler and executors, each a real OS process started on
//! free loopback ports with its output in a log file, killed and reaped when dropped (even when a
//! test fails). How a role is started is the caller's: the CLI's tests run the `nomaly` binary,
//! the SQL contract re-runs its own test binary (which cannot name another package's binary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster has to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Builds the command for a role (`scheduler` or `executor`), before its flags.
pub type Launcher = Box<dyn Fn(&str) -> Command + Send + Sync>;

/// The processes of one test cluster.
pub struct Processes {
    launcher: Launcher,
    children: Vec<Child>,
    /// The scheduler's port.
    pub port: u16,
    logs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Processes {
    /// No process yet; the scheduler will listen on `port`.
    pub fn new(port: u16, launcher: Launcher) -> Processes {
        let dir = tempfile::tempdir().expect("a temp dir for the cluster");
        Processes {
            launcher,
            children: Vec::new(),
            port,
            logs: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// The directory holding every process's log (and the executors' work directories).
    pub fn dir(&self) -> &Path {
        &self.logs
    }

    /// Starts `role` with `args` and `env` in `cwd`, its output in `<name>.out` / `<name>.err`.
    pub fn spawn(
        &mut self,
        name: &str,
        role: &str,
        args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) {
        let log = |suffix: &str| {
            std::fs::File::create(self.logs.join(format!("{name}.{suffix}"))).expect("a log file")
        };
        let child = (self.launcher)(role)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("start a cluster process");
        self.children.push(child);
    }

    /// The flags of executor `i` of a scheduler on `self.port`: its own free ports and work
    /// directory, two task slots, and 30 s to reach the scheduler.
    pub fn executor_flags(&self, i: usize) -> Vec<String> {
        let work = self.logs.join(format!("work{i}"));
        std::fs::create_dir_all(&work).expect("an executor work dir");
        let port = |flag: &str| [flag.to_string(), crate::free_port().to_string()];
        let mut flags = vec![
            "--scheduler-host".to_string(),
            "127.0.0.1".to_string(),
            "--scheduler-port".to_string(),
            self.port.to_string(),
        ];
        flags.extend(port("--bind-port"));
        flags.extend(port("--bind-grpc-port"));
        flags.extend(port("--bind-health-port"));
        flags.extend(
            [
                "--work-dir",
                work.to_str().expect("a UTF-8 path"),
                "--vcores",
                "2",
                "--scheduler-connect-timeout-seconds",
                "30",
            ]
            .map(String::from),
        );
        flags
    }

    /// Fails, with every log, if a process has exited.
    pub fn assert_running(&mut self) {
        for c in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("a cluster process exited ({status}):\n{}", self.logs());
            }
        }
    }

    /// Waits up to 60 s for `ready`, failing with the logs if a process exits or time runs out.
    pub fn wait_for(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_WITHIN;
        while !ready() {
            self.assert_alive_until(deadline);
        }
    }

    /// One step of a wait for readiness: fails with every log if a process has exited or
    /// `deadline` has passed, else sleeps a little.
    pub fn assert_alive_until(&mut self, deadline: Instant) {
        self.assert_running();
        assert!(
            Instant::now() < deadline,
            "the cluster was not ready in {READY_WITHIN:?}:\n{}",
            self.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Every process's log, each under its file name.
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut out = String::new();
        for p in names {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push_str(&format!("--- {}\n{text}\n", p.display()));
        }
        out
    }

    /// The processes, in the order they were started.
    pub fn children(&self) -> &[Child] {
        &self.children
    }

    pub fn children_mut(&mut self) -> &mut [Child] {
        &mut self.children
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
