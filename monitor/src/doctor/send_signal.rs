//! The in-kernel kill switch, tried for real: a raw tracepoint calls `bpf_send_signal(SIGKILL)`
//! in a child process, and doctor checks the child died of it.

use std::{
    io::{self, Write as _},
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::{programs::RawTracePoint, Btf};

use super::hooks::{self, HookKind, ProbeError};

/// Blocks reading stdin, then makes a syscall (its write) when it gets a line.
const VICTIM: &str = "/bin/cat";
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

/// The child the probe kills; killed and reaped on drop whatever happened.
struct Victim {
    child: Child,
}

impl Victim {
    fn spawn() -> Result<Self, ProbeError> {
        let child = Command::new(VICTIM)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| ProbeError::Spawn(VICTIM, error))?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wakes the child so that it makes a syscall.
    fn poke(&mut self) -> Result<(), ProbeError> {
        let stdin = self.child.stdin.as_mut().ok_or_else(|| {
            ProbeError::Trigger(io::Error::other("the child's stdin is not piped"))
        })?;
        match stdin.write_all(b"credwatch doctor\n") {
            // The child may already be dead: any syscall it made after the attach killed it.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            result => result.map_err(ProbeError::Trigger),
        }
    }

    /// Waits until the child exits or `deadline` passes, without reaping it.
    fn wait_for_exit(&self, deadline: Duration) -> Result<bool, ProbeError> {
        let start = Instant::now();
        loop {
            if self
                .has_exited()
                .map_err(|error| ProbeError::Wait(VICTIM, error))?
            {
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
        if !self
            .has_exited()
            .map_err(|error| ProbeError::Wait(VICTIM, error))?
        {
            let _ = self.child.kill();
        }
        self.child
            .wait()
            .map_err(|error| ProbeError::Wait(VICTIM, error))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // After `reap` both calls are no-ops on the recorded status.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
