//! The benchmark's side of a `bench-load` process: start it, let it go, read its result.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use super::error::BenchError;

pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl Worker {
    /// Starts `xtask bench-load ARGS…` and waits for its `ready`.
    pub fn spawn(args: &[OsString]) -> Result<Self, BenchError> {
        let what = format!(
            "bench-load {}",
            args.first()
                .map(|kind| kind.to_string_lossy())
                .unwrap_or_default()
        );
        let exe = std::env::current_exe().map_err(BenchError::io("finding the xtask binary"))?;
        let mut args = args.to_vec();
        args.insert(0, "bench-load".into());
        Self::spawn_program(&exe, &args, what)
    }

    /// Starts `program ARGS…`, which speaks the `bench-load` protocol, and waits for its `ready`.
    pub fn spawn_program(program: &std::path::Path, args: &[OsString], what: String) -> Result<Self, BenchError> {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn_command(command, what)
    }

    /// Starts `command` (its environment and CPUs as set), which speaks the `bench-load`
    /// protocol, and waits for its `ready`.
    pub fn spawn_command(mut command: Command, what: String) -> Result<Self, BenchError> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(BenchError::io(format!("starting {what}")))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout was piped"));
        let mut worker = Self {
            child,
            stdin,
            stdout,
            what,
        };
        worker.expect_line("ready")?;
        Ok(worker)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it start working.
    pub fn go(&mut self) -> Result<(), BenchError> {
        let stdin = self.stdin.as_mut().expect("stdin is open until `finish`");
        writeln!(stdin, "go").map_err(BenchError::io(format!(
            "starting the work of {}",
            self.what
        )))
    }

    /// Reads its result line, `name v1 [k2 v2 …]`, and returns the numbers in order; the line
    /// must start with `name`.
    pub fn result(&mut self, name: &str) -> Result<Vec<f64>, BenchError> {
        let line = self.read_line()?;
        let mut words = line.split_whitespace();
        let numbers = (words.next() == Some(name))
            .then(|| {
                words
                    .enumerate()
                    .filter(|(index, _)| index % 2 == 0)
                    .map(|(_, word)| word.parse().ok())
                    .collect()
            })
            .flatten()
            .filter(|numbers: &Vec<f64>| !numbers.is_empty());
        numbers.ok_or_else(|| self.failure(&format!("said {line:?} where `{name} …` was expected")))
    }

    /// Closes its stdin (which ends `open … 0` and `spawn`) and waits for a clean exit.
    pub fn finish(mut self) -> Result<(), BenchError> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(BenchError::io(format!("waiting for {}", self.what)))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(&format!("ended with {status}")))
        }
    }

    fn expect_line(&mut self, expected: &str) -> Result<(), BenchError> {
        let line = self.read_line()?;
        if line == expected {
            Ok(())
        } else {
            Err(self.failure(&format!("said {line:?} where {expected:?} was expected")))
        }
    }

    fn read_line(&mut self) -> Result<String, BenchError> {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .map_err(BenchError::io(format!("reading from {}", self.what)))?;
        if read == 0 {
            return Err(self.failure("ended without a result"));
        }
        Ok(line.trim_end().to_owned())
    }

    /// An error with what the process wrote on stderr; kills it if it is still running.
    pub fn failure(&mut self, what: &str) -> BenchError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
        }
        BenchError::Helper {
            what: format!("{} {what}", self.what),
            log,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Only reached with the child still running when an error cut a run short.
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
