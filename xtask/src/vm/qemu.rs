//! Booting the guest: QEMU on the serial console, its output streamed line by line, a verdict read
//! from it, and a hard time limit.
//!
//! QEMU's own exit status says nothing about the guest's tests (it exits 0 on `poweroff` whatever
//! they did), and after a KVM error it pauses forever. So the verdict is a marker line that the
//! guest's init prints, with a nonce the guest cannot have guessed, and QEMU is killed when the
//! time is up.

use std::{
    fmt,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{cmd, error::Error, leaks};

pub const QEMU: &str = "qemu-system-x86_64";
/// `bpf` must be in the list for BPF LSM programs to run; the cloud kernel's default list has it
/// last after apparmor etc., which the guest does not need.
const KERNEL_ARGS: &str = "console=ttyS0 panic=-1 quiet";
/// The marker the guest's init prints last: `<MARKER> <nonce> pass` or `… fail <why>`.
pub const MARKER: &str = "CREDWATCH-VM-VERDICT";
/// What QEMU prints on stderr when a KVM guest cannot go on (nested virtualisation that cannot
/// emulate an instruction); the guest is then paused forever.
const KVM_FAILURES: &[&str] = &["KVM internal error", "emulation failure", "KVM_RUN failed"];

/// How long the KVM probe guest may take to print its marker.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the guest's CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation: slow, but works everywhere.
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => &["-accel", "tcg"],
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        })
    }
}

/// One boot of the guest.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub accel: Accel,
    pub memory_mb: u32,
    /// From QEMU's start; QEMU is killed when it passes.
    pub timeout: Duration,
    pub nonce: &'a str,
    /// Every console line is copied here.
    pub console_log: &'a Path,
    /// Whether console lines are echoed to our stderr as they come.
    pub echo: bool,
    /// Kernel parameters beside the console's: the active LSMs, and the guest's configuration
    /// (a parameter the kernel does not know reaches init as an environment variable).
    pub kernel_args: &'a str,
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The guest's init printed the marker with `pass`.
    Pass,
    /// It printed the marker with `fail …`.
    Fail(String),
    /// No marker: the guest crashed, QEMU failed, or the time ran out; the reason says which.
    Missing(String),
}

pub struct Outcome {
    pub verdict: Verdict,
    pub elapsed: Duration,
    /// Console lines that held a planted secret value (withheld from the log and the echo).
    pub leaked: usize,
}

enum Seen {
    Console(String),
    QemuError(String),
    ConsoleClosed,
}

/// Boots, streams the console, and returns the verdict. QEMU is always gone when this returns.
pub fn boot(boot: &Boot<'_>) -> Result<Outcome, Error> {
    let Boot { kernel, initramfs, accel, memory_mb, timeout, nonce, console_log, echo, kernel_args } = *boot;
    let mut qemu = Command::new(QEMU);
    qemu.args(accel.args())
        .args(["-m", &format!("{memory_mb}M"), "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &format!("{KERNEL_ARGS} {kernel_args}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", cmd::cmdline(&qemu));
    let started = Instant::now();
    let mut child = qemu.spawn().map_err(|source| Error::Io { cmdline: cmd::cmdline(&qemu), source })?;
    let mut log = File::create(console_log).map_err(|source| Error::File { path: console_log.to_owned(), source })?;
    let (sender, seen) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let console = sender.clone();
    thread::spawn(move || read_lines(stdout, &console));
    // Line by line: after a KVM error QEMU stays up, so its stderr never ends.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(Seen::QemuError(line)).is_err() {
                return;
            }
        }
    });
    let deadline = started + timeout;
    let expected = format!("{MARKER} {nonce} ");
    let mut verdict = None;
    let mut leaked = 0;
    let mut qemu_error = String::new();
    while verdict.is_none() {
        let now = Instant::now();
        if now >= deadline {
            verdict = Some(Verdict::Missing(format!("no verdict after {timeout:?}: QEMU killed")));
            break;
        }
        match seen.recv_timeout(deadline - now) {
            Ok(Seen::Console(mut line)) => {
                if leaks::leaks(&line) {
                    leaked += 1;
                    line = "[xtask: a planted secret value appeared on this line; the line is withheld]".to_owned();
                }
                let _ = writeln!(log, "{line}");
                if echo {
                    eprintln!("vm| {line}");
                }
                if let Some(rest) = line.split_once(&expected).map(|(_, rest)| rest.trim()) {
                    verdict = Some(match rest {
                        "pass" => Verdict::Pass,
                        other => Verdict::Fail(other.strip_prefix("fail").unwrap_or(other).trim().to_owned()),
                    });
                }
            }
            Ok(Seen::QemuError(line)) => {
                let _ = writeln!(log, "[qemu stderr] {line}");
                if echo {
                    eprintln!("vm: QEMU says: {line}");
                }
                if KVM_FAILURES.iter().any(|failure| line.contains(failure)) {
                    verdict = Some(Verdict::Missing(format!("the KVM guest failed: {line}")));
                }
                if qemu_error.is_empty() {
                    qemu_error = line;
                }
            }
            Ok(Seen::ConsoleClosed) => {
                verdict = Some(Verdict::Missing(match qemu_error.trim() {
                    "" => "the guest stopped without a verdict (see the console log)".to_owned(),
                    error => format!("QEMU exited without a verdict: {error}"),
                }));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                verdict = Some(Verdict::Missing("lost QEMU's output".to_owned()));
            }
        }
    }
    let verdict = verdict.expect("set before the loop ends");
    // After a verdict the guest is powering off; otherwise nothing good is coming.
    let grace = match verdict {
        Verdict::Pass | Verdict::Fail(_) => Duration::from_secs(10),
        Verdict::Missing(_) => Duration::ZERO,
    };
    finish(&mut child, grace);
    Ok(Outcome { verdict, elapsed: started.elapsed(), leaked })
}

/// Lets QEMU power off by itself for `grace`, then kills it (our own child, by its pid).
fn finish(child: &mut Child, grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends every console line (without its `\r\n`) until the stream ends, then `ConsoleClosed`.
fn read_lines(from: impl Read, to: &mpsc::Sender<Seen>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_owned();
                if to.send(Seen::Console(line)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.send(Seen::ConsoleClosed);
}

/// Whether KVM can run this guest: `/dev/kvm` must open, and a short boot of the real kernel
/// with a tiny init must print its marker. A nested hypervisor may offer `/dev/kvm` and still
/// fail every guest, silently (nothing on the console nor on stderr), so opening it proves
/// nothing by itself. A working KVM boots the probe in about a second.
pub fn kvm_works(kernel: &Path, probe_initramfs: &Path, nonce: &str, log: &Path) -> Result<(bool, String), Error> {
    if let Err(error) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Ok((false, format!("/dev/kvm: {error}")));
    }
    let outcome = boot(&Boot {
        kernel,
        initramfs: probe_initramfs,
        accel: Accel::Kvm,
        memory_mb: 256,
        timeout: KVM_PROBE_TIMEOUT,
        nonce,
        console_log: log,
        echo: false,
        kernel_args: "",
    })?;
    Ok(match outcome.verdict {
        Verdict::Pass => (true, format!("a probe guest booted in {:.1}s", outcome.elapsed.as_secs_f64())),
        Verdict::Fail(why) | Verdict::Missing(why) => (false, why),
    })
}
