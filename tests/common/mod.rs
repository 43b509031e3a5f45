//! Helpers shared by the integration tests.
#![expect(dead_code, reason = "each test binary uses a different subset of these helpers")]

pub mod daemon;
pub mod shared_read;
pub mod upstream;

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

/// How long a test waits for a condition before it gives up: a wait ends as soon as its condition
/// holds, so this only bounds a failure. Ten times longer in the test VM, whose CPU is emulated
/// and, on a loaded host, slower still (loading the security hooks alone can take seconds there).
pub fn patience(seconds: u64) -> std::time::Duration {
    let factor = if std::env::var_os("CREDWATCH_VM").is_some() { 10 } else { 1 };
    std::time::Duration::from_secs(seconds * factor)
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

/// A shell held at a gate: it runs `script` once released, so that a test can register it
/// (as a task root, a kernel task member, ...) before it does anything.
pub struct Gated {
    /// Taken by `release`; a gated shell dropped unreleased is killed.
    child: Option<std::process::Child>,
    pub pid: u32,
}

impl Drop for Gated {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Gated {
    pub fn spawn(script: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_after("", script, dir, env)
    }

    /// Like `spawn`, running `prelude` (e.g. redirections) before the gate.
    pub fn spawn_after(prelude: &str, script: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{prelude} read _; {script}"))
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        Self { child: Some(child), pid }
    }

    /// Its identity, read from /proc while it waits.
    pub fn exec_id(&self) -> monitor::event::ExecId {
        monitor::procfs::exec_id(self.pid).expect("the gated shell is alive")
    }

    /// Waits (up to 10 s) until it has descriptor `fd` open, i.e. it got past the redirections
    /// that come before the gate.
    pub fn wait_for_fd(&self, fd: u32) {
        let path = format!("/proc/{}/fd/{fd}", self.pid);
        let deadline = std::time::Instant::now() + patience(10);
        while std::fs::symlink_metadata(&path).is_err() {
            assert!(std::time::Instant::now() < deadline, "{path} never appeared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Opens the gate, then waits for the end: exit status and everything it printed.
    pub fn release(mut self) -> (std::process::ExitStatus, String) {
        use std::io::{Read as _, Write as _};
        let mut child = self.child.take().expect("released once");
        // A process killed before reading the gate line makes this write fail: that is fine.
        let _ = child.stdin.take().unwrap().write_all(b"go\n");
        let mut output = String::new();
        child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
        (child.wait().unwrap(), output)
    }
}

/// Waits (20 s at most) until process `pid` runs `comm`: it got past what came before an exec.
pub fn wait_for_comm(pid: u32, comm: &str) {
    let deadline = std::time::Instant::now() + patience(20);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |now| now.trim() != comm) {
        assert!(std::time::Instant::now() < deadline, "process {pid} never ran {comm}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether process `pid` is still there (not a zombie: /proc/PID/stat state is not Z).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// Makes a FIFO `name` in `dir`, for a gated script to wait at (`read _ < name`).
pub fn fifo(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    path
}

/// Opens FIFO `path` for writing once a reader has it open (10 s at most): a reader that died
/// first fails the test instead of hanging it.
pub fn open_fifo_for_writing(path: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt as _;
    let deadline = std::time::Instant::now() + patience(10);
    loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(file) => return file,
            // No reader yet.
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => {
                assert!(std::time::Instant::now() < deadline, "nobody opened {} to read", path.display());
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("{}: {error}", path.display()),
        }
    }
}
