//! What the daemon must mirror into kernel maps or log after an input, besides findings.

use serde::Serialize;

use super::{
    destinations::Destination,
    finding::SecretLabel,
    secrets::BindingKind,
    tasks::{TaskId, TaskState},
};
use crate::event::{ExecId, InodeId, SecretId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A task's lifetime began (or was restored after a restart) under kernel handle `handle`,
    /// with its allowed destinations (`None`: unrestricted), its egress through the proxy or not.
    TaskStarted {
        task: TaskId,
        handle: u32,
        allowed: Option<Vec<Destination>>,
        egress: bool,
    },
    /// A process became a member of a task as a root, or as a descendant that existed when the
    /// task started; processes forked later inherit membership in the kernel as here.
    TaskJoined {
        task: TaskId,
        handle: u32,
        process: ExecId,
    },
    /// A root pid the engine has not seen yet; it joins when its process appears, and the kernel
    /// must count it as a member now.
    TaskRootPending {
        task: TaskId,
        handle: u32,
        pid: u32,
    },
    /// The task ended, or its time to live ran out (`state`); its auto bindings are released
    /// (separate effects).
    TaskFinished {
        task: TaskId,
        handle: u32,
        state: TaskState,
    },
    SecretBound {
        secret: SecretLabel,
        task: TaskId,
        binding: BindingKind,
    },
    /// An auto binding ended with its task, or gave way to an explicit grant.
    SecretReleased {
        secret: SecretLabel,
        task: TaskId,
    },
    /// The kernel must watch `inode`, found at `path`, as secret file `secret`.
    InodeWatched {
        secret: SecretId,
        inode: InodeId,
        path: String,
    },
    /// `inode` is no longer secret `secret` (replaced, or its last link gone).
    InodeUnwatched {
        secret: SecretId,
        inode: InodeId,
    },
    /// What the kernel must know of a watched secret file after its owners changed: its binding
    /// (`monitor_common::maps::policy::{UNBOUND, ACTIVE, FINISHED}`) and the handles of the
    /// active tasks that own it.
    FileBinding {
        secret: SecretId,
        binding: u32,
        grantees: Vec<u32>,
    },
    /// The process now holds a secret: the kernel should report its connects.
    ProcessHolds {
        process: ExecId,
    },
    /// An input the engine could not apply; the rest of the input was applied.
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rejection", rename_all = "snake_case")]
pub enum Rejection {
    #[error("task {task} is already active")]
    TaskAlreadyActive { task: TaskId },
    #[error("task {task} is not known")]
    UnknownTask { task: TaskId },
    #[error("pid {pid} cannot be a root of task {task}: it belongs to active task {other}")]
    RootInOtherTask { task: TaskId, pid: u32, other: TaskId },
    #[error("task {task} cannot be restored with kernel handle {handle}: it is taken")]
    HandleInUse { task: TaskId, handle: u32 },
}
