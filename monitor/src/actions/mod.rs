//! What the daemon does about a finding: kill a process, kill a task, call a revocation webhook.

pub mod kill;
pub mod plan;
