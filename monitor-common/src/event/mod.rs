//! The event envelope sent through the `EVENTS` ring buffer: a common header and a typed body.

pub mod connect;
pub mod exec;
pub mod exit;
pub mod fork;
pub mod harvest;
pub mod secret_open;
pub mod tls;

/// Stable numeric ids of event kinds; also the index of each kind's loss counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 0,
    Fork = 1,
    Exit = 2,
    SecretOpen = 3,
    Harvest = 4,
    Connect = 5,
    TlsWrite = 6,
}

impl EventKind {
    /// Every kind, in id order.
    pub const ALL: [Self; 7] =
        [Self::Exec, Self::Fork, Self::Exit, Self::SecretOpen, Self::Harvest, Self::Connect, Self::TlsWrite];

    pub const fn from_u32(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::Exec),
            1 => Some(Self::Fork),
            2 => Some(Self::Exit),
            3 => Some(Self::SecretOpen),
            4 => Some(Self::Harvest),
            5 => Some(Self::Connect),
            6 => Some(Self::TlsWrite),
            _ => None,
        }
    }

    /// The name used in logs, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::SecretOpen => "secret_open",
            Self::Harvest => "harvest",
            Self::Connect => "connect",
            Self::TlsWrite => "tls_write",
        }
    }
}

/// Who did what, when: filled in by the kernel for the current task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// Thread id of the current task.
    pub pid: u32,
    /// Process id (thread group id) of the current task.
    pub tgid: u32,
    /// Bit set of [`flags`] describing partial reads.
    pub flags: u32,
    /// `CLOCK_BOOTTIME` nanoseconds when the hook ran.
    pub ktime_ns: u64,
    /// `start_boottime` of the process's thread group leader: with `tgid`, the process identity
    /// that survives pid reuse.
    pub start_time: u64,
}

/// Header flags: a field the kernel could not read completely is reported, not hidden.
pub mod flags {
    /// A string field was cut at its buffer size.
    pub const TRUNCATED: u32 = 1 << 0;
    /// A kernel or user memory read failed; the affected field is empty or zero.
    pub const READ_FAILED: u32 = 1 << 1;
}

/// What the kernel did about an event before reporting it.
pub mod kernel_action {
    pub const NONE: u32 = 0;
    /// SIGKILL sent in the kernel: at syscall exit, or before a copy out of a holder's memory.
    pub const KILLED: u32 = 1;
    /// Refused by an LSM hook.
    pub const DENIED: u32 = 2;
}

/// One ring buffer record: header then body.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event<T> {
    pub header: EventHeader,
    pub body: T,
}

#[cfg(feature = "user")]
mod user {
    use super::{Event, EventHeader};

    impl EventHeader {
        /// Reads the header at the start of a ring buffer record.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            read(bytes)
        }
    }

    impl<T: Copy> Event<T> {
        /// Reads a whole record; `None` if it is shorter than `Event<T>`.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            read(bytes)
        }
    }

    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: the length is checked above, and every type read here is a `repr(C)` struct of
        // integers and byte arrays, for which any bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    /// The bytes of a NUL-terminated string field, without the terminator.
    pub fn c_bytes(field: &[u8]) -> &[u8] {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        &field[..end]
    }
}

#[cfg(feature = "user")]
pub use user::c_bytes;
