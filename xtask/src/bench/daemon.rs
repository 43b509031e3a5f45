//! A `credwatch run` for one measurement: its own config, state directory, socket and log, and
//! what `credwatch status` says about it.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{
    error::BenchError,
    scratch::{log_tail, Scratch},
};

/// Loading the sensors and resolving the catalogue takes well under a second here.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// The daemon detaches its syscall programs on a 1 s tick once nothing needs them.
const HOOKS_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Daemon {
    child: Child,
    binary: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `credwatch run` on the built-in catalogue with `scratch`'s HOME, and waits until it
    /// answers `status`.
    pub fn start(binary: &Path, scratch: &Scratch) -> Result<Self, BenchError> {
        Self::start_with(binary, scratch, "")
    }

    /// The same, with `more` appended to its config (TOML tables after `[catalogue]`).
    pub fn start_with(binary: &Path, scratch: &Scratch, more: &str) -> Result<Self, BenchError> {
        let dir = scratch.run_dir("daemon")?;
        let config = dir.join("credwatch.toml");
        let text = format!(
            "[catalogue]\nhomes = [{:?}]\n{more}",
            scratch.home().display().to_string()
        );
        std::fs::write(&config, text)
            .map_err(BenchError::io(format!("writing {}", config.display())))?;
        let log = dir.join("daemon.log");
        let log_file =
            File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let socket = dir.join("api.sock");
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&dir)
            .arg("--socket")
            .arg(&socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(BenchError::io(format!("starting {} run", binary.display())))?;
        let mut daemon = Self {
            child,
            binary: binary.to_owned(),
            socket,
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = daemon
                .child
                .try_wait()
                .map_err(BenchError::io("waiting for credwatch"))?
            {
                return Err(
                    daemon.helper_error(format!("credwatch run ended with {status} at start"))
                );
            }
            if daemon.socket.exists() && daemon.status().is_ok() {
                return Ok(daemon);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::NotReady {
                    what: "credwatch run".to_owned(),
                    waited: START_TIMEOUT,
                    log: log_tail(&daemon.log),
                });
            }
            thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its API socket, for a `credwatch` command run by the benchmark.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `credwatch status`, as its flattened `key value` rows.
    pub fn status(&self) -> Result<Status, BenchError> {
        let output = self.cli(&["status"])?;
        let rows = output
            .lines()
            .filter_map(|line| line.split_once(char::is_whitespace))
            .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
            .collect();
        Ok(Status(rows))
    }

    /// Waits until the daemon has detached its syscall programs, which it does on its next tick
    /// (1 s) once no process holds a secret: an untracked row measures a host with no holder,
    /// not the second after the previous row's holder exited.
    pub fn wait_for_no_holder(&self) -> Result<(), BenchError> {
        let started = Instant::now();
        while self.status()?.flag("kernel.syscall_hooks_attached")? {
            if started.elapsed() > HOOKS_TIMEOUT {
                return Err(BenchError::NotReady {
                    what: "credwatch detaching its syscall programs with no holder left".to_owned(),
                    waited: HOOKS_TIMEOUT,
                    log: log_tail(&self.log),
                });
            }
            thread::sleep(POLL);
        }
        Ok(())
    }

    /// Registers process `pid` as the root of task `id`, granted the scratch secret.
    pub fn start_task(&self, id: &str, pid: u32, secret: &Path) -> Result<(), BenchError> {
        let pid = pid.to_string();
        let secret = secret.to_string_lossy();
        self.cli(&[
            "task", "start", "--id", id, "--pid", &pid, "--secret", &secret,
        ])
        .map(drop)
    }

    /// Stops it with SIGTERM and checks that it exited cleanly.
    pub fn stop(mut self) -> Result<(), BenchError> {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self
            .child
            .wait()
            .map_err(BenchError::io("waiting for credwatch to stop"))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.helper_error(format!("credwatch run ended with {status} after SIGTERM")))
        }
    }

    fn cli(&self, args: &[&str]) -> Result<String, BenchError> {
        let output = Command::new(&self.binary)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::io(format!("running credwatch {}", args[0])))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(BenchError::Helper {
                what: format!("`credwatch {}` failed ({})", args.join(" "), output.status),
                log: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    fn helper_error(&self, what: String) -> BenchError {
        BenchError::Helper {
            what,
            log: log_tail(&self.log),
        }
    }
}

impl Drop for Daemon {
    /// After an error: the daemon must not outlive the benchmark. Its programs detach with it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `credwatch status` rows: `daemon.events.secret_open`, `latency.p99_ns`, ...
pub struct Status(BTreeMap<String, String>);

impl Status {
    pub fn number(&self, key: &str) -> Result<u64, BenchError> {
        self.0
            .get(key)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| BenchError::MissingStatus(key.to_owned()))
    }

    pub fn flag(&self, key: &str) -> Result<bool, BenchError> {
        self.0
            .get(key)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| BenchError::MissingStatus(key.to_owned()))
    }

    /// A counter that may be absent before its first event (`daemon.events.*` is a map filled
    /// as kinds are seen).
    pub fn count(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}
