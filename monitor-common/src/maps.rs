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

/// What to do when a watched inode is opened, decided in the kernel at syscall exit: a bit set.
/// Only a bound secret (`owner_task != 0`) is ever enforced.
pub mod policy {
    /// Report only.
    pub const REPORT: u32 = 0;
    /// Kill an opener that belongs to another task than the owner (cross-task reuse).
    pub const KILL_OTHER_TASK: u32 = 1 << 0;
    /// Kill an opener that belongs to no task.
    pub const KILL_UNTASKED: u32 = 1 << 1;
    /// Kill every opener, members included: the owning task has ended or expired.
    pub const KILL_ANY: u32 = 1 << 2;

    /// Whether an open by a process of task `caller` (0: none) of a secret owned by `owner`
    /// (0: unbound) is killed under `policy`.
    #[inline(always)]
    pub const fn kills(policy: u32, owner: u32, caller: u32) -> bool {
        if owner == 0 {
            return false;
        }
        if policy & KILL_ANY != 0 {
            return true;
        }
        if caller == 0 {
            return policy & KILL_UNTASKED != 0;
        }
        caller != owner && policy & KILL_OTHER_TASK != 0
    }
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

#[cfg(test)]
mod tests {
    use super::policy::*;

    #[test]
    fn policy_decides_who_dies() {
        let (owner, other, none) = (1, 2, 0);
        assert!(!kills(KILL_ANY, 0, other), "an unbound secret is never enforced");
        assert!(!kills(REPORT, owner, other));
        assert!(kills(KILL_OTHER_TASK, owner, other));
        assert!(!kills(KILL_OTHER_TASK, owner, owner));
        assert!(!kills(KILL_OTHER_TASK, owner, none));
        assert!(kills(KILL_UNTASKED, owner, none));
        assert!(!kills(KILL_UNTASKED, owner, other));
        assert!(kills(KILL_ANY, owner, owner), "after the task ended, its own processes too");
    }
}
