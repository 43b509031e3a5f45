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

/// Who may use a watched secret and what happens to the others, decided in the kernel at the
/// use (an open at syscall exit, or an LSM hook): the same decision on every tier.
pub mod policy {
    /// What the per-rule actions kill or deny, a bit set in the `ENFORCE` [`super::enforce::FILES`]
    /// slot. Report only when empty.
    pub const REPORT: u32 = 0;
    /// A process of another task than the secret's active owners (cross_task_reuse).
    pub const KILL_OTHER_TASK: u32 = 1 << 0;
    /// A process in no task (untasked_access).
    pub const KILL_UNTASKED: u32 = 1 << 1;
    /// A process of a task that is over, or anyone once every task granted the secret is over
    /// (post_task_reuse).
    pub const KILL_AFTER_TASK: u32 = 1 << 2;

    /// [`super::WatchedInode::binding`]: no task owns the secret; it is never enforced.
    pub const UNBOUND: u32 = 0;
    /// At least one active task owns it; its owners are in `GRANTEES`.
    pub const ACTIVE: u32 = 1;
    /// Every task granted it is over.
    pub const FINISHED: u32 = 2;
    /// A decoy: no task owns it, and any task's process touching it is caught.
    pub const DECOY: u32 = 3;
    /// A task's process touching a decoy (decoy_touched), a bit of the files policy.
    pub const KILL_DECOY: u32 = 1 << 3;

    /// The opener, as the kernel sees it at the use.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Caller {
        /// In no task.
        Untasked,
        /// A member of a task that ended or expired.
        Finished,
        /// A member of an active task that owns the secret (a `GRANTEES` entry).
        Owner,
        /// A member of another active task.
        Other,
    }

    /// Whether a use by `caller` of a secret whose binding is `binding` is killed (or refused)
    /// under `policy`. Mirrors the engine's rule precedence: post-task first, then cross-task,
    /// then untasked.
    #[inline(always)]
    pub const fn kills(policy: u32, binding: u32, caller: Caller) -> bool {
        if binding == UNBOUND {
            return false;
        }
        if binding == DECOY {
            // Processes in no task (backups, indexers) are reported, never killed.
            return !matches!(caller, Caller::Untasked) && policy & KILL_DECOY != 0;
        }
        match caller {
            Caller::Finished => policy & KILL_AFTER_TASK != 0,
            Caller::Owner => false,
            _ if binding == FINISHED => policy & KILL_AFTER_TASK != 0,
            Caller::Untasked => policy & KILL_UNTASKED != 0,
            Caller::Other => policy & KILL_OTHER_TASK != 0,
        }
    }

    /// The maps the decision on a use of a watched inode reads: the same decision whether an
    /// eBPF program or the daemon's fanotify file guard makes it.
    pub trait Lookups {
        /// The task handle of process `tgid`, if the kernel recorded one.
        fn task_of(&self, tgid: u32) -> Option<u32>;
        /// Whether task handle `task` ended or expired (`FINISHED_TASKS`).
        fn finished(&self, task: u32) -> bool;
        /// Whether task handle `task` is an active owner of secret `secret` (`GRANTEES`).
        fn grantee(&self, secret: u32, task: u32) -> bool;
        /// The `ENFORCE` files bits.
        fn files_policy(&self) -> u32;
        /// Whether a membership could not be recorded (`FAIL_CLOSED` membership flag).
        fn membership_failed(&self) -> bool;
    }

    /// The task handle of process `tgid` (0: none, `UNKNOWN_TASK`: not recorded).
    #[inline(always)]
    pub fn caller_task(maps: &impl Lookups, tgid: u32) -> u32 {
        // Once a membership could not be recorded, a process the kernel knows in no task may be
        // that one: it is judged as a member of another task, never as a process in no task.
        let not_member = if maps.membership_failed() { super::UNKNOWN_TASK } else { 0 };
        maps.task_of(tgid).unwrap_or(not_member)
    }

    /// The caller's task handle (0: none, `UNKNOWN_TASK`: not recorded) and what it is to a bound
    /// secret `watched` (`None` for an unbound one, which is never enforced).
    #[inline(always)]
    pub fn caller(maps: &impl Lookups, tgid: u32, watched: super::WatchedInode) -> (u32, Option<Caller>) {
        let caller_task = caller_task(maps, tgid);
        if watched.binding == UNBOUND {
            return (caller_task, None);
        }
        let caller = if caller_task == 0 {
            Caller::Untasked
        } else if maps.finished(caller_task) {
            Caller::Finished
        } else if maps.grantee(watched.secret, caller_task) {
            Caller::Owner
        } else {
            Caller::Other
        };
        (caller_task, Some(caller))
    }

    /// The caller's task handle and whether its use of `watched` is killed or refused under the
    /// `ENFORCE` files bits: the one decision of every tier.
    #[inline(always)]
    pub fn secret_use_refused(maps: &impl Lookups, tgid: u32, watched: super::WatchedInode) -> (u32, bool) {
        let (caller_task, caller) = caller(maps, tgid, watched);
        (caller_task, caller.is_some_and(|caller| kills(maps.files_policy(), watched.binding, caller)))
    }

    /// Whether reaching into a secret holder of task `target` (0: none) by a process of task
    /// `caller` (0: none) is refused under the harvest bits (`KILL_OTHER_TASK`, `KILL_UNTASKED`).
    #[inline(always)]
    pub const fn refuses_harvest(policy: u32, target: u32, caller: u32) -> bool {
        if target == 0 {
            return false;
        }
        if caller == 0 {
            return policy & KILL_UNTASKED != 0;
        }
        caller != target && policy & KILL_OTHER_TASK != 0
    }
}

