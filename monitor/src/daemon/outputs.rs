//! What the daemon sends out for operations: findings, task changes and revocations, down a
//! bounded channel that the exporters (`crate::export`) read. The daemon never waits: a full
//! channel drops the record and counts it, so a slow consumer cannot stall the engine.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use serde::Serialize;
use tokio::sync::mpsc;

use super::{respond::Report, tasks::TaskEntry};

/// Records waiting for the exporters.
pub const QUEUE: usize = 4096;

/// A task's lifecycle change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskChange {
    Started,
    Ended,
    Expired,
    Restored,
}

/// One thing the exporters hear about.
#[derive(Clone, Debug)]
pub enum Record {
    /// A finding and what was done about it.
    Finding(Arc<Report>),
    /// A task was started, ended, expired or restored after a restart.
    Task { change: TaskChange, at_unix: u64, task: Arc<TaskEntry> },
    /// A revocation the `revoke` action asked for.
    Revoke(Arc<Revocation>),
}

/// What a revocation webhook is told: which secret of which task to revoke. Never a value.
#[derive(Clone, Debug, Serialize)]
pub struct Revocation {
    pub task: Option<String>,
    pub secret_id: Option<u32>,
    pub secret_name: String,
    pub fingerprint_prefix: Option<String>,
    pub rule: &'static str,
    pub at_unix: u64,
}

/// The daemon's end of the export channel.
#[derive(Clone)]
pub struct ExportSender {
    queue: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

/// Creates the channel; the receiver goes to the exporters.
pub fn channel() -> (ExportSender, mpsc::Receiver<Record>) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    (ExportSender { queue, dropped: Arc::default() }, receiver)
}

impl ExportSender {
    /// Queues a record without waiting; a full or closed queue drops it and counts the drop.
    pub fn send(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the exporters fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (sender, mut receiver) = channel();
        let revocation = Arc::new(Revocation {
            task: None,
            secret_id: None,
            secret_name: "GITHUB_TOKEN".to_owned(),
            fingerprint_prefix: None,
            rule: "cross_task_reuse",
            at_unix: 0,
        });
        for _ in 0..QUEUE + 10 {
            sender.send(Record::Revoke(Arc::clone(&revocation)));
        }
        assert_eq!(sender.dropped(), 10);
        assert!(receiver.recv().await.is_some());
    }
}
