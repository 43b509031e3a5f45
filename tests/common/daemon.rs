//! A real `credwatch run` for end-to-end tests: its own HOME with planted secrets, state
//! directory, API socket and recording, and its log captured for assertions. When it stops, the
//! harness fails the test on a panic anywhere in it and on a planted value in any of its outputs.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use base64::{
    engine::general_purpose::{GeneralPurpose, STANDARD_NO_PAD, URL_SAFE_NO_PAD},
    Engine as _,
};
use monitor::{api::client::ApiClient, config::Config, export::audit::AuditConfig};
use serde_json::Value;

/// The file `cargo xtask test` names for the values the harness plants or is told of, so that
/// its scan of the suite's output finds decoys too (xtask/src/leaks.rs).
const LEAK_VALUES_VAR: &str = "CREDWATCH_LEAK_VALUES";

/// The shortest part of a value that counts as the value: shorter ones turn up by chance.
const SLICE: usize = 12;

/// A fresh HOME and state directory.
fn fresh_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let home = tempfile::Builder::new().prefix("credwatch-home-").tempdir().unwrap();
    let state = tempfile::Builder::new().prefix("credwatch-state-").tempdir().unwrap();
    (home, state)
}

pub struct RunningDaemon {
    /// First, so that a daemon left running is killed before its directories are removed.
    process: Process,
    pub home: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub socket: PathBuf,
    pub record: PathBuf,
    pub client: ApiClient,
    log: Arc<Mutex<Vec<String>>>,
    /// Values planted by the test; none may appear in any output.
    planted: Vec<String>,
    /// The audit log as the daemon was configured, if it writes one.
    audit: Option<AuditConfig>,
}

/// The daemon's process and the thread copying its stderr into the log. The kill is here, not in
/// a `Drop` of `RunningDaemon`, so that `stop` and `abandon` can still move HOME and the state
/// directory out of it.
pub struct Process {
    pub child: Child,
    pub stderr: JoinHandle<()>,
}

