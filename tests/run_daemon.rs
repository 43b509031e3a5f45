//! `credwatch run` as a user starts it: sensors attach, exec and exit lines are logged at debug
//! level, and SIGINT or SIGTERM detach cleanly with exit status 0. Needs root.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The daemon's stderr, line by line, read on a thread so the test can wait with a timeout.
struct Daemon {
    _state: tempfile::TempDir,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Started with `--log-format json`: every line must be a JSON object.
    json: bool,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With `args` after `credwatch run`'s own.
    fn start_with(args: &[&str]) -> Self {
        let state = tempfile::tempdir().unwrap();
        // The built-in defaults, except what two daemons side by side would share.
        let config = state.path().join("credwatch.toml");
        let audit = state.path().join("audit.jsonl");
        std::fs::write(&config, format!("[metrics]\nlisten = \"127.0.0.1:0\"\n[audit]\npath = {:?}\n", audit.display().to_string()))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_credwatch"))
            .args(["run", "--log", "debug", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(state.path())
            .arg("--socket")
            .arg(state.path().join("api.sock"))
            .args(args)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = forward_lines(child.stderr.take().unwrap());
        let json = args.windows(2).any(|pair| pair == ["--log-format", "json"]);
        let mut daemon = Self { _state: state, child, lines, seen: Vec::new(), json };
        daemon.wait_for(|line| line.contains("sensors attached"));
        daemon
    }

    /// Returns the first new line matching `wanted`, panicking with the log after 10 s.
    fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(error) => panic!("{error}; daemon log so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn stop(mut self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        self.wait_for(|line| line.contains("sensors detached"));
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "clean exit; log:\n{}", self.seen.join("\n"));
        for line in self.seen.iter().filter(|_| self.json) {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(parsed.is_ok_and(|line| line["level"].is_string()), "not a JSON log line: {line}");
        }
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    receiver
}

#[test]
fn run_logs_exec_and_exit_and_stops_on_sigint() {
    let mut daemon = Daemon::start();
    let mut child = Command::new("/bin/sh").args(["-c", "exit 5"]).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(5));
    let exec = daemon.wait_for(|line| line.contains(" exec ") && line.contains(&format!("pid={pid} ")));
    assert!(exec.contains("DEBUG"), "{exec}");
    assert!(exec.contains("filename=/bin/sh"), "{exec}");
    assert!(exec.contains(&format!("ppid={}", std::process::id())), "{exec}");
    daemon.wait_for(|line| line.contains(" exit ") && line.contains(&format!("pid={pid} ")) && line.contains("status=exited 5"));
    daemon.stop(libc::SIGINT);
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object() {
    let mut daemon = Daemon::start_with(&["--log-format", "json"]);
    let mut child = Command::new("/bin/sh").args(["-c", "exit 5"]).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(5));
    let exec = daemon.wait_for(|line| line.contains("\"exec\"") && line.contains(&format!("\"pid\":{pid}")));
    let exec: serde_json::Value = serde_json::from_str(&exec).unwrap();
    assert_eq!(exec["level"], "DEBUG", "{exec}");
    assert_eq!(exec["fields"]["filename"], "/bin/sh", "{exec}");
    daemon.stop(libc::SIGTERM);
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    Daemon::start().stop(libc::SIGTERM);
}

#[test]
fn a_second_daemon_on_the_same_socket_directory_refuses_to_start_naming_the_first() {
    let daemon = Daemon::start();
    let second_state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["run", "--state-dir"])
        .arg(second_state.path())
        .arg("--socket")
        .arg(daemon._state.path().join("api.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = format!("another credwatch daemon (pid {}) already runs with", daemon.child.id());
    assert!(stderr.contains(&named), "{stderr}");
    daemon.stop(libc::SIGTERM);
}
