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

/// How a process was started, to start it again.
struct Spawned {
    name: String,
    role: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Restarts after losing a port to another process.
    restarts: u32,
}

/// The flags whose value is a port this harness drew from the free ones.
const PORT_FLAGS: [&str; 3] = ["--bind-port", "--bind-grpc-port", "--bind-health-port"];

/// The processes of one test cluster.
pub struct Processes {
    launcher: Launcher,
    children: Vec<Child>,
    spawned: Vec<Spawned>,
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
            spawned: Vec::new(),
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
        let spawned = Spawned {
            name: name.to_string(),
            role: role.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.to_vec(),
            cwd: cwd.to_path_buf(),
            restarts: 0,
        };
        let child = self.start(&spawned);
        self.children.push(child);
        self.spawned.push(spawned);
    }

    fn start(&self, s: &Spawned) -> Child {
        let log = |suffix: &str| {
            std::fs::File::create(self.logs.join(format!("{}.{suffix}", s.name)))
                .expect("a log file")
        };
        (self.launcher)(&s.role)
            .args(&s.args)
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&s.cwd)
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("start a cluster process")
    }

    /// Starts process `i` again on fresh ports if it exited because another process took one of
    /// the ports drawn for it (a free port is free only until someone binds it; tests run in
    /// parallel). True if it did.
    fn restart_if_port_taken(&mut self, i: usize) -> bool {
        let s = &self.spawned[i];
        let err =
            std::fs::read_to_string(self.logs.join(format!("{}.err", s.name))).unwrap_or_default();
        if s.role != "executor" || s.restarts >= 3 || !err.contains("Address already in use") {
            return false;
        }
        let mut args = s.args.clone();
        for at in 0..args.len().saturating_sub(1) {
            if PORT_FLAGS.contains(&args[at].as_str()) {
                args[at + 1] = crate::free_port().to_string();
            }
        }
        self.spawned[i].args = args;
        self.spawned[i].restarts += 1;
        self.children[i] = self.start(&self.spawned[i]);
        true
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

    /// Fails, with every log, if a process has exited (an executor that lost a port to another
    /// process is started again on fresh ones).
    pub fn assert_running(&mut self) {
        for i in 0..self.children.len() {
            if let Ok(Some(status)) = self.children[i].try_wait()
                && !self.restart_if_port_taken(i)
            {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An executor whose drawn port was taken before it bound it is started again on another.
    #[test]
    fn an_executor_that_lost_its_port_starts_again_on_another() {
        let launcher: Launcher = Box::new(|_| {
            let mut c = Command::new("sh");
            let script = "if [ \"$2\" = 1 ]; then echo 'Address already in use (os error 98)' >&2; \
                          exit 1; fi; exec sleep 30";
            c.args(["-c", script, "sh"]);
            c
        });
        let mut p = Processes::new(0, launcher);
        p.spawn(
            "executor0",
            "executor",
            &["--bind-port", "1"],
            &[],
            Path::new("."),
        );
        let _ = p.children[0].wait();
        p.assert_running();
        assert_ne!(p.spawned[0].args[1], "1");
        assert_eq!(p.spawned[0].restarts, 1);
        assert!(p.children[0].try_wait().unwrap().is_none(), "running again");
    }
}
