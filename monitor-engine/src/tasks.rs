//! Tasks: units of agent work, their lifetime and what they were granted.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{destinations::Destination, effect::Rejection};
use crate::event::{Fingerprint, SecretId};

/// A task's name, chosen by whoever registered it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task as registered through the task API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: TaskId,
    /// Who registered the task.
    pub owner: String,
    /// Pids of the task's first processes; their descendants join the task.
    #[serde(default)]
    pub roots: Vec<u32>,
    /// The task's own cgroup, when it has one (used to kill the whole task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub granted: Vec<Grant>,
    /// `None`: processes holding a secret may connect anywhere. `Some(empty)`: nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Destination>>,
    /// The `HOST:PORT` entries of the allow list as named (lower case): a TLS request's `Host`
    /// is compared with them, its addresses being unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ns: Option<u64>,
    /// Its processes' HTTP(S) connects go through the egress proxy, for their whole lives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress: bool,
}

/// A secret a task may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Grant {
    /// A watched secret file.
    File { secret: SecretId },
    /// An environment variable; without a fingerprint, the first value the task's processes are
    /// seen with under this name.
    Env {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
    },
    /// A token handed out by a broker.
    Token { fingerprint: Fingerprint, label: String },
    /// A fake credential planted in the task's environment: the task may carry it; any other
    /// process using it is decoy_touched.
    Decoy { fingerprint: Fingerprint, label: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Active,
    Ended,
    /// Its time to live ran out before it ended.
    Expired,
}

/// What a task lifetime starts with.
pub(super) struct NewTask<'a> {
    pub(super) id: &'a TaskId,
    pub(super) owner: &'a str,
    pub(super) at_ns: u64,
    pub(super) ttl_ns: Option<u64>,
    pub(super) allowed: Option<Vec<Destination>>,
    pub(super) allowed_hosts: Vec<String>,
    /// Names of `Grant::Env` without a fingerprint.
    pub(super) env_grants: Vec<String>,
}

/// One task's lifetime: a task id started again after it ended is a new `TaskRef`, so processes
/// left over from the first run stay with the first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TaskRef(usize);

/// Where a process stands, from the rules' point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Membership {
    Untasked,
    Active(TaskRef),
    /// Its task ended or expired.
    Finished(TaskRef),
    /// The kernel could not record its task (`TASK_OF` was full when it forked): a member of some
    /// task, never taken for a process in no task.
    Unknown,
}

#[derive(Debug)]
pub(super) struct Task {
    pub(super) id: TaskId,
    /// The kernel's number for this lifetime (`TASK_OF` values, `GRANTEES` keys): never reused,
    /// across restarts included.
    pub(super) handle: u32,
    /// Who the task is for, as registered.
    pub(super) owner: String,
    pub(super) state: TaskState,
    pub(super) allowed: Option<Vec<Destination>>,
    /// See [`TaskSpec::allowed_hosts`].
    pub(super) allowed_hosts: Vec<String>,
    deadline_ns: Option<u64>,
    /// Names of `Grant::Env` without a fingerprint, not yet seen in a member's environment.
    env_grants: Vec<String>,
}

/// Tasks per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub active: usize,
    pub ended: usize,
    pub expired: usize,
}

#[derive(Debug)]
pub(super) struct Tasks {
    /// Every task lifetime, indexed by `TaskRef`; kept so that findings about left-over processes
    /// can still name their task.
    all: Vec<Task>,
    /// The latest lifetime of each id.
    by_id: HashMap<TaskId, TaskRef>,
    /// Active tasks with a time to live, by deadline.
    deadlines: BTreeSet<(u64, TaskRef)>,
    /// Roots announced before their process was seen, by pid.
    pending_roots: HashMap<u32, TaskRef>,
    by_handle: HashMap<u32, TaskRef>,
    /// Every handle below this one was issued, in this run or an earlier one.
    next_handle: u32,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            all: Vec::new(),
            by_id: HashMap::new(),
            deadlines: BTreeSet::new(),
            pending_roots: HashMap::new(),
            by_handle: HashMap::new(),
            // 0 means "no task" in the kernel maps.
            next_handle: 1,
        }
    }
}

