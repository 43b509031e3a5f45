//! Mirrors the engine's decisions into the kernel maps, so that hooks can act without asking.

use std::collections::HashMap;

use monitor_common::maps::policy;
use tracing::{debug, warn};

use super::tasks::TaskTable;
use crate::{
    actions::plan::ActionPlan,
    engine::{Destination, Effect, Rule, TaskId},
    event::{InodeId, SecretId},
    sensors::{destinations::AllowedNetwork, maps::KernelMaps},
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
            // The engine has not seen this root yet (its fork is still in the ring buffer, or the
            // daemon restarted): the kernel must know it now, or an open it makes before the
            // engine catches up would be judged as untasked in the kernel.
            Effect::TaskRootPending { task, pid } => {
                debug!(%task, pid, "task root not seen yet");
                if let Some(handle) = tasks.handle(task) {
                    report(maps.join_task(*pid, handle), "add a pending task root");
                }
                if let Some(process) = crate::procfs::exec_id(*pid) {
                    tasks.note_member(task, process);
                }
            }
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

/// What the LSM tier refuses beyond secret opens (the tracepoint tier ignores it): reaching into
/// a secret holder from outside its task when environ_harvest kills or denies, and a holder's
/// connect outside its task's allowlist when unexpected_destination does.
pub fn set_enforcement(maps: &mut KernelMaps, plan: &ActionPlan) {
    let harvest = if plan.kills(Rule::EnvironHarvest) {
        policy::KILL_OTHER_TASK | policy::KILL_UNTASKED
    } else {
        policy::REPORT
    };
    report(maps.set_enforcement(harvest, plan.kills(Rule::UnexpectedDestination)), "set the LSM tier's enforcement");
}

/// Gives the kernel a started (or restored) task's allowed destinations, for the LSM tier's
/// `socket_connect` hook.
pub fn allow_destinations(maps: &mut KernelMaps, handle: u32, allowed: Option<&[Destination]>) {
    let networks: Option<Vec<AllowedNetwork>> = allowed.map(|allowed| {
        allowed
            .iter()
            .map(|destination| AllowedNetwork {
                network: destination.network(),
                prefix_len: destination.prefix_len(),
                port: destination.port(),
            })
            .collect()
    });
    match maps.allow_destinations(handle, networks.as_deref()) {
        Ok(true) => warn!(handle, "a network lists more ports than the kernel keeps: the LSM tier allows it every port"),
        Ok(false) => {}
        Err(error) => warn!(%error, "cannot write a task's allowed destinations in the kernel map"),
    }
}

/// A task ended or expired: the files granted to it now kill every opener when the post-task
/// rule kills, its own left-over processes included.
pub fn end_bindings(task: &TaskId, maps: &mut KernelMaps, files: &mut WatchedFiles, tasks: &TaskTable, plan: &ActionPlan) {
    if let Some(handle) = tasks.handle(task) {
        report(maps.forget_destinations(handle), "drop a task's allowed destinations");
    }
    let (Some(handle), true) = (tasks.handle(task), plan.kills(Rule::PostTaskReuse)) else {
        return;
    };
    for secret in tasks.granted_files(task) {
        files.bind(maps, secret, handle, policy::KILL_ANY);
    }
}
