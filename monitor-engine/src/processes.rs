//! The process table: every process the engine knows, by exec id, with its task and the secrets
//! it holds.

use std::collections::{BTreeMap, HashMap};

use super::{
    finding::{Ancestor, Rule},
    rules::Subject,
    secrets::SecretKey,
    tasks::TaskRef,
};
use crate::event::ExecId;

/// How far parent walks go: enough for shell → agent → tool chains, and a bound should lost
/// events ever link parents into a loop.
const ANCESTRY_DEPTH: usize = 16;

/// How a process came to hold a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hold {
    /// From its parent at fork.
    Inherited,
    /// It opened the secret or started with it in its environment.
    Used,
}

#[derive(Debug)]
pub(super) struct Process {
    /// `None` when the process was first seen after its fork and exec (started before the engine).
    pub(super) parent: Option<ExecId>,
    /// The program of its latest exec.
    pub(super) filename: Option<String>,
    pub(super) task: Option<TaskRef>,
    pub(super) held: BTreeMap<SecretKey, Hold>,
    /// Rules that already fired for this process, with the time of the first firing, so that a
    /// loop yields one finding.
    fired: HashMap<(Rule, Subject), u64>,
    /// Children still in the table: an exited process stays while it has some, for ancestry.
    children: usize,
    exited: bool,
}

impl Process {
    /// The secret to name in a finding about this holder: one it used itself if any, else one it
    /// inherited.
    pub(super) fn held_secret(&self) -> Option<SecretKey> {
        let used = self.held.iter().find(|&(_, &hold)| hold == Hold::Used);
        used.or_else(|| self.held.iter().next()).map(|(&key, _)| key)
    }
}

/// What a use changed for the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HoldChange {
    /// The process had not used this secret before.
    pub(super) first_use: bool,
    /// The process held no secret before.
    pub(super) first_hold: bool,
}

#[derive(Debug, Default)]
pub(super) struct Processes {
    table: HashMap<ExecId, Process>,
    /// Live processes by pid, to resolve the pids of task roots and harvest targets.
    live: HashMap<u32, ExecId>,
}

impl Processes {
    pub(super) fn get(&self, id: ExecId) -> Option<&Process> {
        self.table.get(&id)
    }

    pub(super) fn task_of(&self, id: ExecId) -> Option<TaskRef> {
        self.get(id).and_then(|process| process.task)
    }

    pub(super) fn set_task(&mut self, id: ExecId, task: TaskRef) {
        if let Some(process) = self.table.get_mut(&id) {
            process.task = Some(task);
        }
    }

    pub(super) fn set_filename(&mut self, id: ExecId, filename: &str) {
        if let Some(process) = self.table.get_mut(&id) {
            process.filename = Some(filename.to_owned());
        }
    }

    pub(super) fn live_by_pid(&self, pid: u32) -> Option<ExecId> {
        self.live.get(&pid).copied()
    }

    /// The live processes that belong to a task, with it.
    pub(super) fn members(&self) -> impl Iterator<Item = (ExecId, TaskRef)> + '_ {
        self.live.values().filter_map(|&id| Some((id, self.task_of(id)?)))
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Adds a process seen for the first time. A parent in the table hands down its task and held
    /// secrets, as at fork. Another live process with the same pid must have exited unseen: it
    /// is removed, so that nothing passes to the newcomer. Returns whether the process holds a
    /// secret.
    pub(super) fn insert(&mut self, id: ExecId, parent: Option<ExecId>) -> bool {
        if let Some(previous) = self.live.insert(id.tgid, id).filter(|&previous| previous != id) {
            self.exit(previous);
        }
        let (task, held) = match parent.and_then(|parent| self.table.get_mut(&parent)) {
            Some(parent) => {
                parent.children += 1;
                (parent.task, parent.held.keys().map(|&key| (key, Hold::Inherited)).collect())
            }
            None => (None, BTreeMap::new()),
        };
        let holds = !held.is_empty();
        let process = Process { parent, filename: None, task, held, fired: HashMap::new(), children: 0, exited: false };
        self.table.insert(id, process);
        holds
    }

    /// Marks the process exited and drops it, and any exited ancestors it kept in the table.
    pub(super) fn exit(&mut self, id: ExecId) {
        let Some(process) = self.table.get_mut(&id) else { return };
        process.exited = true;
        if self.live.get(&id.tgid) == Some(&id) {
            self.live.remove(&id.tgid);
        }
        let mut next = Some(id);
        while let Some(id) = next.take() {
            let Some(process) = self.table.get(&id) else { break };
            if !process.exited || process.children > 0 {
                break;
            }
            let parent = process.parent;
            self.table.remove(&id);
            if let Some(parent_id) = parent {
                if let Some(parent) = self.table.get_mut(&parent_id) {
                    parent.children = parent.children.saturating_sub(1);
                    next = Some(parent_id);
                }
            }
        }
    }

    /// Records that the process used a secret.
    pub(super) fn hold(&mut self, id: ExecId, key: SecretKey) -> HoldChange {
        let Some(process) = self.table.get_mut(&id) else {
            return HoldChange { first_use: false, first_hold: false };
        };
        let first_hold = process.held.is_empty();
        let first_use = process.held.insert(key, Hold::Used) != Some(Hold::Used);
        HoldChange { first_use, first_hold }
    }

    /// Records that `rule` fires about `subject` at `at_ns`; `Err` with the time of the first
    /// firing when it already fired in this process's life (and, for a process not in the table,
    /// `at_ns`: it is never reported).
    pub(super) fn first_firing(&mut self, id: ExecId, rule: Rule, subject: Subject, at_ns: u64) -> Result<(), u64> {
        let Some(process) = self.table.get_mut(&id) else { return Err(at_ns) };
        match process.fired.entry((rule, subject)) {
            std::collections::hash_map::Entry::Occupied(first) => Err(*first.get()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(at_ns);
                Ok(())
            }
        }
    }

    /// The process and its parents, nearest first.
    pub(super) fn ancestry(&self, id: ExecId) -> Vec<Ancestor> {
        let mut ancestry = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next.filter(|_| ancestry.len() < ANCESTRY_DEPTH) {
            let Some(process) = self.get(id) else { break };
            ancestry.push(Ancestor { process: id, filename: process.filename.clone() });
            next = process.parent;
        }
        ancestry
    }

    /// Live descendants of `root`, in exec id order.
    pub(super) fn descendants(&self, root: ExecId) -> Vec<ExecId> {
        let mut descendants: Vec<ExecId> = self
            .table
            .iter()
            .filter(|(&id, process)| !process.exited && id != root && self.has_ancestor(id, root))
            .map(|(&id, _)| id)
            .collect();
        descendants.sort_unstable();
        descendants
    }

    fn has_ancestor(&self, id: ExecId, ancestor: ExecId) -> bool {
        self.ancestry(id).iter().skip(1).any(|entry| entry.process == ancestor)
    }
}
