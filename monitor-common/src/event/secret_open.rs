//! A use of a watched inode: an open seen at syscall exit with the fd it returned, or, on the LSM
//! tier, an open, read or mmap refused by a hook (fd -1) or an open by a route that is not an open
//! syscall (io_uring).

/// Capacity of the path field (the path as the process passed it).
pub const PATH_LEN: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SecretOpenBody {
    /// The daemon's secret id from `WATCHED`.
    pub secret: u32,
    /// Syscall number (x86_64 numbering) that reached the file; `IO_URING_ENTER` for an io_uring
    /// worker.
    pub syscall: u32,
    /// The returned fd; -1 when there is none (refused, or not an open syscall).
    pub fd: i32,
    /// `super_block::s_dev`, kernel encoding.
    pub dev: u32,
    pub ino: u64,
    /// Kernel task handle of the opener at the use (0: in no task).
    pub caller_task: u32,
    /// The secret's binding at the use (`maps::policy::{UNBOUND, ACTIVE, FINISHED}`).
    pub binding: u32,
    /// One of [`crate::event::kernel_action`].
    pub action: u32,
    pub _pad: u32,
    /// The path argument, NUL-terminated; empty for `open_by_handle_at`.
    pub path: [u8; PATH_LEN],
}