impl Drop for Process {
    /// A daemon whose test failed, or that was never stopped, must not outlive the test: killed
    /// (SIGKILL) and reaped. After `stop` or `abandon` it is already reaped, and std sends nothing.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Waits for the daemon to exit and for the last of its stderr to reach the log.
    fn reap(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        let deadline = Instant::now() + super::patience(10);
        while !self.stderr.is_finished() {
            assert!(Instant::now() < deadline, "the daemon's stderr stayed open after it exited: its log is incomplete");
            std::thread::sleep(Duration::from_millis(5));
        }
        status
    }
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
        // Unique, so that a restart in the same state directory does not write over the recording.
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let record = state.path().join(format!("record-{}.jsonl", started.as_nanos()));
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
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Self {
            process: Process { child, stderr },
            home,
            state,
            client: ApiClient::new(&socket),
            socket,
            record,
            log,
            planted: Vec::new(),
            audit: None,
        };
        daemon.wait_for_log("sensors attached");
        // Logged once the socket listens: its file appears at bind(), a moment before listen(),
        // and a connect in between is refused.
        daemon.wait_for_log("task API listening");
        daemon.audit = Config::load(&config).expect("the config the daemon started with").export.audit;
        daemon
    }

    /// The log so far, for a failure message: every planted value in it is replaced, so that a
    /// leak the scan is about to report is not printed first.
    pub fn log_text(&self) -> String {
        let mut text = self.raw_log();
        for value in &self.planted {
            text = text.replace(value.as_str(), "[planted value]");
        }
        text
    }

    fn raw_log(&self) -> String {
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

    /// The value of the first series of `/metrics` (name and labels) starting with `series`. One
    /// that does not exist fails the test: a missing series is not a zero.
    pub fn scrape(&self, series: &str) -> u64 {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(self.metrics_address()).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nhost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (_head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        series_value(body, series)
    }

    /// The audit log; the harness puts it in the state directory unless the test configured
    /// `[audit]`.
    pub fn audit_path(&self) -> PathBuf {
        self.audit.as_ref().expect("this daemon writes no audit log").path.clone()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Stops the daemon's process (SIGSTOP): the kernel side keeps deciding, nothing is drained.
    pub fn pause(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets a paused daemon go on (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.child.id() as i32, libc::SIGCONT) };
    }

    fn child_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.process.child.id() as i32, 0) == 0 }
    }

    /// Writes a secret file under HOME with a fresh random value, and remembers the value.
    pub fn plant(&mut self, relative: &str) -> (PathBuf, String) {
        let path = self.home.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let value = super::planted_value();
        std::fs::write(&path, &value).unwrap();
        self.keep(value.clone());
        (path, value)
    }

    /// A value the daemon or a test made up elsewhere (a decoy): none may appear in any output.
    /// One value, not a decoy file's content: its keys and layout are no secret.
    pub fn remember(&mut self, value: String) {
        self.keep(value);
    }

    /// A fresh random value for an environment variable, remembered like a planted file.
    pub fn plant_value(&mut self) -> String {
        let value = super::planted_value();
        self.keep(value.clone());
        value
    }

    /// Adds `value` to those scanned for at the end, and to those `cargo xtask test` scans the
    /// suite's output for when it runs the suite. Decoys carry no marker that scan could find them
    /// by: they must look real.
    fn keep(&mut self, value: String) {
        assert!(!value.contains('\n'), "one value at a time, not a file's content");
        assert!(value.len() >= SLICE, "a value shorter than {SLICE} characters cannot be told from chance");
        if let Some(path) = std::env::var_os(LEAK_VALUES_VAR) {
            let mut values = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap_or_else(|error| panic!("{LEAK_VALUES_VAR}={}: {error}", Path::new(&path).display()));
            // One write per line: lines appended by tests running in parallel never interleave.
            values.write_all(format!("{value}\n").as_bytes()).unwrap();
        }
        self.planted.push(value);
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

    /// Waits for a daemon the test killed, checks that it never panicked and that no planted
    /// value appears in its log, recording, task registry or audit log, and returns HOME and the
    /// state directory for a restart.
    pub fn abandon(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        self.process.reap();
        assert_no_panic(&self.log.lock().unwrap());
        // Tasks are saved by a thread of the daemon's: a kill can come before the first is written.
        self.assert_no_leak(Vec::new(), false);
        let Self { home, state, .. } = self;
        (home, state)
    }

    /// Stops the daemon with SIGTERM, checks it exited cleanly without a panic, and checks that no
    /// planted value appears in its log, its findings, its recording, its task registry or its
    /// audit log. Returns HOME and the state directory for a restart.
    pub async fn stop(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        let findings = serde_json::to_string(&self.findings().await).unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.child.id() as i32, libc::SIGTERM) };
        let status = self.process.reap();
        assert_no_panic(&self.log.lock().unwrap());
        // A clean stop saves the tasks and waits for the file to be written. Scanned first: the
        // messages below print the log.
        self.assert_no_leak(vec![("findings".to_owned(), findings)], status.code() == Some(0));
        assert_eq!(status.code(), Some(0), "daemon exit; log:\n{}", self.log_text());
        assert!(!self.raw_log().contains('\x1b'), "colour codes in a log written to a file");
        let Self { home, state, .. } = self;
        (home, state)
    }

    /// Fails the test if a planted value appears, in any form `leaks_in` knows, in `outputs`, the
    /// log, or the daemon's files. The recording and the audit log are created before the
    /// daemon says its sensors are attached, so a missing one is a failure; the task registry is
    /// written when a task starts or ends and at a clean stop, and is required if `registry` is.
    fn assert_no_leak(&self, mut outputs: Vec<(String, String)>, registry: bool) {
        outputs.push(("log".to_owned(), self.raw_log()));
        let mut files = vec![("recording", self.record.clone(), true)];
        files.push(("task registry", self.state.path().join("tasks.json"), registry));
        if let Some(AuditConfig { path, max_bytes: _, max_files }) = &self.audit {
            files.push(("audit log", path.clone(), true));
            for index in 1..*max_files {
                let mut rotated = path.clone().into_os_string();
                rotated.push(format!(".{index}"));
                files.push(("rotated audit log", rotated.into(), false));
            }
        }
        for (name, path, required) in files {
            match std::fs::read(&path) {
                Ok(bytes) => outputs.push((format!("{name} {}", path.display()), String::from_utf8_lossy(&bytes).into())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(error) => panic!("the daemon's {name} {}: {error}", path.display()),
            }
        }
        for (name, text) in &outputs {
            for value in &self.planted {
                if let Some(form) = leaks_in(text, value) {
                    panic!("a planted secret value appears in the daemon's {name} ({form})");
                }
            }
        }
    }
}

