//! Events as the engine sees them: decoded from the kernel's records, owned, and serializable so
//! that a stream can be recorded and replayed.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A process identity that survives pid reuse: thread group id and the leader's
/// `start_boottime` in nanoseconds (the clock `/proc/PID/stat` field 22 counts in ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecId {
    pub tgid: u32,
    pub start_time: u64,
}

/// One thing a process did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `CLOCK_BOOTTIME` nanoseconds when the kernel hook ran.
    pub ktime_ns: u64,
    /// The process that acted.
    pub process: ExecId,
    /// The thread that acted.
    pub thread: u32,
    /// A string field was cut at the kernel buffer's size.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// A kernel read failed; some fields are empty or zero.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_failed: bool,
    #[serde(flatten)]
    pub kind: EventKind,
}

fn is_false(value: &bool) -> bool {
    !value
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The process replaced its program image.
    Exec(Exec),
    /// The process created a new process (threads are not reported).
    Fork(Fork),
    /// The process's last thread exited.
    Exit(Exit),
    /// The process opened a watched secret file (matched by device and inode).
    SecretOpen(SecretOpen),
    /// The process opened another process's environment or memory, or attached to it.
    Harvest(Harvest),
    /// A process holding a secret connected or sent a datagram somewhere.
    Connect(Connect),
    /// A process handed a TLS library the head of an HTTP/1.x request.
    TlsWrite(TlsWrite),
}

impl EventKind {
    /// What the kernel already did about this event.
    pub fn kernel_action(&self) -> KernelAction {
        match self {
            Self::SecretOpen(SecretOpen { kernel_action, .. })
            | Self::Harvest(Harvest { kernel_action, .. })
            | Self::Connect(Connect { kernel_action, .. }) => *kernel_action,
            Self::Exec(_) | Self::Fork(_) | Self::Exit(_) | Self::TlsWrite(_) => KernelAction::None,
        }
    }

    /// Every kind's name, in `index` order.
    pub const NAMES: [&'static str; 7] = ["exec", "fork", "exit", "secret_open", "harvest", "connect", "tls_write"];

    /// The kind's position in [`Self::NAMES`].
    pub const fn index(&self) -> usize {
        match self {
            Self::Exec(_) => 0,
            Self::Fork(_) => 1,
            Self::Exit(_) => 2,
            Self::SecretOpen(_) => 3,
            Self::Harvest(_) => 4,
            Self::Connect(_) => 5,
            Self::TlsWrite(_) => 6,
        }
    }

    /// The kind's name, as in `monitor_common::event::EventKind::name` and metric labels.
    pub const fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub parent: ExecId,
    pub uid: u32,
    /// The path the exec was asked to run, as the caller named it.
    pub filename: String,
    pub argv0: String,
    /// Secret-looking environment variables of the new image, found by the daemon in what the
    /// kernel captured at exec (or, when it could not, in `/proc/PID/environ`).
    #[serde(default)]
    pub env: EnvScan,
    /// Words of the command line and of environment values long enough to be a credential, as
    /// keyed fingerprints: the engine recognises known values among them, however passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenSeen>,
    /// The argument and environment blocks the kernel captured: values, held only until the
    /// daemon has scanned them, wiped when dropped, never serialized or printed.
    #[serde(skip)]
    pub captured: Option<Captured>,
}

/// A word of an exec's command line or environment, by its keyed fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSeen {
    /// The variable it was in; `None` on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    pub fingerprint: Fingerprint,
}

/// What the kernel captured of a new image at exec. `Zeroizing` wipes the bytes when dropped and
/// never prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// NUL-separated arguments.
    pub argv: Zeroizing<Vec<u8>>,
    /// NUL-separated `NAME=VALUE` entries.
    pub env: Zeroizing<Vec<u8>>,
    /// The block was larger than what was captured.
    pub argv_cut: bool,
    pub env_cut: bool,
}

/// What the daemon found in a process's environment at exec: names and keyed fingerprints of the
/// variables matching the catalogue's patterns, never their values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scan", rename_all = "snake_case")]
pub enum EnvScan {
    /// Not looked at (recorded streams from before the scan, or scanning disabled).
    #[default]
    NotScanned,
    /// `/proc/PID/environ` could not be read (the process was already gone, or it is a kernel
    /// thread); counted by the daemon.
    Unreadable,
    Scanned { secrets: Vec<EnvSecret> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSecret {
    /// The variable's name, e.g. `GITHUB_TOKEN`.
    pub name: String,
    pub fingerprint: Fingerprint,
}

/// A keyed fingerprint of a secret value (see `crate::fingerprint`): equal values give equal
/// fingerprints on one host, and the value cannot be recovered from it. Serialized as hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The first 8 hex digits: enough for a person to tell secrets apart in a finding.
    pub fn prefix(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let invalid = || serde::de::Error::custom(format!("fingerprint {text:?} is not 32 hex digits"));
        if text.len() != 32 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }
}

/// The daemon's number for a watched secret, shared with the kernel's `WATCHED` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretId(pub u32);

/// A file's identity: device number (as `stat(2)`'s `st_dev`) and inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InodeId {
    pub dev: u64,
    pub ino: u64,
}

/// The syscall through which a process reached a watched file. The open syscalls are what the
/// tracepoint tier sees; the LSM and fmod_ret tiers also report the other routes it sees or refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenSyscall {
    Open,
    Creat,
    Openat,
    Openat2,
    OpenByHandleAt,
    /// An io_uring request (`IORING_OP_OPENAT`, `IORING_OP_READ`, ...), inline or in a worker.
    IoUring,
    /// `read`, `pread64`, `readv`, `preadv`, `preadv2` of an fd opened earlier.
    Read,
    Sendfile,
    /// `splice` or `copy_file_range`.
    Splice,
    Mmap,
    /// `execve` or `execveat` of the file.
    Exec,
    /// Another syscall, or one the kernel could not tell.
    Other,
}