/// The task handle the kernel reports for a process whose membership it could not record
/// (`TASK_OF` was full when it forked): judged as a member of some other task.
pub const UNKNOWN_TASK: u32 = u32::MAX;

/// The maps a write to which can fail, as slots of `MAP_FAILURES` (kernel writes) and of the
/// daemon's own count of its failed writes. A failure is never silent: it is counted, raises a
/// critical finding, and where membership is at stake the kernel fails closed ([`fail_closed`]).
pub mod written {
    pub const TASK_OF: u32 = 0;
    pub const HOLDERS: u32 = 1;
    pub const WATCHED: u32 = 2;
    pub const GRANTEES: u32 = 3;
    pub const VERDICTS: u32 = 4;
    pub const ALLOWED_DESTINATIONS: u32 = 5;
    pub const SLOTS: u32 = 6;
    /// Map names, by slot.
    pub const NAMES: [&str; SLOTS as usize] =
        ["TASK_OF", "HOLDERS", "WATCHED", "GRANTEES", "VERDICTS", "ALLOWED_DESTINATIONS"];
}

/// `MAP_FAILURES` value, per CPU: failed writes to one map, and the process of the latest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFailures {
    pub count: u64,
    pub last_tgid: u32,
    pub _pad: u32,
}

/// Slots of the `FAIL_CLOSED` array, set to 1 by the kernel the first time a write that keeps
/// the model true fails. `HOLDINGS` stays set for the life of the sensors; the daemon clears
/// `MEMBERSHIP` once it has recorded every task process again.
pub mod fail_closed {
    /// A child's task membership could not be recorded: from then on a process the kernel knows
    /// in no task is judged as a member of another task ([`super::UNKNOWN_TASK`]), so a
    /// reuser never escapes by being forgotten.
    pub const MEMBERSHIP: u32 = 0;
    /// A process's holding of a secret could not be recorded: from then on the connects of
    /// every task member are reported, holders or not.
    pub const HOLDINGS: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// `WATCHED` value: which secret an inode is, and whether it is bound.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedInode {
    /// The daemon's secret id.
    pub secret: u32,
    /// One of [`policy::UNBOUND`], [`policy::ACTIVE`], [`policy::FINISHED`], [`policy::DECOY`].
    pub binding: u32,
    /// Nonzero: the daemon's fanotify file guard decides every open and read of this inode, so
    /// the syscall tracepoints leave it alone.
    pub guarded: u32,
    pub _pad: u32,
}

