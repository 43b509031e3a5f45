//! Applies the engine's effects: the one place where the kernel maps follow the engine's state,
//! and where the daemon's task view learns each task's handle, state and members.

use std::collections::HashMap;

use monitor_common::maps::policy;
use tracing::{debug, info, warn};

use super::tasks::TaskTable;
use crate::{
    actions::plan::ActionPlan,
    engine::{Destination, Effect, Rule},
    event::{ExecId, InodeId, SecretId},
    procfs,
    sensors::{destinations::AllowedNetwork, maps::KernelMaps},
};

/// The watched secret files as the kernel sees them: their inodes and binding.
#[derive(Debug, Default)]
pub struct WatchedFiles {
    inodes: HashMap<SecretId, Vec<InodeId>>,
    /// What the engine last decided for each secret (`Effect::FileBinding`), so that an inode
    /// watched later (a file replaced by `mv`) gets it too.
    bindings: HashMap<SecretId, (u32, Vec<u32>)>,
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
    fn add(&mut self, maps: &mut KernelMaps, secret: SecretId, inode: InodeId, path: String) {
        maps.guard(inode, std::path::Path::new(&path));
        self.paths.insert(secret, path);
        let binding = self.bindings.get(&secret).map_or(policy::UNBOUND, |(binding, _)| *binding);
        report(maps.watch(inode, secret.0, binding), "watch a secret inode");
        self.inodes.entry(secret).or_default().push(inode);
    }

    fn remove(&mut self, maps: &mut KernelMaps, secret: SecretId, inode: InodeId) {
        report(maps.unwatch(inode), "unwatch a secret inode");
        if let Some(inodes) = self.inodes.get_mut(&secret) {
            inodes.retain(|&known| known != inode);
        }
    }

    /// Gives the kernel `secret`'s new binding and owners. New owners are admitted before the
    /// binding changes and former ones dropped after, so no owner is ever refused in between.
    /// An owner `GRANTEES` has no room for would be refused its own secret: the secret is then
    /// left unbound in the kernel (the daemon still judges and kills after the open) until a
    /// later binding admits every owner.
    fn bind(&mut self, maps: &mut KernelMaps, secret: SecretId, binding: u32, grantees: Vec<u32>) {
        let (_, before) = self.bindings.remove(&secret).unwrap_or((policy::UNBOUND, Vec::new()));
        let mut admitted = Vec::with_capacity(grantees.len());
        for &task in &grantees {
            if before.contains(&task) {
                admitted.push(task);
                continue;
            }
            match maps.set_grantee(secret.0, task, true) {
                Ok(()) => admitted.push(task),
                Err(error) => warn!(%error, secret = secret.0, task, "cannot add a secret's owner in the kernel map"),
            }
        }
        let binding = if admitted.len() == grantees.len() { binding } else { policy::UNBOUND };
        for &inode in self.inodes(secret) {
            report(maps.watch(inode, secret.0, binding), "rebind a secret inode");
        }
        for &task in before.iter().filter(|task| !grantees.contains(task)) {
            report(maps.set_grantee(secret.0, task, false), "drop a secret's owner");
        }
        self.bindings.insert(secret, (binding, admitted));
    }
}

fn report(result: Result<(), aya::maps::MapError>, what: &str) {
    if let Err(error) = result {
        warn!(%error, "cannot {what} in the kernel map");
    }
}

