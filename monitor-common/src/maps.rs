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

/// Slots of the `ENFORCE` array, written by the daemon from the per-rule actions: what the LSM
/// tier refuses besides secret opens (those follow each inode's [`WatchedInode::policy`]).
pub mod enforce {
    /// [`super::policy`] bits for reaching into a process that holds a secret (its
    /// `/proc/PID/environ` or `mem`, ptrace attach, `process_vm_readv`), the target's task being
    /// the owner: the same [`super::policy::kills`] decides.
    pub const HARVEST: u32 = 0;
    /// Nonzero: a connect by a secret holder outside its task's allowed destinations is refused.
    pub const CONNECT: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// Data of an `ALLOWED_DESTINATIONS` LPM trie key: a task's allowed network. The trie matches
/// the task handle (32 bits) then the address, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so a
/// key's prefix length is `32 + 128` for a host and `32 + 96 + n` for an IPv4 `/n`. Every task
/// with an allowlist also has an entry of prefix 32 (the task alone) and no port: the default,
/// refuse.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestinationKey {
    /// The task handle, big-endian (the trie compares bytes from the first).
    pub task: [u8; 4],
    pub address: [u8; 16],
}

/// Prefix bits of the task part of a [`DestinationKey`].
pub const DESTINATION_TASK_BITS: u32 = 32;

/// Ports of one allowed network; more than [`MAX_PORTS`] distinct ports on one network are
/// stored as `any_port` (the daemon logs it), so the kernel never refuses what the list allows.
pub const MAX_PORTS: usize = 16;

/// `ALLOWED_DESTINATIONS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedPorts {
    /// Nonzero: every port.
    pub any_port: u32,
    /// How many of `ports` are used.
    pub count: u32,
    pub ports: [u16; MAX_PORTS],
}

impl AllowedPorts {
    /// Whether `port` (host order) is allowed.
    #[inline(always)]
    pub fn allows(&self, port: u16) -> bool {
        if self.any_port != 0 {
            return true;
        }
        let mut index = 0;
        while index < MAX_PORTS {
            if index as u32 >= self.count {
                return false;
            }
            if self.ports[index] == port {
                return true;
            }
            index += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C) structs of integers with explicit padding fields: every bit pattern valid.
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchedInode {}
    // SAFETY: repr(C), byte arrays only: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::DestinationKey {}
    // SAFETY: repr(C), two u32 then u16s (40 bytes, no padding): every bit pattern valid.
    unsafe impl aya::Pod for super::AllowedPorts {}
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

    #[test]
    fn allowed_ports() {
        use super::{AllowedPorts, MAX_PORTS};
        let mut ports = [0; MAX_PORTS];
        ports[..2].copy_from_slice(&[443, 80]);
        let listed = AllowedPorts { any_port: 0, count: 2, ports };
        assert!(listed.allows(443) && listed.allows(80));
        assert!(!listed.allows(22));
        assert!(!listed.allows(0), "an unused slot allows nothing");
        let none = AllowedPorts { any_port: 0, count: 0, ports: [0; MAX_PORTS] };
        assert!(!none.allows(443));
        assert!(AllowedPorts { any_port: 1, ..none }.allows(22));
    }
}