/// `GRANTEES` key: an active task (its kernel handle) that may use a secret. A secret has as many
/// entries as it has active owners, so several tasks can share one credential.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GranteeKey {
    pub secret: u32,
    pub task: u32,
}

/// Slots of the `ENFORCE` array, written by the daemon from the per-rule actions.
pub mod enforce {
    /// [`super::policy`] bits for reaching into a process that holds a secret (its
    /// `/proc/PID/environ` or `mem`, ptrace, `process_vm_readv`), refused by the security hooks
    /// and killed by the base tier's memory hooks: [`super::policy::refuses_harvest`] decides.
    pub const HARVEST: u32 = 0;
    /// Nonzero: a connect by a secret holder outside its task's allowed destinations is refused.
    pub const CONNECT: u32 = 1;
    /// [`super::policy`] bits for uses of bound secret files: [`super::policy::kills`] decides.
    pub const FILES: u32 = 2;
    /// Of the `FILES` bits, those whose rules kill rather than only deny: the fanotify file guard
    /// kills these openers before it refuses the open (the tracepoints always kill; the LSM
    /// hooks refuse, and the daemon kills).
    pub const FILES_KILL: u32 = 3;
    pub const SLOTS: u32 = 4;
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GranteeKey {}
    // SAFETY: repr(C), a u64 then two u32s: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::MapFailures {}
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
        let all = KILL_OTHER_TASK | KILL_UNTASKED | KILL_AFTER_TASK;
        for caller in [Caller::Untasked, Caller::Finished, Caller::Owner, Caller::Other] {
            assert!(!kills(all, UNBOUND, caller), "an unbound secret is never enforced");
            assert!(!kills(REPORT, ACTIVE, caller));
            assert!(!kills(REPORT, FINISHED, caller));
        }
        assert!(!kills(all, ACTIVE, Caller::Owner), "every active owner may use it");
        assert!(kills(KILL_OTHER_TASK, ACTIVE, Caller::Other));
        assert!(!kills(KILL_OTHER_TASK, ACTIVE, Caller::Untasked));
        assert!(kills(KILL_UNTASKED, ACTIVE, Caller::Untasked));
        assert!(!kills(KILL_UNTASKED, ACTIVE, Caller::Other));
        assert!(kills(KILL_AFTER_TASK, ACTIVE, Caller::Finished), "a left-over process of an ended task");
        assert!(!kills(KILL_OTHER_TASK, ACTIVE, Caller::Finished), "post-task reuse follows its own rule");
        assert!(kills(KILL_AFTER_TASK, FINISHED, Caller::Other), "every grantee is over: post-task reuse");
        assert!(kills(KILL_AFTER_TASK, FINISHED, Caller::Untasked));
        assert!(!kills(KILL_OTHER_TASK | KILL_UNTASKED, FINISHED, Caller::Other));
        assert!(kills(KILL_DECOY, DECOY, Caller::Other), "any task's process touching a decoy");
        assert!(kills(KILL_DECOY, DECOY, Caller::Finished));
        assert!(!kills(KILL_DECOY | KILL_UNTASKED, DECOY, Caller::Untasked), "a backup in no task is not killed");
        assert!(!kills(all, DECOY, Caller::Other), "only the decoy rule's actions kill at a decoy");
    }

    #[test]
    fn harvest_is_refused_from_outside_the_targets_task() {
        let (target, other, none) = (1, 2, 0);
        assert!(!refuses_harvest(KILL_OTHER_TASK | KILL_UNTASKED, none, other), "a target in no task");
        assert!(refuses_harvest(KILL_OTHER_TASK, target, other));
        assert!(!refuses_harvest(KILL_OTHER_TASK, target, target));
        assert!(!refuses_harvest(KILL_OTHER_TASK, target, none));
        assert!(refuses_harvest(KILL_UNTASKED, target, none));
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
