//! Keys and values of the maps that userspace writes and the kernel reads.

/// A file's identity as the kernel sees it: `super_block::s_dev` (internal encoding,
/// `major << 20 | minor`) and `inode::i_ino`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// What to do when a watched inode is opened, decided in the kernel at syscall exit.
pub mod policy {
    /// Report only.
    pub const REPORT: u32 = 0;
    /// Kill an opener that is not a member of the owning task.
    pub const KILL_FOREIGN: u32 = 1;
    /// Kill every opener: the owning task has ended or expired.
    pub const KILL_ALL: u32 = 2;
}

/// `WATCHED` value: which secret an inode is, and who may open it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedInode {
    /// The daemon's secret id.
    pub secret: u32,
    /// Kernel handle of the task the secret is bound to; 0 when unbound.
    pub owner_task: u32,
    /// One of [`policy`].
    pub policy: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) structs of integers with explicit padding fields: every bit pattern valid.
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchedInode {}
}
