//! A child process held between `fork` and `exec`: it exists, with the environment the command
//! will have, so the daemon can register its pid as a task's root before the command runs a
//! single instruction of its own.
//!
//! `Command::spawn` returns only once the child has exec'd, so it runs on a thread while the
//! child, in `pre_exec`, writes its pid to one pipe and waits for a byte on another.

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    os::unix::process::CommandExt as _,
    process::{Child, Command},
    thread::JoinHandle,
};

pub struct HeldChild {
    pid: u32,
    /// Writing a byte lets the child exec; closing it unwritten makes the child exit instead.
    gate: File,
    spawner: JoinHandle<io::Result<Child>>,
}

impl HeldChild {
    /// Forks the child and returns once it waits at the gate. The command must not set
    /// environment variables: `/proc/PID/environ` shows the inherited block until the exec.
    pub fn spawn(mut command: Command) -> io::Result<Self> {
        let (gate_read, gate_write) = pipe()?;
        let (pid_read, pid_write) = pipe()?;
        let fds = (gate_read.as_raw_fd(), gate_write.as_raw_fd(), pid_write.as_raw_fd());
        // SAFETY: `wait_at_gate` only makes async-signal-safe calls (close, getpid, write, read).
        unsafe { command.pre_exec(move || wait_at_gate(fds.0, fds.1, fds.2)) };
        // Unnamed: the child's name until the exec is the spawning thread's, and should be ours.
        let spawner = std::thread::Builder::new().spawn(move || {
            let child = command.spawn();
            // The parent's copies: once closed, the pid pipe reads end-of-file if no child wrote.
            drop((gate_read, pid_write));
            child
        })?;
        let mut pid = [0; 4];
        if let Err(error) = File::from(pid_read).read_exact(&mut pid) {
            // No pid: the spawn failed before reaching the gate, and says why.
            return Err(join(spawner).err().unwrap_or(error));
        }
        Ok(Self { pid: u32::from_ne_bytes(pid), gate: File::from(gate_write), spawner })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child exec the command. An error is the exec's (e.g. the program is missing).
    pub fn release(self) -> io::Result<Child> {
        let Self { pid: _, mut gate, spawner } = self;
        gate.write_all(&[1])?;
        drop(gate);
        join(spawner)
    }

    /// Makes the child exit without running the command.
    pub fn abandon(self) {
        let Self { pid: _, gate, spawner } = self;
        drop(gate);
        // The spawn fails by design: the child refused to exec.
        let _ = join(spawner);
    }
}

fn join(spawner: JoinHandle<io::Result<Child>>) -> io::Result<Child> {
    spawner.join().unwrap_or_else(|_| Err(io::Error::other("the thread spawning the command panicked")))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs in the child between fork and exec.
fn wait_at_gate(gate_read: RawFd, gate_write: RawFd, pid_write: RawFd) -> io::Result<()> {
    // SAFETY: closing and writing descriptors this process inherited, into a local buffer.
    unsafe {
        // Without its own copy of the write end, the child sees end-of-file if the parent dies.
        libc::close(gate_write);
        let pid = libc::getpid().to_ne_bytes();
        if libc::write(pid_write, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    let mut byte = 0_u8;
    loop {
        // SAFETY: reads at most one byte into `byte`.
        match unsafe { libc::read(gate_read, (&raw mut byte).cast(), 1) } {
            1 => return Ok(()),
            0 => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// Blocks until the child has exited, without reaping it: until `Child::wait`, its pid cannot be
/// reused, so a signal forwarded meanwhile cannot reach another process.
pub fn wait_for_exit(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: waitid writes only into `info`.
        let result = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &raw mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn exe(pid: u32) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
    }

    #[test]
    fn holds_the_child_until_released() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 7"]);
        let held = HeldChild::spawn(command).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Still this test binary's image: the exec has not happened.
        assert_eq!(exe(held.pid()), exe(std::process::id()));
        let pid = held.pid();
        let mut child = held.release().unwrap();
        assert_eq!(child.id(), pid);
        wait_for_exit(pid).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn an_abandoned_child_never_runs_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let mut command = Command::new("touch");
        command.arg(&marker);
        let held = HeldChild::spawn(command).unwrap();
        let pid = held.pid();
        held.abandon();
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the child was reaped");
        assert!(!marker.exists());
    }

    #[test]
    fn a_missing_program_fails_at_release() {
        let held = HeldChild::spawn(Command::new("/nonexistent/credwatch-test")).unwrap();
        assert_eq!(held.release().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
