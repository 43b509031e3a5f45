//! What the daemon must mirror into kernel maps or log after an input, besides findings.

use serde::Serialize;

use super::{finding::SecretLabel, secrets::BindingKind, tasks::TaskId};
use crate::event::ExecId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A process became a member of a task as a root, or as a descendant that existed when the
    /// task started; processes forked later inherit membership in the kernel as here.
    TaskJoined {
        task: TaskId,
        process: ExecId,
    },
    /// A root pid the engine has not seen yet; it joins when its process appears.
    TaskRootPending {
        task: TaskId,
        pid: u32,
    },
    /// The task's time to live ran out; its auto bindings are released (separate effects).
    TaskExpired {
        task: TaskId,
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
}
