//! What runs beside a workload in the syscall overhead measurement, compared with nothing at
//! all (the baseline): credwatch, the floor (empty programs on credwatch's hooks), an empty
//! per-syscall tracepoint, or the bpftrace peer.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use super::{bpftrace, daemon::Daemon, error::BenchError, scratch::log_tail, Bench};

/// bpftrace compiles its script with LLVM first: seconds on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    Credwatch,
    Floor,
    OpenatTracepoint,
    Bpftrace,
}

impl Monitor {
    /// Everything compared with the baseline, in the order of the first round.
    pub const COMPARED: [Self; 4] = [
        Self::Credwatch,
        Self::Floor,
        Self::OpenatTracepoint,
        Self::Bpftrace,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Credwatch => "credwatch",
            Self::Floor => "floor",
            Self::OpenatTracepoint => "empty sys_exit_openat",
            Self::Bpftrace => "bpftrace peer",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Self::Credwatch => "`credwatch run`, built-in catalogue, HOME holding the secret",
            Self::Floor => "empty raw tracepoints on `sys_enter` and `sys_exit` (credwatch's syscall hooks)",
            Self::OpenatTracepoint => "an empty program on the per-syscall tracepoint `syscalls/sys_exit_openat`",
            Self::Bpftrace => {
                "bpftrace: per-syscall tracepoints on every open variant (fd → inode, map of watched inodes), holders' \
                 connects, exec/fork/exit"
            }
        }
    }

    pub fn start(self, bench: &Bench) -> Result<Running, BenchError> {
        Ok(match self {
            Self::Credwatch => Running::Daemon(Daemon::start(&bench.binary, &bench.scratch)?),
            Self::Floor | Self::OpenatTracepoint => {
                let hooks = if self == Self::Floor {
                    "raw-syscalls"
                } else {
                    "openat-tracepoint"
                };
                let mut floor = Command::new(&bench.binary);
                floor.args(["bench-floor", "--hooks", hooks]);
                Running::Held(Held::start(floor, self.label(), "attached", bench)?)
            }
            Self::Bpftrace => {
                let dir = bench.scratch.run_dir("bpftrace")?;
                let script = dir.join("peer.bt");
                std::fs::write(&script, bpftrace::script(&bench.scratch.secret())?)
                    .map_err(BenchError::io(format!("writing {}", script.display())))?;
                let mut peer = Command::new("bpftrace");
                peer.arg(&script);
                Running::Held(Held::start(peer, self.label(), "Attaching", bench)?)
            }
        })
    }
}

pub enum Running {
    Nothing,
    Daemon(Daemon),
    Held(Held),
}

impl Running {
    /// The daemon, when credwatch is the one running: tracked runs register their task with it.
    pub fn daemon(&self) -> Option<&Daemon> {
        match self {
            Self::Daemon(daemon) => Some(daemon),
            Self::Nothing | Self::Held(_) => None,
        }
    }

    /// The process that holds the programs attached.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Nothing => None,
            Self::Daemon(daemon) => Some(daemon.pid()),
            Self::Held(held) => Some(held.child.id()),
        }
    }

    pub fn stop(self) -> Result<(), BenchError> {
        match self {
            Self::Nothing => Ok(()),
            Self::Daemon(daemon) => daemon.stop(),
            Self::Held(held) => held.stop(),
        }
    }
}

/// A helper that holds programs attached from the line starting with its ready marker until it
/// is stopped. Its stdout is drained on a thread (bpftrace prints every event), its stderr goes
/// to a log file.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    what: &'static str,
    log: PathBuf,
}

impl Held {
    fn start(
        mut command: Command,
        what: &'static str,
        ready: &'static str,
        bench: &Bench,
    ) -> Result<Self, BenchError> {
        let log = bench.scratch.run_dir("helper")?.join("stderr.log");
        let log_file =
            File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(BenchError::io(format!("starting {what}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout was piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(ready) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let held = Self {
            child,
            stdin,
            what,
            log,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(held),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(BenchError::Helper {
                what: format!("{what} ended before attaching"),
                log: log_tail(&held.log),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(BenchError::NotReady {
                what: what.to_owned(),
                waited: READY_TIMEOUT,
                log: log_tail(&held.log),
            }),
        }
    }

    /// Closes its stdin (the floor's signal to detach) and sends SIGINT (bpftrace's); either
    /// way of ending is clean.
    fn stop(mut self) -> Result<(), BenchError> {
        drop(self.stdin.take());
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = self
            .child
            .wait()
            .map_err(BenchError::io(format!("waiting for {}", self.what)))?;
        let interrupted =
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
        if status.success() || interrupted {
            Ok(())
        } else {
            Err(BenchError::Helper {
                what: format!("{} ended with {status}", self.what),
                log: log_tail(&self.log),
            })
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
