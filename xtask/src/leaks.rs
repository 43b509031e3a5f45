//! Runs the test suite while scanning everything it prints for planted secret values.
//!
//! Every value the tests plant starts with a marker (`cwtest_` from the test harness, `ghp_demo`
//! from `credwatch demo`), so a marker in the output means a value leaked into a log, a finding,
//! an error or a test's own output. Such a line is not echoed: it is replaced by a notice, so the
//! check itself never copies the value into the CI log.

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use crate::{cmd, error::Error};

/// Prefixes of every value the suite plants.
pub const MARKERS: [&str; 2] = ["cwtest_", "ghp_demo"];

/// Whether `line` holds a planted value.
pub fn leaks(line: &str) -> bool {
    MARKERS.iter().any(|marker| line.contains(marker))
}

/// Copies `from` to `to` line by line, redacting leaking lines; returns how many leaked.
fn relay(from: impl Read, mut to: impl Write, leaked: &AtomicUsize) {
    for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
        let text = String::from_utf8_lossy(&line);
        if leaks(&text) {
            leaked.fetch_add(1, Ordering::Relaxed);
            let _ = writeln!(to, "[xtask: a planted secret value appeared on this line; the line is withheld]");
        } else {
            let _ = to.write_all(&line).and_then(|()| to.write_all(b"\n"));
        }
    }
}

/// Runs `command`, relaying its stdout and stderr; returns its status and the leaking lines.
pub fn run_scanning(command: &mut Command) -> Result<(ExitStatus, usize), Error> {
    let cmdline = cmd::cmdline(command);
    eprintln!("+ {cmdline}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io { cmdline: cmdline.clone(), source })?;
    let leaked = AtomicUsize::new(0);
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let status = thread::scope(|scope| {
        scope.spawn(|| relay(stdout, std::io::stdout(), &leaked));
        scope.spawn(|| relay(stderr, std::io::stderr(), &leaked));
        child.wait()
    })
    .map_err(|source| Error::Io { cmdline, source })?;
    Ok((status, leaked.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaking_lines_are_counted_and_withheld() {
        let leaked = AtomicUsize::new(0);
        let mut out = Vec::new();
        relay("ok line\nvalue=cwtest_0123\nfine\n".as_bytes(), &mut out, &leaked);
        assert_eq!(leaked.load(Ordering::Relaxed), 1);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("ok line\n[xtask: a planted secret value"), "{out}");
        assert!(!out.contains("cwtest_0123"));
        assert!(out.ends_with("fine\n"));
    }
}
