//! The maps the daemon writes for the kernel: watched inodes, task membership, secret holders,
//! kill verdicts, and what the kernel refuses or kills (harvests, connects outside a task's
//! allowlist).

use std::collections::{HashMap as StdHashMap, HashSet};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError};
use monitor_common::maps::{enforce, written, AllowedPorts, DestinationKey, GranteeKey, InodeKey, WatchedInode};

use super::{
    decode::kernel_dev,
    destinations::{self, AllowedNetwork},
    file_guard::Marks,
    syscall_hooks::SyscallHooks,
};
use crate::event::InodeId;

/// Typed handles on `WATCHED`, `GRANTEES`, `FINISHED_TASKS`, `TASK_OF`, `HOLDERS`, `VERDICTS`,
/// `VERDICT_COUNT`, `ENFORCE` and `ALLOWED_DESTINATIONS`.
pub struct KernelMaps {
    pub(super) watched: HashMap<MapData, InodeKey, WatchedInode>,
    pub(super) grantees: HashMap<MapData, GranteeKey, u32>,
    /// An LRU hash in the kernel: plain hash operations work on it.
    pub(super) finished_tasks: HashMap<MapData, u32, u32>,
    pub(super) task_of: HashMap<MapData, u32, u32>,
    pub(super) holders: HashMap<MapData, u32, u32>,
    pub(super) verdicts: HashMap<MapData, u32, u32>,
    pub(super) verdict_count: Array<MapData, u64>,
    /// Mirror of `VERDICTS`' keys, so that `VERDICT_COUNT` is exact.
    pub(super) pending: HashSet<u32>,
    pub(super) enforce: Array<MapData, u32>,
    pub(super) destinations: LpmTrie<MapData, DestinationKey, AllowedPorts>,
    /// The `ALLOWED_DESTINATIONS` keys of each task handle, to remove them when it ends.
    pub(super) destination_keys: StdHashMap<u32, Vec<(u32, DestinationKey)>>,
    /// The daemon's failed writes, by `written` slot.
    pub(super) failures: [u64; written::SLOTS as usize],
    /// The file guard's inode marks, on the base tier where it runs.
    pub(super) marks: Option<Marks>,
    /// Attached before a holding or a verdict is written, which need them.
    pub(super) syscall_hooks: Option<SyscallHooks>,
    pub(super) egress: super::egress::EgressMaps,
}

pub(super) fn inode_key(inode: InodeId) -> InodeKey {
    let InodeId { dev, ino } = inode;
    InodeKey { dev: kernel_dev(dev), _pad: 0, ino }
}

/// `ENOENT` from a delete means there was nothing to delete, which is what was wanted.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

impl KernelMaps {
    /// Counts `result` against map `slot` (`written`) if it failed.
    fn counted<T>(&mut self, slot: u32, result: Result<T, MapError>) -> Result<T, MapError> {
        if result.is_err() {
            self.failures[slot as usize] += 1;
        }
        result
    }

    /// The egress proxy's maps.
    pub fn egress(&mut self) -> &mut super::egress::EgressMaps {
        &mut self.egress
    }

    /// The daemon's failed writes per map, by `written` slot.
    pub fn write_failures(&self) -> [u64; written::SLOTS as usize] {
        self.failures
    }

    /// Watches `inode` as secret `secret`, with its `binding`
    /// (`monitor_common::maps::policy::{UNBOUND, ACTIVE, FINISHED, DECOY}`); an inode the file
    /// guard has marked is left to it by the syscall tracepoints.
    pub fn watch(&mut self, inode: InodeId, secret: u32, binding: u32) -> Result<(), MapError> {
        let guarded = match &self.marks {
            Some(marks) => marks.is_marked(inode),
            None => false, // no guard: the syscall programs are attached for good already
        };
        if self.marks.is_some() && !guarded {
            // The guard could not mark it: only the syscall programs watch this inode now.
            self.need_syscall_hooks(true);
        }
        let guarded = u32::from(guarded);
        let result = self.watched.insert(inode_key(inode), WatchedInode { secret, binding, guarded, _pad: 0 }, 0);
        self.counted(written::WATCHED, result)
    }

