//! `sched_process_exec`: a process replaced its program image.

/// Capacity of the filename field; longer names are cut and flagged `TRUNCATED`.
pub const FILENAME_LEN: usize = 256;
/// Capacity of the argv[0] field.
pub const ARGV0_LEN: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecBody {
    /// Process id of the real parent.
    pub parent_tgid: u32,
    /// Real user id after the exec (setuid binaries change it).
    pub uid: u32,
    /// Identity of the parent: its leader's `start_boottime`.
    pub parent_start_time: u64,
    /// The path the exec was asked to run (`linux_binprm::filename`), NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
    /// The new program's argv[0], NUL-terminated.
    pub argv0: [u8; ARGV0_LEN],
}

/// Most bytes of a new image's argument block captured at exec (a power of two).
pub const ARGV_CAPTURE: usize = 16 << 10;
/// Most bytes of its environment block captured (a power of two): above what real agent
/// environments hold; what is cut is counted.
pub const ENV_CAPTURE: usize = 64 << 10;

/// What follows an [`ExecBody`] in an exec record: the sizes of the blocks, then `argv_len` bytes
/// of the argument block and `env_len` bytes of the environment block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecCapture {
    pub argv_len: u32,
    pub env_len: u32,
    /// The blocks' full sizes: more than what was captured when cut.
    pub argv_size: u32,
    pub env_size: u32,
}

/// An exec record as the kernel builds it before sending the used part: header, body, capture
/// sizes and the captured bytes.
#[repr(C)]
pub struct ExecRecord {
    pub event: super::Event<ExecBody>,
    pub capture: ExecCapture,
    pub data: [u8; ARGV_CAPTURE + ENV_CAPTURE],
}

/// How much of each block is captured, set by the daemon before load (the `[exec]` section);
/// at most [`ARGV_CAPTURE`] and [`ENV_CAPTURE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureLimits {
    pub argv: u32,
    pub env: u32,
}

impl CaptureLimits {
    pub const MAX: Self = Self { argv: ARGV_CAPTURE as u32, env: ENV_CAPTURE as u32 };
}

#[cfg(feature = "user")]
// SAFETY: a repr(C) struct of u32s: no padding, every bit pattern valid.
unsafe impl aya::Pod for CaptureLimits {}
