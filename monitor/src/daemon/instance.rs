//! One daemon per host: an exclusive lock on `credwatch.pid` in the API socket's directory
//! (`/run/credwatch/` by default), held for the daemon's life. A second `credwatch run` there
//! refuses to start, naming the running one; two daemons would judge every process twice and
//! fight over the kernel's decisions. A daemon with its own socket directory (tests, `demo`)
//! runs beside it.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

const FILE: &str = "credwatch.pid";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("another credwatch daemon (pid {pid}) already runs with {}; stop it first, or give this one another --socket directory", path.display())]
    Running { pid: String, path: PathBuf },
    #[error("cannot lock {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while the daemon runs; the kernel releases the lock when the process ends, however.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of the daemon whose API socket is `socket`, writing this process's pid.
    pub fn acquire(socket: &Path) -> Result<Self, InstanceError> {
        let dir = socket.parent().unwrap_or(Path::new("."));
        let path = dir.join(FILE);
        let io = |source| InstanceError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(error));
            }
            let mut pid = String::new();
            file.read_to_string(&mut pid).map_err(io)?;
            return Err(InstanceError::Running { pid: pid.trim().to_owned(), path });
        }
        file.set_len(0).and_then(|()| file.rewind()).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_is_refused_naming_the_first_and_a_released_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let first = InstanceLock::acquire(&socket).unwrap();
        // flock locks belong to open files: a second open in this process conflicts too.
        let error = InstanceLock::acquire(&socket).unwrap_err().to_string();
        assert!(error.starts_with(&format!("another credwatch daemon (pid {})", std::process::id())), "{error}");
        drop(first);
        InstanceLock::acquire(&socket).unwrap();
    }
}
