//! The daemon's side of tasks: kernel handles, cgroups, granted files and members, as listed by
//! the API and persisted across restarts. The engine holds the rules' side.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::control::TaskRequest;
use crate::{
    engine::{TaskId, TaskSpec, TaskState},
    event::{ExecId, SecretId},
};

/// One run of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// The kernel's number for this run (`TASK_OF` values, `WATCHED` owners); never reused.
    pub handle: u32,
    pub state: TaskState,
    /// What was asked for.
    pub request: TaskRequest,
    /// What the engine was given: secrets resolved to ids and fingerprints, hosts to addresses.
    pub spec: TaskSpec,
    /// Secret files granted, by id.
    pub granted_files: Vec<SecretId>,
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
    next_handle: u32,
}

impl TaskTable {
    /// Rebuilds the table from persisted entries.
    pub fn restore(entries: Vec<TaskEntry>) -> Self {
        let next_handle = entries.iter().map(|entry| entry.handle).max().unwrap_or(0);
        Self { entries: entries.into_iter().map(|entry| (entry.spec.id.clone(), entry)).collect(), next_handle }
    }

    pub fn next_handle(&mut self) -> u32 {
        self.next_handle += 1;
        self.next_handle
    }

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

    pub fn handle(&self, id: &TaskId) -> Option<u32> {
        self.get(id).map(|entry| entry.handle)
    }

    pub fn cgroup(&self, id: &TaskId) -> Option<&Path> {
        self.get(id)?.request.cgroup.as_deref().map(Path::new)
    }

    pub fn granted_files(&self, id: &TaskId) -> Vec<SecretId> {
        self.get(id).map(|entry| entry.granted_files.clone()).unwrap_or_default()
    }

    pub fn note_member(&mut self, id: &TaskId, process: ExecId) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.members.insert(process);
        }
    }

    /// Moves an active task to `state`; returns false when it was not active.
    pub fn finish(&mut self, id: &TaskId, state: TaskState) -> bool {
        match self.entries.get_mut(id) {
            Some(entry) if entry.state == TaskState::Active => {
                entry.state = state;
                true
            }
            _ => false,
        }
    }

    pub fn mark_expired(&mut self, id: &TaskId) {
        self.finish(id, TaskState::Expired);
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
