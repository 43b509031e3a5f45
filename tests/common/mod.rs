//! Helpers shared by the integration tests.
#![expect(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::time::Duration;

use monitor::{event::Event, sensors::Sensors};

/// Reads events until `done` matches one (included) or `timeout` passes (panics with what came).
pub async fn collect_until(
    sensors: &mut Sensors,
    timeout: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut batch = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, sensors.next_batch(&mut batch)).await {
            Ok(result) => result.expect("reading the ring buffer"),
            Err(_) => panic!("timed out after {timeout:?}; {} events seen: {events:#?}", events.len()),
        }
        for event in batch.drain(..) {
            let finished = done(&event);
            events.push(event);
            if finished {
                return events;
            }
        }
    }
}

/// A secret file with a random value in a fresh directory. The value is never printed.
pub struct Planted {
    pub dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
    pub value: String,
}

impl Planted {
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("credwatch-{label}-")).tempdir().unwrap();
        let path = dir.path().join("secret");
        let value = planted_value();
        std::fs::write(&path, &value).unwrap();
        Self { dir, path, value }
    }
}

/// A random token-looking value for planting; unique per call.
pub fn planted_value() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes))
        .unwrap();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("cwtest_{hex}")
}

/// Runs `script` with `sh -c` in `dir`, waits for it to succeed, and returns its pid.
pub fn sh(script: &str, dir: &std::path::Path) -> u32 {
    let mut child = std::process::Command::new("/bin/sh").arg("-c").arg(script).current_dir(dir).spawn().unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "`{script}` failed: {status}");
    pid
}

/// A shell that runs until its first `read` gets a line.
pub struct Waiting(std::process::Child);

pub fn sh_waiting(script: &str, dir: &std::path::Path) -> Waiting {
    Waiting(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

impl Waiting {
    /// Waits (up to 10 s) until the shell has descriptor `fd` open, i.e. it got past the
    /// redirections that come before its `read`.
    pub fn wait_for_fd(&self, fd: u32) {
        let path = format!("/proc/{}/fd/{fd}", self.0.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::symlink_metadata(&path).is_err() {
            assert!(std::time::Instant::now() < deadline, "{path} never appeared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Lets it go on, waits for it to succeed, and returns its pid.
    pub fn release(&mut self) -> u32 {
        use std::io::Write as _;
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
        self.0.id()
    }
}
