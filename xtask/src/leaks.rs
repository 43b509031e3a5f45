//! Runs the test suite while scanning everything it prints for planted secret values.
//!
//! Every value the tests plant starts with a marker (`cwtest_` from the test harness, `ghp_demo`
//! from `credwatch demo`), so a marker in the output means a value leaked into a log, a finding,
//! an error or a test's own output. Such a line is not echoed: it is replaced by a notice, so the
//! check itself never copies the value into the CI log.
//!
//! Decoys carry no marker: they must look real (`AKIA…`, `ghp_…`) to be worth stealing, and the
//! daemon makes them up. So the harness also appends every value it plants or is told of to the
//! file named by `CREDWATCH_LEAK_VALUES`, one per line, and the scan looks for those too, re-reading
//! the file as it grows. A value registered only after a line showing it went by is caught by a
//! last pass over the whole output: too late to withhold the line, not too late to fail the run.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead as _, BufReader, Read, Seek as _, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
};

use crate::{cmd, error::Error};

/// Prefixes of every value the suite plants.
pub const MARKERS: [&str; 2] = ["cwtest_", "ghp_demo"];

/// The variable that tells the test harness where to register its values.
const VALUES_VAR: &str = "CREDWATCH_LEAK_VALUES";

const WITHHELD: &str = "[xtask: a planted secret value appeared on this line; the line is withheld]";

/// Whether `line` holds a planted value.
pub fn leaks(line: &str) -> bool {
    MARKERS.iter().any(|marker| line.contains(marker))
}

/// The file the harness registers values in: created empty (mode 0600, never over an existing
/// file), removed when the run ends, however it ends.
struct ValuesFile {
    path: PathBuf,
}

impl ValuesFile {
    fn create() -> Result<Self, Error> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = std::env::temp_dir().join(format!("credwatch-leak-values-{}-{nanos}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::File { path: path.clone(), source })?;
        Ok(Self { path })
    }
}

impl Drop for ValuesFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What the relays of stdout and stderr share.
struct Scan<'a> {
    values_file: &'a Path,
    values: Mutex<Registered>,
    /// The lines echoed, for the last pass.
    echoed: Mutex<Vec<String>>,
    leaked: AtomicUsize,
    /// The first failure to read the values file: the relays go on (a relay that stopped reading
    /// would block the suite on a full pipe), and the run fails at the end.
    unreadable: Mutex<Option<io::Error>>,
}

/// The values registered so far, and how much of the file they came from.
#[derive(Default)]
struct Registered {
    values: Vec<String>,
    /// Bytes read, whole lines only: a line being appended is read once it is complete.
    read: u64,
}

impl<'a> Scan<'a> {
    fn new(values_file: &'a Path) -> Self {
        Self {
            values_file,
            values: Mutex::default(),
            echoed: Mutex::default(),
            leaked: AtomicUsize::new(0),
            unreadable: Mutex::default(),
        }
    }

    /// Reads the values registered since the last call.
    fn refresh(&self) {
        if let Err(error) = self.read_values() {
            self.unreadable.lock().expect("no relay panics holding it").get_or_insert(error);
        }
    }

    fn read_values(&self) -> io::Result<()> {
        let mut registered = self.values.lock().expect("no relay panics holding it");
        if fs::metadata(self.values_file)?.len() == registered.read {
            return Ok(());
        }
        let mut file = File::open(self.values_file)?;
        file.seek(SeekFrom::Start(registered.read))?;
        let mut added = Vec::new();
        file.read_to_end(&mut added)?;
        let complete = added.iter().rposition(|&byte| byte == b'\n').map_or(0, |last| last + 1);
        for value in added[..complete].split(|&byte| byte == b'\n').filter(|value| !value.is_empty()) {
            registered.values.push(String::from_utf8_lossy(value).into_owned());
        }
        registered.read += complete as u64;
        Ok(())
    }

    /// Whether `line` holds a marker or a value registered so far.
    fn leaks(&self, line: &str) -> bool {
        self.refresh();
        let registered = self.values.lock().expect("no relay panics holding it");
        leaks(line) || registered.values.iter().any(|value| line.contains(value.as_str()))
    }

