//! A real `credwatch run` for end-to-end tests: its own HOME with planted secrets, state
//! directory, API socket and recording, and its log captured for assertions.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use monitor::api::client::ApiClient;
use serde_json::Value;

/// A fresh HOME and state directory.
fn fresh_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let home = tempfile::Builder::new().prefix("credwatch-home-").tempdir().unwrap();
    let state = tempfile::Builder::new().prefix("credwatch-state-").tempdir().unwrap();
    (home, state)
}

pub struct RunningDaemon {
    pub home: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub socket: PathBuf,
    pub record: PathBuf,
    pub client: ApiClient,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Values planted by the test; none may appear in any output.
    planted: Vec<String>,
}

impl RunningDaemon {
    /// Starts the daemon on the built-in catalogue with `~` = a fresh HOME; `extra_config` is
    /// appended to the config file (e.g. an `[actions]` table).
    pub fn start(extra_config: &str) -> Self {
        Self::start_with_args(extra_config, &[])
    }

    /// Starts a daemon on an existing HOME and state directory (a restart).
    pub fn start_in(home: tempfile::TempDir, state: tempfile::TempDir, extra_config: &str) -> Self {
        Self::launch(home, state, extra_config, &[], &[])
    }

    /// Like `start`, with more arguments for `credwatch run` (e.g. `--ring-buffer-mib 1`).
    pub fn start_with_args(extra_config: &str, args: &[&str]) -> Self {
        let (home, state) = fresh_dirs();
        Self::launch(home, state, extra_config, &[], args)
    }

    /// Like `start_with_args`, with the daemon run through `wrapper`, a command that execs its
    /// arguments (e.g. `setpriv --bounding-set=…`).
    pub fn start_wrapped(wrapper: &[&str], extra_config: &str, args: &[&str]) -> Self {
        let (home, state) = fresh_dirs();
        Self::launch(home, state, extra_config, wrapper, args)
    }