    /// Puts `inode`, found at `path`, under the file guard, where it runs; before [`Self::watch`],
    /// so that no use falls between the tracepoints and the guard. An inode that cannot be
    /// marked (counted) stays with the tracepoints.
    pub fn guard(&mut self, inode: InodeId, path: &std::path::Path) {
        if let Some(marks) = &mut self.marks {
            if let Err(error) = marks.mark(inode, path) {
                tracing::warn!(%error, path = %path.display(), "cannot guard a secret file; the tracepoints watch it");
            }
        }
    }

    /// Lets active task handle `task` use secret `secret` (or no longer, `allowed` false).
    pub fn set_grantee(&mut self, secret: u32, task: u32, allowed: bool) -> Result<(), MapError> {
        let key = GranteeKey { secret, task };
        match allowed {
            true => {
                let result = self.grantees.insert(key, 1, 0);
                self.counted(written::GRANTEES, result)
            }
            false => ignore_missing(self.grantees.remove(&key)),
        }
    }

    /// Task handle `task` ended or expired: its left-over processes' uses are post-task reuse.
    pub fn finish_task(&mut self, task: u32) -> Result<(), MapError> {
        self.finished_tasks.insert(task, 1, 0)
    }

    pub fn unwatch(&mut self, inode: InodeId) -> Result<(), MapError> {
        let result = ignore_missing(self.watched.remove(&inode_key(inode)));
        if let Some(marks) = &mut self.marks {
            marks.unmark(inode);
        }
        result
    }

    /// Makes process `tgid` a member of kernel task handle `task`; its future children inherit it.
    pub fn join_task(&mut self, tgid: u32, task: u32) -> Result<(), MapError> {
        let result = self.task_of.insert(tgid, task, 0);
        self.counted(written::TASK_OF, result)
    }

    /// `join_task` for a membership the kernel failed to record, written again once there may be
    /// room, and only where `tgid` has no entry (one there now is another process's): a failure
    /// here is the one already counted, not another.
    pub fn rejoin_task(&mut self, tgid: u32, task: u32) -> Result<(), MapError> {
        const BPF_NOEXIST: u64 = 1;
        self.task_of.insert(tgid, task, BPF_NOEXIST)
    }

    pub fn leave_task(&mut self, tgid: u32) -> Result<(), MapError> {
        ignore_missing(self.task_of.remove(&tgid))
    }

    /// Marks process `tgid` as holding a secret, so that its connects and reaches into it are
    /// seen.
    pub fn hold(&mut self, tgid: u32) -> Result<(), MapError> {
        let Self { syscall_hooks, holders, .. } = self;
        let result = match syscall_hooks {
            Some(hooks) => {
                let (result, attached) = hooks.record_holding(|| holders.insert(tgid, 1, 0));
                if let Err((program, error)) = attached {
                    tracing::warn!(program, %error, "cannot attach a program that watches secret holders");
                }
                result
            }
            None => holders.insert(tgid, 1, 0),
        };
        self.counted(written::HOLDERS, result)
    }

    /// Kills process `tgid` at its next syscall entry.
    pub fn add_verdict(&mut self, tgid: u32) -> Result<(), MapError> {
        self.need_syscall_hooks(false);
        let result = self.verdicts.insert(tgid, 1, 0);
        self.counted(written::VERDICTS, result)?;
        self.pending.insert(tgid);
        self.publish_verdict_count()
    }

    /// Forgets the verdict on `tgid` (it exited).
    pub fn clear_verdict(&mut self, tgid: u32) -> Result<(), MapError> {
        if !self.pending.remove(&tgid) {
            return Ok(());
        }
        ignore_missing(self.verdicts.remove(&tgid))?;
        self.publish_verdict_count()
    }

