//! How a failed check describes its error: the errno the kernel returned, if any, and the chain
//! of causes on one line.

use std::{error::Error, fmt, io};

use serde::Serialize;

/// An error number returned by a system call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Errno {
    pub code: i32,
    /// Symbolic name (`EPERM`), when it is one that BPF, mount or file calls return.
    pub name: Option<&'static str>,
    /// The C library's text for it (`Operation not permitted`).
    pub description: String,
}

impl Errno {
    fn from_code(code: i32) -> Self {
        let text = io::Error::from_raw_os_error(code).to_string();
        // std formats OS errors as "<strerror> (os error N)"; only the strerror part is wanted.
        let description = match text.strip_suffix(&format!(" (os error {code})")) {
            Some(description) => description.to_owned(),
            None => text,
        };
        Self {
            code,
            name: errno_name(code),
            description,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            code,
            name,
            description,
        } = self;
        match name {
            Some(name) => write!(f, "{name}: {description}"),
            None => write!(f, "errno {code}: {description}"),
        }
    }
}

/// A failed step, reduced to what a report shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    /// The first OS error found in the chain of causes: the kernel's answer.
    pub errno: Option<Errno>,
    /// The error and its causes, joined with ": ", on one line.
    pub message: String,
}

impl ErrorDetail {
    pub fn new(error: &(dyn Error + 'static)) -> Self {
        let mut errno = None;
        let mut message = String::new();
        let mut next = Some(error);
        while let Some(error) = next {
            if errno.is_none() {
                errno = error
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::raw_os_error)
                    .map(Errno::from_code);
            }
            let text = one_line(&error.to_string());
            // aya often repeats its source inside its own message; print each text once.
            if !message.contains(&text) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&text);
            }
            next = error.source();
        }
        Self { errno, message }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { errno, message } = self;
        match errno {
            Some(errno) => write!(f, "{errno}: {message}"),
            None => f.write_str(message),
        }
    }
}

/// Collapses runs of whitespace, including the newlines of verifier logs, into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn errno_name(code: i32) -> Option<&'static str> {
    // Linux returns ENOTSUPP (524) from BPF calls; it is kernel-internal, so libc has no constant.
    const ENOTSUPP: i32 = 524;
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        ENOTSUPP => "ENOTSUPP",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("attaching the probe")]
    struct Outer(#[source] io::Error);

    #[test]
    fn finds_the_errno_below_the_step() {
        let error = Outer(io::Error::from_raw_os_error(libc::EPERM));
        let detail = ErrorDetail::new(&error);
        let errno = detail.errno.as_ref().expect("an OS error is in the chain");
        assert_eq!((errno.code, errno.name), (libc::EPERM, Some("EPERM")));
        assert_eq!(
            detail.to_string(),
            "EPERM: Operation not permitted: attaching the probe: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn prints_a_cause_repeated_by_its_parent_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("the syscall returned {0}. Verifier output:\n  line one\n")]
        struct Load(#[source] io::Error);
        let detail = ErrorDetail::new(&Load(io::Error::from_raw_os_error(libc::EACCES)));
        assert_eq!(
            detail.message,
            "the syscall returned Permission denied (os error 13). Verifier output: line one"
        );
    }

    #[test]
    fn unknown_codes_keep_their_number() {
        assert_eq!(
            Errno::from_code(4095).to_string(),
            "errno 4095: Unknown error 4095"
        );
    }
}