/// What the kernel already did about an event, before userspace saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelAction {
    #[default]
    None,
    /// SIGKILL sent at syscall exit, before the process returned to user space.
    Killed,
    /// The LSM hook refused the operation with EPERM.
    Denied,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretOpen {
    pub secret: SecretId,
    pub inode: InodeId,
    pub syscall: OpenSyscall,
    /// The path as the process named it (relative, through a symlink, `/proc/self/fd/N`, ...);
    /// empty for `open_by_handle_at`.
    pub path: String,
    /// Where the daemon found the secret (its catalogue or granted path); filled in by the
    /// daemon, not the kernel.
    #[serde(default)]
    pub resolved_path: String,
    pub fd: i32,
    #[serde(default)]
    pub kernel_action: KernelAction,
    /// The kernel handle of the opener's task at the use (0: none): membership as the kernel
    /// judged it, for a process whose fork the engine has not seen.
    #[serde(default)]
    pub caller_task: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HarvestKind {
    /// open of `/proc/PID/environ`.
    Environ,
    /// open of `/proc/PID/mem`.
    Mem,
    /// `ptrace(PTRACE_ATTACH | PTRACE_SEIZE)`.
    Ptrace,
    /// `process_vm_readv`.
    VmReadv,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Harvest {
    /// Named `harvest` in JSON: `kind` is already the tag of `EventKind`.
    #[serde(rename = "harvest")]
    pub kind: HarvestKind,
    /// Pid of the process whose environment or memory was reached.
    pub target: u32,
    /// Refused by an LSM hook (`Denied`) or not.
    #[serde(default)]
    pub kernel_action: KernelAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectSyscall {
    Connect,
    Sendto,
    Sendmsg,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub syscall: ConnectSyscall,
    pub destination: std::net::SocketAddr,
    /// Refused by an LSM hook before any packet (`Denied`) or not.
    #[serde(default)]
    pub kernel_action: KernelAction,
}

/// An HTTP request a process sent: the head of an HTTP/1.x request written to a TLS library (as
/// far as the daemon read it), or a whole request through credwatch's egress proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsWrite {
    /// The host the request is for (`api.github.com`, `127.0.0.1:8443`): its `Host` header as
    /// sent to a TLS library; the host the proxy was asked to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Credentials found in the request, by keyed fingerprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialSeen>,
    /// Where the daemon saw the request.
    #[serde(default, skip_serializing_if = "RequestVia::is_tls_library")]
    pub via: RequestVia,
    /// The address the proxy resolved `server` to; `None` for a TLS library's write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::SocketAddr>,
    /// The kernel handle of the writer's task at the write (0: none), as in [`SecretOpen`].
    #[serde(default)]
    pub caller_task: u32,
    /// The plaintext the kernel captured: held only until the daemon has scanned it, wiped when
    /// dropped, never serialized or printed.
    #[serde(skip)]
    pub captured: Option<Zeroizing<Vec<u8>>>,
}

/// Where a request was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestVia {
    /// Written to a TLS library, seen by a uprobe: the request has left by the time it is judged.
    #[default]
    TlsLibrary,
    /// Sent through the egress proxy: judged before it is forwarded.
    Egress,
}

impl RequestVia {
    fn is_tls_library(&self) -> bool {
        *self == Self::TlsLibrary
    }
}

/// A credential in a request, by its keyed fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSeen {
    /// Where in the request: a header's name, lower case (`authorization`, `x-api-key`,
    /// `cookie`), or `query` or `body`.
    pub header: String,
    pub fingerprint: Fingerprint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub child: ExecId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub status: ExitStatus,
}

/// How a process ended, decoded from the kernel's `wait(2)`-style exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(u8),
    Signaled(u8),
}

impl ExitStatus {
    pub const fn from_wait_status(raw: u32) -> Self {
        match raw & 0x7f {
            0 => Self::Exited(((raw >> 8) & 0xff) as u8),
            signal => Self::Signaled(signal as u8),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited {code}"),
            Self::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_codes_and_signals() {
        assert_eq!(ExitStatus::from_wait_status(7 << 8), ExitStatus::Exited(7));
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Exited(0));
        assert_eq!(ExitStatus::from_wait_status(9), ExitStatus::Signaled(9));
        // A core dump sets 0x80 on top of the signal.
        assert_eq!(ExitStatus::from_wait_status(0x80 | 11), ExitStatus::Signaled(11));
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = Event {
            ktime_ns: 5,
            process: ExecId { tgid: 10, start_time: 99 },
            thread: 10,
            truncated: false,
            read_failed: true,
            kind: EventKind::Exit(Exit { status: ExitStatus::Exited(7) }),
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"ktime_ns":5,"process":{"tgid":10,"start_time":99},"thread":10,"read_failed":true,"kind":"exit","status":{"exited":7}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }

    #[test]
    fn fingerprints_serialize_as_hex_and_reject_bad_text() {
        let fingerprint = Fingerprint([0xab; 16]);
        let json = serde_json::to_string(&fingerprint).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fingerprint);
        assert_eq!(fingerprint.prefix(), "abababab");
        let error = serde_json::from_str::<Fingerprint>("\"xyz\"").unwrap_err().to_string();
        assert!(error.contains("not 32 hex digits"), "{error}");
    }

    #[test]
    fn kind_names_match_the_kernel_records() {
        let kernel: Vec<_> = monitor_common::event::EventKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(kernel, EventKind::NAMES);
    }
}