    fn publish_verdict_count(&mut self) -> Result<(), MapError> {
        self.verdict_count.set(0, self.pending.len() as u64, 0)
    }

    /// Every process the kernel counts as a member of task handle `task`, including children
    /// that left the process tree (double forks): membership is inherited in the kernel.
    pub fn members_of(&self, task: u32) -> Vec<u32> {
        self.task_of
            .iter()
            .filter_map(Result::ok)
            .filter(|&(_, member_task)| member_task == task)
            .map(|(tgid, _)| tgid)
            .collect()
    }

    /// Attaches the syscall programs before a write that needs them (for good when `pinned`). A
    /// failure is logged: the write still goes ahead, and the daemon still judges its events.
    fn need_syscall_hooks(&self, pinned: bool) {
        let Some(hooks) = &self.syscall_hooks else { return };
        let result = if pinned { hooks.pin() } else { hooks.ensure() };
        if let Err((program, error)) = result {
            tracing::warn!(program, %error, "cannot attach a syscall program");
        }
    }

    /// Whether no process holds a secret.
    pub fn holds_no_secret(&self) -> bool {
        self.holders.keys().next().is_none()
    }

    /// Whether a kill verdict waits for its process's next syscall.
    pub fn verdicts_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn is_holder(&self, tgid: u32) -> bool {
        self.holders.get(&tgid, 0).is_ok()
    }

    pub fn task_of(&self, tgid: u32) -> Option<u32> {
        self.task_of.get(&tgid, 0).ok()
    }

    /// What the kernel kills or refuses, as `monitor_common::maps::policy` bits: `files_policy`
    /// for uses of bound secret files (every tier), of which `files_kill` kill (file guard);
    /// `harvest_policy` for reaching into a secret holder of another task (the security hooks
    /// refuse it, the memory hooks kill it); and whether a holder's connect outside its task's
    /// allowlist is refused.
    pub fn set_enforcement(
        &mut self,
        files_policy: u32,
        files_kill: u32,
        harvest_policy: u32,
        refuse_connects: bool,
    ) -> Result<(), MapError> {
        self.enforce.set(enforce::FILES, files_policy, 0)?;
        self.enforce.set(enforce::FILES_KILL, files_kill, 0)?;
        self.enforce.set(enforce::HARVEST, harvest_policy, 0)?;
        self.enforce.set(enforce::CONNECT, u32::from(refuse_connects), 0)
    }

    /// Writes task handle `task`'s allowed destinations for the security hooks' `socket_connect`
    /// hook, replacing earlier ones: `None` (no list) allows everything; `Some` refuses every
    /// address no listed network holds (`Some(&[])`: everywhere). Returns whether a network had
    /// more ports than the kernel keeps, in which case it allows every port.
    pub fn allow_destinations(&mut self, task: u32, allowed: Option<&[AllowedNetwork]>) -> Result<bool, MapError> {
        self.forget_destinations(task)?;
        let Some(allowed) = allowed else {
            return Ok(false);
        };
        let (entries, too_many_ports) = destinations::entries(task, allowed);
        let keys = self.destination_keys.entry(task).or_default();
        for (prefix_len, data, ports) in entries {
            if let Err(error) = self.destinations.insert(&Key::new(prefix_len, data), ports, 0) {
                self.failures[written::ALLOWED_DESTINATIONS as usize] += 1;
                // Half a list would refuse destinations the task may reach: none is better.
                self.forget_destinations(task)?;
                return Err(error);
            }
            keys.push((prefix_len, data));
        }
        Ok(too_many_ports)
    }

    /// Drops task handle `task`'s allowed destinations (it ended).
    pub fn forget_destinations(&mut self, task: u32) -> Result<(), MapError> {
        for (prefix_len, data) in self.destination_keys.remove(&task).unwrap_or_default() {
            ignore_missing(self.destinations.remove(&Key::new(prefix_len, data)))?;
        }
        Ok(())
    }
}
