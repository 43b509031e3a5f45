//! The daemon's view of tasks, as the API lists them and the registry persists them: what was
//! asked for, and what the engine decided (handle, state, members), learnt from its effects
//! only. The engine owns tasks; nothing here decides.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::control::TaskRequest;
use crate::{
    engine::{TaskId, TaskSpec, TaskState},
    event::ExecId,
};

/// One run of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// The kernel's number for this run (`TASK_OF` values, `GRANTEES` keys), issued by the
    /// engine; never reused.
    pub handle: u32,
    pub state: TaskState,
    /// What was asked for.
    pub request: TaskRequest,
    /// What the engine was given: secrets resolved to ids and fingerprints, hosts to addresses.
    pub spec: TaskSpec,
    /// Registration time, `CLOCK_BOOTTIME` ns and Unix seconds.
    pub started_ns: u64,
    pub started_unix: u64,
    /// Processes known to have been members (kept for restarts; exited ones are harmless).
    pub members: BTreeSet<ExecId>,
}

#[derive(Debug, Default)]
pub struct TaskTable {
    /// Latest run of each task id.
    entries: BTreeMap<TaskId, TaskEntry>,
}

impl TaskTable {
    /// Records a request about to be given to the engine (its handle comes with the engine's
    /// `TaskStarted`), or a persisted entry about to be restored.
    pub fn insert(&mut self, entry: TaskEntry) {
        self.entries.insert(entry.spec.id.clone(), entry);
    }

    pub fn remove(&mut self, id: &TaskId) {
        self.entries.remove(id);
    }

    pub fn get(&self, id: &TaskId) -> Option<&TaskEntry> {
        self.entries.get(id)
    }

    pub fn is_active(&self, id: &TaskId) -> bool {
        self.get(id).is_some_and(|entry| entry.state == TaskState::Active)
    }

    /// The cgroup of the task lifetime with kernel handle `handle`, if it was registered with one.
    pub fn cgroup(&self, id: &TaskId, handle: u32) -> Option<&Path> {
        let entry = self.get(id).filter(|entry| entry.handle == handle)?;
        entry.request.cgroup.as_deref().map(Path::new)
    }

    /// The engine started (or restored) the task under `handle`.
    pub(super) fn started(&mut self, id: &TaskId, handle: u32) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.handle = handle;
            entry.state = TaskState::Active;
        }
    }

    pub(super) fn note_member(&mut self, id: &TaskId, process: ExecId) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.members.insert(process);
        }
    }

    /// The engine ended or expired the task.
    pub(super) fn finish(&mut self, id: &TaskId, state: TaskState) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.state = state;
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &TaskEntry> {
        self.entries.values()
    }

    /// Tasks per state.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::from([("active", 0), ("ended", 0), ("expired", 0)]);
        for entry in self.entries.values() {
            let name = match entry.state {
                TaskState::Active => "active",
                TaskState::Ended => "ended",
                TaskState::Expired => "expired",
            };
            *counts.entry(name).or_default() += 1;
        }
        counts
    }
}