/// The value of the first series in `metrics` (the text format) starting with `series`; fails
/// when there is none, naming the series of its metric, or every metric if it has none.
pub fn series_value(metrics: &str, series: &str) -> u64 {
    // `name{labels} value`; labels may hold spaces, the value does not.
    let samples = metrics.lines().filter(|line| !line.is_empty() && !line.starts_with('#'));
    let Some(sample) = samples.clone().find(|line| line.starts_with(series)) else {
        let metric = |series: &str| series.split('{').next().unwrap_or_default().to_owned();
        let names: Vec<_> = samples.filter_map(|line| Some(line.rsplit_once(' ')?.0)).collect();
        let mut listed: Vec<_> =
            names.iter().filter(|name| metric(name) == metric(series)).map(|&name| name.to_owned()).collect();
        if listed.is_empty() {
            listed = names.iter().map(|name| metric(name)).collect();
            listed.dedup();
        }
        panic!("no series {series:?} in /metrics; there are:\n{}", listed.join("\n"));
    };
    let value = sample.rsplit_once(' ').map_or("", |(_, value)| value);
    value.parse().unwrap_or_else(|_| panic!("{sample:?}: the value is not a whole number"))
}

/// Fails the test if the log shows a panic. Rust's default panic hook prints `thread '…' (…)
/// panicked at …` on the daemon's stderr for every panic, also those in tokio tasks (API
/// connections, exporters), which tokio catches and the daemon would otherwise outlive.
fn assert_no_panic(log: &[String]) {
    if let Some(line) = panic_line(log) {
        // Only this line: the panic's message, on the next, could quote anything.
        panic!("the daemon panicked: {line}");
    }
}

pub fn panic_line(log: &[String]) -> Option<&str> {
    log.iter().map(String::as_str).find(|line| line.contains(" panicked at "))
}

/// Which form of `value` appears in `text`, named without the value: plain, base64 (standard or
/// URL-safe alphabet, padded or not, at any byte offset), hex (either case), URL-encoded, or any
/// 12-character slice of it.
pub fn leaks_in(text: &str, value: &str) -> Option<&'static str> {
    assert!(value.len() >= SLICE, "a value shorter than {SLICE} characters cannot be told from chance");
    if text.contains(value) {
        return Some("plain");
    }
    let bytes = value.as_bytes();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let url = |lowercase: bool| -> String {
        bytes
            .iter()
            .map(|&byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(byte).to_string(),
                _ if lowercase => format!("%{byte:02x}"),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    };
    let encoded = base64_cores(&STANDARD_NO_PAD, bytes)
        .map(|core| ("base64", core))
        .into_iter()
        .chain(base64_cores(&URL_SAFE_NO_PAD, bytes).map(|core| ("URL-safe base64", core)))
        .chain([("hex", hex.to_uppercase()), ("hex", hex)])
        .chain([("URL-encoded", url(false)), ("URL-encoded", url(true))]);
    for (form, needle) in encoded {
        if text.contains(&needle) {
            return Some(form);
        }
    }
    let chars: Vec<char> = value.chars().collect();
    chars
        .windows(SLICE)
        .any(|slice| text.contains(&slice.iter().collect::<String>()))
        .then_some("a 12-character slice")
}

/// The base64 characters that encode `value` alone, wherever it starts in the encoded data: with
/// 0, 1 or 2 bytes before it (each of 3 bytes is 4 characters). A character holds 6 bits, so
/// those shared with the bytes around the value, and padding, are left out.
fn base64_cores(engine: &GeneralPurpose, value: &[u8]) -> [String; 3] {
    [0, 1, 2].map(|offset| {
        let mut data = vec![0; offset];
        data.extend_from_slice(value);
        let encoded = engine.encode(&data);
        encoded[(8 * offset).div_ceil(6)..8 * (offset + value.len()) / 6].to_owned()
    })
}

/// Task `holder`'s root: `sleep` with a token in its `GITHUB_TOKEN`, registered with that
/// variable, and seen by the daemon. Killed when dropped, whether the test passed or failed: a
/// holder left behind would keep the test runner's output open.
pub struct EnvHolder {
    pub pid: u32,
    holding: Option<std::thread::JoinHandle<(std::process::ExitStatus, String)>>,
}

impl EnvHolder {
    pub async fn start(daemon: &RunningDaemon, token: &str) -> Self {
        let holder = super::Gated::spawn("exec sleep 600", daemon.home.path(), &[("GITHUB_TOKEN", token)]);
        let pid = holder.pid;
        let mut request = monitor::daemon::control::TaskRequest::new("holder", pid);
        request.env = vec!["GITHUB_TOKEN".to_owned()];
        daemon.client.start_task(&request).await.unwrap();
        let holding = Some(std::thread::spawn(move || holder.release()));
        super::wait_for_comm(pid, "sleep");
        daemon.settle().await;
        Self { pid, holding }
    }
}

impl Drop for EnvHolder {
    fn drop(&mut self) {
        // SAFETY: signalling the test's own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        if let Some(holding) = self.holding.take() {
            let _ = holding.join();
        }
    }
}