/// Applies the engine's effects to the kernel maps and the task view.
pub fn apply(effects: &[Effect], maps: &mut KernelMaps, files: &mut WatchedFiles, tasks: &mut TaskTable) {
    for effect in effects {
        match effect {
            Effect::TaskStarted { task, handle, allowed, egress } => {
                tasks.started(task, *handle);
                allow_destinations(maps, *handle, allowed.as_deref());
                if *egress {
                    report(maps.egress().proxy_task(*handle), "send a task's connects through the egress proxy");
                }
            }
            Effect::TaskJoined { task, handle, process } => {
                report(maps.join_task(process.tgid, *handle), "add a task member");
                tasks.note_member(task, *process);
            }
            // The engine has not seen this root yet (its fork is still in the ring buffer, or the
            // daemon restarted): the kernel must know it now, or an open it makes before the
            // engine catches up would be judged as untasked in the kernel.
            Effect::TaskRootPending { task, handle, pid } => {
                debug!(%task, pid, "task root not seen yet");
                report(maps.join_task(*pid, *handle), "add a pending task root");
                if let Some(process) = procfs::exec_id(*pid) {
                    tasks.note_member(task, process);
                }
            }
            Effect::TaskFinished { task, handle, state } => {
                tasks.finish(task, *state);
                report(maps.finish_task(*handle), "mark a task as over");
                report(maps.forget_destinations(*handle), "drop a task's allowed destinations");
            }
            Effect::SecretBound { secret, task, binding } => {
                info!(secret = %secret.name, %task, ?binding, "secret bound");
            }
            Effect::SecretReleased { secret, task } => info!(secret = %secret.name, %task, "secret released"),
            Effect::InodeWatched { secret, inode, path } => files.add(maps, *secret, *inode, path.clone()),
            Effect::InodeUnwatched { secret, inode } => files.remove(maps, *secret, *inode),
            Effect::FileBinding { secret, binding, grantees } => files.bind(maps, *secret, *binding, grantees.clone()),
            Effect::ProcessHolds { process } => report(maps.hold(process.tgid), "mark a secret holder"),
            Effect::Rejected(rejection) => warn!(%rejection, "engine rejected an input"),
        }
    }
}

/// What [`record_memberships`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Every task process the engine knows was in the kernel's map already.
    All,
    /// Some were missing and are written now: a process one of them forked before it was
    /// written is missing too, and its fork may not have reached the engine yet.
    Written,
    /// The map is still full.
    Full,
}

/// Records in the kernel every task process the engine knows (`memberships`: the process, its
/// task's handle) that the kernel's membership map lacks, after a write to it failed.
pub fn record_memberships(maps: &mut KernelMaps, memberships: impl Iterator<Item = (ExecId, u32)>) -> Recorded {
    let mut recorded = Recorded::All;
    for (process, handle) in memberships {
        // An entry there (its own, or a newer process's with its pid) is left as it is; a
        // process gone needs none.
        if maps.task_of(process.tgid).is_some() || !procfs::is_alive(process) {
            continue;
        }
        if maps.rejoin_task(process.tgid, handle).is_err() {
            return Recorded::Full;
        }
        recorded = Recorded::Written;
        // Gone while it was written: its exit cleared nothing, and the entry would pass its task
        // to the next process with its pid.
        if !procfs::is_alive(process) && maps.task_of(process.tgid) == Some(handle) {
            report(maps.leave_task(process.tgid), "drop the membership of a process gone");
        }
    }
    recorded
}

/// What the kernel kills or refuses, from the per-rule actions: uses of bound secret files;
/// reaching into a secret holder from outside its task when environ_harvest kills or denies
/// (refused by the security hooks, killed by the base tier's memory hooks); and a holder's connect
/// outside its task's allowlist when unexpected_destination does.
pub fn set_enforcement(maps: &mut KernelMaps, plan: &ActionPlan) {
    let files_bits = |applies: &dyn Fn(Rule) -> bool| {
        let bit = |rule, bit| if applies(rule) { bit } else { policy::REPORT };
        bit(Rule::CrossTaskReuse, policy::KILL_OTHER_TASK)
            | bit(Rule::UntaskedAccess, policy::KILL_UNTASKED)
            | bit(Rule::PostTaskReuse, policy::KILL_AFTER_TASK)
            | bit(Rule::DecoyTouched, policy::KILL_DECOY)
    };
    let files = files_bits(&|rule| plan.kills(rule));
    let files_kill = files_bits(&|rule| plan.kills_process(rule));
    let harvest =
        if plan.kills(Rule::EnvironHarvest) { policy::KILL_OTHER_TASK | policy::KILL_UNTASKED } else { policy::REPORT };
    report(
        maps.set_enforcement(files, files_kill, harvest, plan.kills(Rule::UnexpectedDestination)),
        "set what the kernel enforces",
    );
}

/// Gives the kernel a started (or restored) task's allowed destinations, for the security hooks'
/// `socket_connect` hook.
fn allow_destinations(maps: &mut KernelMaps, handle: u32, allowed: Option<&[Destination]>) {
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
        Ok(true) => warn!(handle, "a network lists more ports than the kernel keeps: the security hooks allow it every port"),
        Ok(false) => {}
        Err(error) => warn!(%error, "cannot write a task's allowed destinations in the kernel map"),
    }
}