impl Tasks {
    /// Starts a lifetime of task `id` under a new handle, or under `handle` when it is restored
    /// from an earlier run of the daemon.
    pub(super) fn start(&mut self, new: NewTask<'_>, handle: Option<u32>) -> Result<TaskRef, Rejection> {
        let NewTask { id, owner, at_ns, ttl_ns, allowed, allowed_hosts, env_grants } = new;
        if self.find(id).is_some_and(|task| self.is_active(task)) {
            return Err(Rejection::TaskAlreadyActive { task: id.clone() });
        }
        let handle = match handle {
            Some(0) => return Err(Rejection::HandleInUse { task: id.clone(), handle: 0 }),
            Some(handle) if self.by_handle.contains_key(&handle) => {
                return Err(Rejection::HandleInUse { task: id.clone(), handle })
            }
            Some(handle) => handle,
            None => self.next_handle,
        };
        self.issued(handle.saturating_add(1));
        let task = TaskRef(self.all.len());
        let deadline_ns = ttl_ns.map(|ttl| at_ns.saturating_add(ttl));
        if let Some(deadline) = deadline_ns {
            self.deadlines.insert((deadline, task));
        }
        let owner = owner.to_owned();
        let state = TaskState::Active;
        self.all.push(Task { id: id.clone(), handle, owner, state, allowed, allowed_hosts, deadline_ns, env_grants });
        self.by_id.insert(id.clone(), task);
        self.by_handle.insert(handle, task);
        Ok(task)
    }

    /// Records that every handle below `next` was issued (by an earlier run of the daemon).
    pub(super) fn issued(&mut self, next: u32) {
        self.next_handle = self.next_handle.max(next);
    }

    /// The handle the next task will get; every lower one was issued.
    pub(super) fn next_handle(&self) -> u32 {
        self.next_handle
    }

    pub(super) fn by_handle(&self, handle: u32) -> Option<TaskRef> {
        self.by_handle.get(&handle).copied()
    }

    /// Ends the latest lifetime of `id`; returns it if it was active. Ending an expired or already
    /// ended task is not an error: `task exec` ends its task when the command exits, whatever
    /// happened before.
    pub(super) fn end(&mut self, id: &TaskId) -> Result<Option<TaskRef>, Rejection> {
        let task = self.find(id).ok_or_else(|| Rejection::UnknownTask { task: id.clone() })?;
        if !self.is_active(task) {
            return Ok(None);
        }
        self.finish(task, TaskState::Ended);
        Ok(Some(task))
    }

    /// Ends a lifetime restored in `state` (ended or expired) from an earlier run.
    pub(super) fn restore_finished(&mut self, task: TaskRef, state: TaskState) {
        self.finish(task, state);
    }

    /// Expires every active task whose deadline is at or before `now_ns`, in deadline order.
    pub(super) fn expire_due(&mut self, now_ns: u64) -> Vec<TaskRef> {
        let mut expired = Vec::new();
        while let Some(&(deadline, task)) = self.deadlines.first() {
            if deadline > now_ns {
                break;
            }
            self.finish(task, TaskState::Expired);
            expired.push(task);
        }
        expired
    }

    fn finish(&mut self, task: TaskRef, state: TaskState) {
        debug_assert_ne!(state, TaskState::Active);
        let record = &mut self.all[task.0];
        record.state = state;
        if let Some(deadline) = record.deadline_ns {
            self.deadlines.remove(&(deadline, task));
        }
        self.pending_roots.retain(|_, pending| *pending != task);
    }

    pub(super) fn get(&self, task: TaskRef) -> &Task {
        &self.all[task.0]
    }

    pub(super) fn find(&self, id: &TaskId) -> Option<TaskRef> {
        self.by_id.get(id).copied()
    }

    pub(super) fn is_active(&self, task: TaskRef) -> bool {
        self.get(task).state == TaskState::Active
    }

    pub(super) fn membership(&self, task: Option<TaskRef>) -> Membership {
        match task {
            None => Membership::Untasked,
            Some(task) if self.is_active(task) => Membership::Active(task),
            Some(task) => Membership::Finished(task),
        }
    }

    /// Remembers a root whose process the engine has not seen yet.
    pub(super) fn add_pending_root(&mut self, pid: u32, task: TaskRef) -> Result<(), Rejection> {
        match self.pending_roots.get(&pid) {
            Some(&other) if other != task => Err(Rejection::RootInOtherTask {
                task: self.get(task).id.clone(),
                pid,
                other: self.get(other).id.clone(),
            }),
            _ => {
                self.pending_roots.insert(pid, task);
                Ok(())
            }
        }
    }

    /// The active task waiting for a process with this pid, if any; it waits no longer.
    pub(super) fn take_pending_root(&mut self, pid: u32) -> Option<TaskRef> {
        self.pending_roots.remove(&pid)
    }

    pub(super) fn has_env_grant(&self, task: TaskRef, name: &str) -> bool {
        self.get(task).env_grants.iter().any(|granted| granted == name)
    }

    pub(super) fn remove_env_grant(&mut self, task: TaskRef, name: &str) {
        self.all[task.0].env_grants.retain(|granted| granted != name);
    }

    pub(super) fn counts(&self) -> TaskCounts {
        // Only the latest lifetime of each id counts, as `status` lists tasks by id.
        self.by_id.values().fold(TaskCounts::default(), |mut counts, &task| {
            match self.get(task).state {
                TaskState::Active => counts.active += 1,
                TaskState::Ended => counts.ended += 1,
                TaskState::Expired => counts.expired += 1,
            }
            counts
        })
    }
}
