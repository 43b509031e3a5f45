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
