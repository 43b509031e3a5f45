//! Running the commands xtask drives. Commands that change something are echoed first (`$ …` on
//! stderr), so the log shows what to repeat by hand; queries run quietly.

use std::{
    ffi::OsStr,
    io::{self, Read as _, Write as _},
    os::unix::process::ExitStatusExt as _,
    process::{ChildStderr, Command, ExitCode, ExitStatus, Output, Stdio},
    thread,
};

use crate::error::Error;

/// Lines of a failed command's stderr kept for the error message.
const STDERR_TAIL_LINES: usize = 30;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` on the terminal's stdin/stdout/stderr and returns how it ended, whatever that was.
pub fn status(cmd: &mut Command) -> Result<ExitStatus, Error> {
    echo(cmd);
    let mut child = cmd.spawn().map_err(|source| io_error(cmd, source))?;
    let _outlive_ctrl_c = IgnoreInterrupt::install();
    child.wait().map_err(|source| io_error(cmd, source))
}

/// Runs `cmd`, passing its stderr through as it comes, and fails with the end of that stderr
/// unless it exits 0.
pub fn checked(cmd: &mut Command) -> Result<(), Error> {
    echo(cmd);
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| io_error(cmd, source))?;
    let stderr = child.stderr.take().expect("stderr was piped");
    let tee = thread::spawn(move || tee_tail(stderr));
    let _outlive_ctrl_c = IgnoreInterrupt::install();
    let status = child.wait().map_err(|source| io_error(cmd, source))?;
    let stderr = tee.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            cmdline: cmdline(cmd),
            status,
            stderr,
        })
    }
}

/// Runs a query quietly and returns its output whatever its exit status: `dpkg-query` exits 1
/// when one package is unknown yet still lists the others, `ldd` exits 1 on a static binary.
pub fn output(cmd: &mut Command) -> Result<Output, Error> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| io_error(cmd, source))
}

/// The exit code a shell would report for `status`: the code, or 128 + the killing signal.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

/// `VAR=value program args…`, quoted where a shell would need it.
pub fn cmdline(cmd: &Command) -> String {
    let env = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.to_string_lossy(), shell_quote(value)))
    });
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_quote);
    env.chain(words).collect::<Vec<_>>().join(" ")
}

fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn echo(cmd: &Command) {
    eprintln!("$ {}", cmdline(cmd));
}

fn io_error(cmd: &Command, source: io::Error) -> Error {
    Error::Io {
        cmdline: cmdline(cmd),
        source,
    }
}

/// Copies a child's stderr to ours and returns its last lines.
fn tee_tail(mut from: ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = io::stderr().write_all(&buf[..n]);
                kept.extend_from_slice(&buf[..n]);
                // Bounded: `cargo install` of bpf-linker writes a few hundred lines.
                if kept.len() > 256 * 1024 {
                    kept.drain(..128 * 1024);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    last_lines(&String::from_utf8_lossy(&kept), STDERR_TAIL_LINES)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Ctrl-C on the terminal reaches the whole foreground process group, so the child gets its
/// SIGINT directly; xtask ignores it meanwhile to stay alive and report the child's status.
/// Installed after spawning: an ignored signal would be inherited across exec.
pub(crate) struct IgnoreInterrupt(libc::sighandler_t);

impl IgnoreInterrupt {
    pub(crate) fn install() -> Self {
        // SAFETY: SIG_IGN is a valid disposition for SIGINT; nothing else in xtask handles it.
        Self(unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreInterrupt {
    fn drop(&mut self) {
        // SAFETY: restores the disposition `signal` returned, which was valid when installed.
        unsafe { libc::signal(libc::SIGINT, self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_shell_quoted() {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "clang"]);
        assert_eq!(
            cmdline(&cmd),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y clang"
        );
        let mut cmd = Command::new("credwatch");
        cmd.args(["run", "--config", "my file.toml", "it's", ""]);
        assert_eq!(
            cmdline(&cmd),
            r"credwatch run --config 'my file.toml' 'it'\''s' ''"
        );
    }

    #[test]
    fn stderr_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\n", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        assert_eq!(
            exit_code(ExitStatus::from_raw(101 << 8)),
            ExitCode::from(101)
        );
        assert_eq!(
            exit_code(ExitStatus::from_raw(libc::SIGINT)),
            ExitCode::from(130)
        );
    }
}
