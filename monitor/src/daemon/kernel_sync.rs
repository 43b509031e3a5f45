//! Mirrors the engine's decisions into the kernel maps, so that hooks can act without asking.

use std::collections::HashMap;

use monitor_common::maps::policy;
use tracing::{debug, warn};

use super::tasks::TaskTable;
use crate::{
    actions::plan::ActionPlan,
    engine::{Effect, Rule, TaskId},
    event::{InodeId, SecretId},
    sensors::maps::KernelMaps,
};

/// Who each watched secret file is bound to, and its inodes, as the kernel must see them.
#[derive(Debug, Default)]
pub struct WatchedFiles {
    inodes: HashMap<SecretId, Vec<InodeId>>,
    owner: HashMap<SecretId, (u32, u32)>,
    /// Where each secret was found, for the `resolved_path` of its opens.
    paths: HashMap<SecretId, String>,
}

impl WatchedFiles {
    pub fn inodes(&self, secret: SecretId) -> &[InodeId] {
        self.inodes.get(&secret).map_or(&[], Vec::as_slice)
    }

    pub fn count(&self) -> usize {
        self.inodes.values().map(Vec::len).sum()
    }

    pub fn path(&self, secret: SecretId) -> Option<&str> {
        self.paths.get(&secret).map(String::as_str)
    }

    /// Starts watching `inode`, found at `path`, as `secret`, with the secret's current binding.
    pub fn add(&mut self, maps: &mut KernelMaps, secret: SecretId, inode: InodeId, path: String) {
        self.paths.insert(secret, path);
        let (owner, rule_policy) = self.owner.get(&secret).copied().unwrap_or((0, policy::REPORT));
        report(maps.watch(inode, secret.0, owner, rule_policy), "watch a secret inode");
        self.inodes.entry(secret).or_default().push(inode);
    }

    pub fn remove(&mut self, maps: &mut KernelMaps, secret: SecretId, inode: InodeId) {
        report(maps.unwatch(inode), "unwatch a secret inode");
        if let Some(inodes) = self.inodes.get_mut(&secret) {
            inodes.retain(|&known| known != inode);
        }
    }

    /// Binds `secret` to kernel task `owner` (0: unbound) with `rule_policy` on every inode.
    fn bind(&mut self, maps: &mut KernelMaps, secret: SecretId, owner: u32, rule_policy: u32) {
        self.owner.insert(secret, (owner, rule_policy));
        for &inode in self.inodes(secret) {
            report(maps.watch(inode, secret.0, owner, rule_policy), "rebind a secret inode");
        }
    }
}

fn report(result: Result<(), aya::maps::MapError>, what: &str) {
    if let Err(error) = result {
        warn!(%error, "cannot {what} in the kernel map");
    }
}

/// The kernel policy for a secret bound to an active task: kill other tasks' openers when the
/// cross-task rule kills, untasked ones when the untasked rule kills.
fn active_policy(plan: &ActionPlan) -> u32 {
    let mut bits = policy::REPORT;
    if plan.kills(Rule::CrossTaskReuse) {
        bits |= policy::KILL_OTHER_TASK;
    }
    if plan.kills(Rule::UntaskedAccess) {
        bits |= policy::KILL_UNTASKED;
    }
    bits
}

/// Applies the engine's effects to the kernel maps.
pub fn apply(effects: &[Effect], maps: &mut KernelMaps, files: &mut WatchedFiles, tasks: &mut TaskTable, plan: &ActionPlan) {
    for effect in effects {
        match effect {
            Effect::TaskJoined { task, process } => {
                if let Some(handle) = tasks.handle(task) {
                    report(maps.join_task(process.tgid, handle), "add a task member");
                }
                tasks.note_member(task, *process);
            }
            Effect::TaskRootPending { task, pid } => debug!(%task, pid, "task root not seen yet"),
            Effect::TaskExpired { task } => {
                tasks.mark_expired(task);
                end_bindings(task, maps, files, tasks, plan);
            }
            Effect::SecretBound { secret, task, binding: _ } => {
                if let (Some(id), Some(handle)) = (secret.id, tasks.handle(task)) {
                    files.bind(maps, id, handle, active_policy(plan));
                }
            }
            Effect::SecretReleased { secret, task: _ } => {
                if let Some(id) = secret.id {
                    files.bind(maps, id, 0, policy::REPORT);
                }
            }
            Effect::ProcessHolds { process } => report(maps.hold(process.tgid), "mark a secret holder"),
            Effect::Rejected(rejection) => warn!(%rejection, "engine rejected an input"),
        }
    }
}

/// A task ended or expired: the files granted to it now kill every opener when the post-task
/// rule kills, its own left-over processes included.
pub fn end_bindings(task: &TaskId, maps: &mut KernelMaps, files: &mut WatchedFiles, tasks: &TaskTable, plan: &ActionPlan) {
    let (Some(handle), true) = (tasks.handle(task), plan.kills(Rule::PostTaskReuse)) else {
        return;
    };
    for secret in tasks.granted_files(task) {
        files.bind(maps, secret, handle, policy::KILL_ANY);
    }
}
