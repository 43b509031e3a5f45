//! Killing a process, or every process of a task, decided in userspace.
//!
//! A process is signalled through a pidfd opened after checking its start time, so a reused pid
//! is never hit; a kernel verdict is written too, so that a process which escapes the signal
//! (it raced with the check, or forked) dies at its next syscall anyway.

use std::{io, os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd}, path::Path};

use serde::Serialize;

use crate::{event::ExecId, procfs, sensors::maps::KernelMaps};

/// What a kill achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillOutcome {
    /// SIGKILL was delivered through a pidfd.
    Signalled,
    /// The process had already exited (or its pid now belongs to another process).
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("cannot signal pid {pid}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the kernel verdict for pid {pid}")]
    Verdict {
        pid: u32,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot write {path}")]
    CgroupKill {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Kills `process` if it is still the process that `ExecId` names.
pub fn kill_process(process: ExecId, maps: &mut KernelMaps) -> Result<KillOutcome, KillError> {
    let ExecId { tgid, start_time: _ } = process;
    let Some(pidfd) = open_pidfd(tgid)? else {
        return Ok(KillOutcome::Gone);
    };
    // The pidfd pins the process: if it is still the one named now, the signal reaches it.
    if !procfs::is_alive(process) {
        return Ok(KillOutcome::Gone);
    }
    // A full verdict map (counted, and a monitor_blind finding) must not spare the process.
    let verdict = maps.add_verdict(tgid);
    let outcome = signal(&pidfd, tgid)?;
    if let Err(error) = verdict {
        tracing::warn!(pid = tgid, %error, "signalled, but the kernel verdict could not be written");
    }
    Ok(outcome)
}

/// What a task kill achieved: every member is tried, whatever happens to the others.
#[derive(Debug, Default)]
pub struct TaskKill {
    /// Processes that SIGKILL was delivered to.
    pub signalled: usize,
    /// What went wrong, per member (and for the cgroup).
    pub failures: Vec<KillError>,
}

/// Kills every process of kernel task handle `task`, and the task's cgroup when it has one.
pub fn kill_task(task: u32, cgroup: Option<&Path>, maps: &mut KernelMaps) -> TaskKill {
    let mut outcome = TaskKill::default();
    if let Some(cgroup) = cgroup {
        let path = cgroup.join("cgroup.kill");
        if let Err(source) = std::fs::write(&path, "1") {
            outcome.failures.push(KillError::CgroupKill { path: path.display().to_string(), source });
        }
    }
    for tgid in maps.members_of(task) {
        if let Err(source) = maps.add_verdict(tgid) {
            outcome.failures.push(KillError::Verdict { pid: tgid, source });
        }
        // Membership in the kernel map is exact (removed at exit), so no start time check.
        match open_pidfd(tgid).and_then(|pidfd| pidfd.map(|pidfd| signal(&pidfd, tgid)).transpose()) {
            Ok(Some(KillOutcome::Signalled)) => outcome.signalled += 1,
            Ok(Some(KillOutcome::Gone) | None) => {}
            Err(error) => outcome.failures.push(error),
        }
    }
    outcome
}

fn open_pidfd(pid: u32) -> Result<Option<OwnedFd>, KillError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(KillError::Signal { pid, source: error }),
        };
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

fn signal(pidfd: &OwnedFd, pid: u32) -> Result<KillOutcome, KillError> {
    // SAFETY: pidfd_send_signal on an fd we own, with no siginfo.
    let result = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<()>(), 0)
    };
    if result == 0 {
        return Ok(KillOutcome::Signalled);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ESRCH) => Ok(KillOutcome::Gone),
        _ => Err(KillError::Signal { pid, source: error }),
    }
}