    fn launch(
        home: tempfile::TempDir,
        state: tempfile::TempDir,
        extra_config: &str,
        wrapper: &[&str],
        args: &[&str],
    ) -> Self {
        let config = state.path().join("credwatch.toml");
        // Daemons run side by side: each gets an ephemeral metrics port and its own audit log,
        // unless the test configures them itself.
        let mut exports = String::new();
        if !extra_config.contains("[metrics]") {
            exports += "[metrics]\nlisten = \"127.0.0.1:0\"\n";
        }
        if !extra_config.contains("[audit]") {
            exports += &format!("[audit]\npath = {:?}\n", state.path().join("audit.jsonl").display().to_string());
        }
        std::fs::write(
            &config,
            format!("[catalogue]\nhomes = [{:?}]\n{extra_config}\n{exports}", home.path().display().to_string()),
        )
        .unwrap();
        let socket = state.path().join("api.sock");
        let record = state.path().join(format!("record-{}.jsonl", Instant::now().elapsed().as_nanos()));
        let binary = env!("CARGO_BIN_EXE_credwatch");
        let mut command = match wrapper {
            [] => Command::new(binary),
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        let mut child = command
            .arg("run")
            .arg("--log")
            .arg("info,monitor=debug")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(state.path())
            .arg("--socket")
            .arg(&socket)
            .arg("--record")
            .arg(&record)
            .args(args)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let daemon =
            Self { home, state, client: ApiClient::new(&socket), socket, record, child, log, planted: Vec::new() };
        daemon.wait_for_log("sensors attached");
        // Logged once the socket listens: its file appears at bind(), a moment before listen(),
        // and a connect in between is refused.
        daemon.wait_for_log("task API listening");
        daemon
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + super::patience(20);
        while !self.log.lock().unwrap().iter().any(|line| line.contains(needle)) {
            assert!(self.child_alive(), "daemon died; log:\n{}", self.log_text());
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address `/metrics` is served on, from the daemon's log.
    pub fn metrics_address(&self) -> std::net::SocketAddr {
        self.wait_for_log("metrics listening");
        let log = self.log.lock().unwrap();
        let line = log.iter().find(|line| line.contains("metrics listening")).unwrap();
        let address = line.split_whitespace().find_map(|field| field.strip_prefix("address=")).unwrap();
        address.parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    /// The audit log, where the harness puts it unless the test configured `[audit]`.
    /// What the daemon's sensors say they miss or cannot refuse (`status`: `kernel.gaps`), by
    /// capability.
    pub async fn gaps(&self) -> Vec<String> {
        let status = self.client.status().await.unwrap();
        status["kernel"]["gaps"]
            .as_array()
            .expect("status lists the sensors' gaps")
            .iter()
            .filter_map(|gap| Some(gap["capability"].as_str()?.to_owned()))
            .collect()
    }

    /// The value of the first series of `/metrics` starting with `series` (0 if there is none).
    pub fn scrape(&self, series: &str) -> u64 {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(self.metrics_address()).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nhost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.state.path().join("audit.jsonl")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the daemon's process (SIGSTOP): the kernel side keeps deciding, nothing is drained.
    pub fn pause(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets a paused daemon go on (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    fn child_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.child.id() as i32, 0) == 0 }
    }

    /// Writes a secret file under HOME with a fresh random value, and remembers the value.
    pub fn plant(&mut self, relative: &str) -> (PathBuf, String) {
        let path = self.home.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let value = super::planted_value();
        std::fs::write(&path, &value).unwrap();
        self.planted.push(value.clone());
        (path, value)
    }

    /// A value the daemon or a test made up elsewhere (a decoy): none may appear in any output.
    pub fn remember(&mut self, value: String) {
        self.planted.push(value);
    }

    /// A fresh random value for an environment variable, remembered like a planted file.
    pub fn plant_value(&mut self) -> String {
        let value = super::planted_value();
        self.planted.push(value.clone());
        value
    }

    /// Waits until the daemon watches `path` (it appeared after start: inotify).
    pub fn wait_watched(&self, path: &Path) {
        self.wait_for_log(&format!("{}", path.display()));
    }

    /// Polls the findings until one matches `wanted` (10 s), returning it.
    pub async fn finding(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + super::patience(10);
        loop {
            if let Some(found) = self.findings().await.into_iter().find(|finding| wanted(finding)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such finding; all: {:#?}\nlog:\n{}",
                self.findings().await,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn findings(&self) -> Vec<Value> {
        let mut lines = self.client.findings(false).await.expect("findings over the API");
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }

    /// Lets the daemon's loop catch up with everything the kernel has sent so far: the daemon
    /// applies every event already in the ring buffer before it answers a control request.
    pub async fn settle(&self) {
        self.client.status().await.unwrap();
    }

    /// Waits for a daemon the test killed, checks that no planted value appears in its log, and
    /// returns HOME and the state directory for a restart.
    pub fn abandon(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        self.child.wait().unwrap();
        let log = self.log_text();
        for value in &self.planted {
            assert!(!log.contains(value.as_str()), "a planted secret value appears in the daemon's log");
        }
        let Self { home, state, .. } = self;
        (home, state)
    }

    /// Stops the daemon with SIGTERM, checks it exited cleanly, and checks that no planted value
    /// appears in its log, its findings, its recording, its task registry or its audit log.
    /// Returns HOME and the state directory for a restart.
    pub async fn stop(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        let findings = serde_json::to_string(&self.findings().await).unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "daemon exit; log:\n{}", self.log_text());
        assert!(!self.log_text().contains('\x1b'), "colour codes in a log written to a file");
        let recording = std::fs::read_to_string(&self.record).unwrap_or_default();
        let registry = std::fs::read_to_string(self.state.path().join("tasks.json")).unwrap_or_default();
        let audit = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        for (name, text) in [
            ("log", self.log_text()),
            ("findings", findings),
            ("recording", recording),
            ("registry", registry),
            ("audit log", audit),
        ] {
            for value in &self.planted {
                assert!(!text.contains(value.as_str()), "a planted secret value appears in the daemon's {name}");
            }
        }
        let Self { home, state, .. } = self;
        (home, state)
    }
}
