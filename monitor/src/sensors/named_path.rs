//! The path a waiting opener named, read from its memory for the file guard's report.
//!
//! Reading another process's memory takes its mmap lock, which that process can keep others from
//! for as long as it likes (a write waiting behind a page fault that userfaultfd never resolves).
//! So the read runs on a thread of its own: the guard waits for it at most [`READ_DEADLINE`], and
//! while a read is stuck no other starts (the report then carries the resolved path). A process
//! can thus hide the paths that openers named, never delay a decision by more than the deadline.

use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use monitor_common::event::secret_open::PATH_LEN;

/// How long the guard waits for a path.
const READ_DEADLINE: Duration = Duration::from_millis(100);

/// The reader thread, and the number of the latest read asked of it.
pub struct NamedPaths {
    requests: SyncSender<(u64, u32, u64)>,
    answers: Receiver<(u64, Option<String>)>,
    asked: u64,
    /// The latest read outlived its deadline and has not answered since.
    stuck: bool,
}

impl NamedPaths {
    pub fn start() -> std::io::Result<Self> {
        // Room for one request: the reader takes each before the next is sent, unless it is stuck.
        let (requests, taken) = mpsc::sync_channel::<(u64, u32, u64)>(1);
        let (answer, answers) = mpsc::channel();
        std::thread::Builder::new().name("file-guard-paths".into()).spawn(move || {
            for (number, tgid, address) in taken {
                if answer.send((number, read(tgid, address))).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { requests, answers, asked: 0, stuck: false })
    }

    /// The NUL-terminated path at `address` in process `tgid`, or `None` if it cannot be read in
    /// time (or at all).
    pub fn read(&mut self, tgid: u32, address: u64) -> Option<String> {
        // The stuck read's late answer frees the reader.
        while let Ok((number, _)) = self.answers.try_recv() {
            self.stuck &= number != self.asked;
        }
        if self.stuck {
            return None;
        }
        self.asked += 1;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.requests.try_send((self.asked, tgid, address))
        {
            return None;
        }
        let deadline = Instant::now() + READ_DEADLINE;
        loop {
            match self.answers.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((number, path)) if number == self.asked => return path,
                Ok(_) => continue, // a late answer to an earlier read
                Err(RecvTimeoutError::Timeout) => {
                    self.stuck = true;
                    return None;
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Reads the path, cut at the tracepoints' length.
fn read(tgid: u32, address: u64) -> Option<String> {
    let mut buffer = [0u8; PATH_LEN];
    // Up to the end of the page first: the rest of the buffer may lie past the mapping.
    let to_page_end = 4096 - (address as usize % 4096);
    for len in [PATH_LEN.min(to_page_end), PATH_LEN] {
        let local = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: len };
        let remote = libc::iovec { iov_base: address as *mut libc::c_void, iov_len: len };
        // SAFETY: reads at most `len` bytes into `buffer`, which holds `PATH_LEN`.
        let read = unsafe { libc::process_vm_readv(tgid as i32, &local, 1, &remote, 1, 0) };
        if read <= 0 {
            return None;
        }
        if let Some(end) = buffer[..read as usize].iter().position(|&byte| byte == 0) {
            return Some(String::from_utf8_lossy(&buffer[..end]).into_owned());
        }
    }
    Some(String::from_utf8_lossy(&buffer).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_in_this_process_is_read_and_a_bad_address_is_none() {
        let mut paths = NamedPaths::start().unwrap();
        let named = c"/home/agent/.aws/credentials";
        assert_eq!(paths.read(std::process::id(), named.as_ptr() as u64).as_deref(), Some("/home/agent/.aws/credentials"));
        assert_eq!(paths.read(std::process::id(), 8), None);
    }
}