    /// Copies `from` to `to` line by line, counting and withholding leaking lines.
    fn relay(&self, from: impl Read, mut to: impl Write) {
        for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            if self.leaks(&text) {
                self.leaked.fetch_add(1, Ordering::Relaxed);
                let _ = writeln!(to, "{WITHHELD}");
            } else {
                let _ = to.write_all(&line).and_then(|()| to.write_all(b"\n"));
                self.echoed.lock().expect("no relay panics holding it").push(text.into_owned());
            }
        }
    }

    /// Echoed lines that hold a value registered after they were relayed; fails if the values
    /// could not all be read.
    fn last_pass(&self) -> io::Result<usize> {
        self.refresh();
        if let Some(error) = self.unreadable.lock().expect("no relay panics holding it").take() {
            return Err(error);
        }
        let registered = self.values.lock().expect("no relay panics holding it");
        let echoed = self.echoed.lock().expect("no relay panics holding it");
        Ok(echoed
            .iter()
            .filter(|line| registered.values.iter().any(|value| line.contains(value.as_str())))
            .count())
    }
}

/// Runs `command`, relaying its stdout and stderr; returns its status and the leaking lines.
pub fn run_scanning(command: &mut Command) -> Result<(ExitStatus, usize), Error> {
    let values_file = ValuesFile::create()?;
    command.env(VALUES_VAR, &values_file.path);
    let cmdline = cmd::cmdline(command);
    eprintln!("+ {cmdline}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io { cmdline: cmdline.clone(), source })?;
    let scan = Scan::new(&values_file.path);
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let status = thread::scope(|scope| {
        scope.spawn(|| scan.relay(stdout, std::io::stdout()));
        scope.spawn(|| scan.relay(stderr, std::io::stderr()));
        child.wait()
    })
    .map_err(|source| Error::Io { cmdline, source })?;
    let late = scan.last_pass().map_err(|source| Error::File { path: values_file.path.clone(), source })?;
    if late > 0 {
        eprintln!("[xtask: {late} lines above held a value registered after they were shown]");
    }
    Ok((status, scan.leaked.load(Ordering::Relaxed) + late))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaking_lines_are_counted_and_withheld() {
        let values = ValuesFile::create().unwrap();
        let scan = Scan::new(&values.path);
        let mut out = Vec::new();
        scan.relay("ok line\nvalue=cwtest_0123\nfine\n".as_bytes(), &mut out);
        assert_eq!(scan.leaked.load(Ordering::Relaxed), 1);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("ok line\n[xtask: a planted secret value"), "{out}");
        assert!(!out.contains("cwtest_0123"));
        assert!(out.ends_with("fine\n"));
    }

    #[test]
    fn a_registered_value_is_withheld_and_one_registered_late_is_counted() {
        let values = ValuesFile::create().unwrap();
        let register = |value: &str| {
            let mut file = OpenOptions::new().append(true).open(&values.path).unwrap();
            file.write_all(format!("{value}\n").as_bytes()).unwrap();
        };
        let scan = Scan::new(&values.path);
        let mut out = Vec::new();
        register("AKIAQWERTYUIOPASDFGH");
        scan.relay("aws_access_key_id = AKIAQWERTYUIOPASDFGH\nfine\n".as_bytes(), &mut out);
        // Registered while the run goes on: the file grew.
        register("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789");
        scan.relay("GH_TOKEN=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n".as_bytes(), &mut out);
        assert_eq!(scan.leaked.load(Ordering::Relaxed), 2);
        // Shown before it was registered; a line being written is not read yet.
        scan.relay("token: 0d2kWq8vLx7RmT4yZp1N\n".as_bytes(), &mut out);
        register("0d2kWq8vLx7RmT4yZp1N");
        OpenOptions::new().append(true).open(&values.path).unwrap().write_all(b"fine").unwrap();
        assert_eq!(scan.last_pass().unwrap(), 1);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, format!("{WITHHELD}\nfine\n{WITHHELD}\ntoken: 0d2kWq8vLx7RmT4yZp1N\n"));
        let path = values.path.clone();
        drop(values);
        assert!(!path.exists(), "removed at the end of the run");
    }
}
