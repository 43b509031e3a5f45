//! The in-kernel kill switch, tried for real: a raw tracepoint calls `bpf_send_signal(SIGKILL)`
//! in a child process, and doctor checks the child died of it.

use std::{
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::ExitStatusExt as _,
    },
    process::ExitStatus,
    thread,
    time::{Duration, Instant},
};

use aya::{programs::RawTracePoint, Btf};

use super::hooks::{self, HookKind, ProbeError};

/// Names the victim in errors: a child of doctor that blocks reading a pipe, then makes a syscall
/// when it gets a byte.
const VICTIM: &str = "doctor's forked child";
const DEADLINE: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Returns how many times the program ran, once the child died of its SIGKILL; `Ok(0)` when the
/// program never ran.
pub fn probe(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::SendSignal;
    let mut victim = Victim::spawn()?;
    let (exited, hits) = {
        let mut ebpf = hooks::load_object(btf, victim.pid())?;
        let program: &mut RawTracePoint = hooks::program(&mut ebpf, hook)?;
        program.load().map_err(hooks::load_error(hook))?;
        program
            .attach(&hook.target())
            .map_err(hooks::attach_error(hook))?;
        victim.poke()?;
        let exited = victim.wait_for_exit(DEADLINE)?;
        (exited, hooks::read_hits(&ebpf)?)
        // `ebpf` is dropped here, detaching the program before the child is reaped: once reaped,
        // its pid may be reused by a process the program would kill.
    };
    let status = victim.reap()?;
    match (exited, hits) {
        (true, 1..) if status.signal() == Some(libc::SIGKILL) => Ok(hits),
        (false, 0) => Ok(0),
        (false, _) => Err(ProbeError::Survived {
            victim: VICTIM,
            hits,
            waited: DEADLINE,
        }),
        (true, _) => Err(ProbeError::UnexpectedExit {
            victim: VICTIM,
            status,
            hits,
        }),
    }
}

/// The child the probe kills, forked from doctor itself (an image with no other program has it
/// too); killed and reaped on drop whatever happened.
struct Victim {
    pid: libc::pid_t,
    /// Its wake-up pipe: a byte makes it return from `read` and call `getppid`.
    poke: Option<OwnedFd>,
    reaped: bool,
}

impl Victim {
    fn spawn() -> Result<Self, ProbeError> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(ProbeError::Spawn(VICTIM, io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only makes async-signal-safe calls (read, getppid, _exit), so forking
        // a process that may have other threads (the daemon) is sound.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut byte = 0u8;
            // SAFETY: plain syscalls on a descriptor and a byte the child owns.
            unsafe {
                libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::getppid();
                libc::_exit(0);
            }
        }
        if pid < 0 {
            return Err(ProbeError::Spawn(VICTIM, io::Error::last_os_error()));
        }
        Ok(Self { pid, poke: Some(write_end), reaped: false })
    }

    fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Wakes the child so that it makes a syscall.
    fn poke(&mut self) -> Result<(), ProbeError> {
        let pipe = self.poke.take().ok_or_else(|| ProbeError::Trigger(io::Error::other("the child was poked already")))?;
        // SAFETY: writing one byte from a local to a descriptor owned here.
        if unsafe { libc::write(pipe.as_raw_fd(), b"x".as_ptr().cast(), 1) } == 1 {
            return Ok(());
        }
        match io::Error::last_os_error() {
            // The child may already be dead: any syscall it made after the attach killed it.
            error if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            error => Err(ProbeError::Trigger(error)),
        }
    }

    /// Waits until the child exits or `deadline` passes, without reaping it.
    fn wait_for_exit(&self, deadline: Duration) -> Result<bool, ProbeError> {
        let start = Instant::now();
        loop {
            if self.has_exited().map_err(|error| ProbeError::Wait(VICTIM, error))? {
                return Ok(true);
            }
            if start.elapsed() >= deadline {
                return Ok(false);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn has_exited(&self) -> io::Result<bool> {
        // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let options = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid siginfo_t for the kernel to fill.
        if unsafe { libc::waitid(libc::P_PID, self.pid(), &mut info, options) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // With WNOHANG, si_pid stays 0 while the child runs.
        // SAFETY: waitid succeeded, so `info` holds a SIGCHLD siginfo whose si_pid is set.
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// Kills the child if it still runs, and reaps it.
    fn reap(&mut self) -> Result<ExitStatus, ProbeError> {
        if !self.has_exited().map_err(|error| ProbeError::Wait(VICTIM, error))? {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child, with a local for its status.
        if unsafe { libc::waitpid(self.pid, &mut status, 0) } != self.pid {
            return Err(ProbeError::Wait(VICTIM, io::Error::last_os_error()));
        }
        self.reaped = true;
        Ok(ExitStatus::from_raw(status))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.reap();
        }
    }
}
