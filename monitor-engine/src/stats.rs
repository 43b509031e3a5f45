//! Counters the engine keeps about itself, for `status` and metrics.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{finding::Rule, input::Input};
use crate::event::EventKind;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub inputs: InputCounts,
    pub findings: BTreeMap<Rule, u64>,
    /// Findings not emitted again for the same process, rule and subject.
    pub suppressed_repeats: u64,
    /// Processes first seen in an event other than their fork: started before the engine, or
    /// their fork event was lost.
    pub unknown_processes: u64,
    /// Harvests of a pid the engine did not know as a live process.
    pub unknown_harvest_targets: u64,
    /// Secret uses by processes the engine knew in no task, judged as members of the task the
    /// kernel counted them in (their fork was missed).
    pub kernel_memberships_adopted: u64,
    /// Inputs that could not be applied (`Effect::Rejected`).
    pub rejected: u64,
}

/// Inputs applied, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InputCounts {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    pub secret_open: u64,
    pub harvest: u64,
    pub connect: u64,
    pub tls_write: u64,
    pub task_started: u64,
    pub task_ended: u64,
    pub task_restored: u64,
    pub handles_issued: u64,
    pub grant_added: u64,
    pub secret_watched: u64,
    pub inode_unwatched: u64,
    pub map_write_failed: u64,
    /// Baselines restored at start or reset by an operator.
    pub baseline_changes: u64,
    pub tick: u64,
}

impl InputCounts {
    pub(super) fn count(&mut self, input: &Input) {
        let counter = match input {
            Input::Event(event) => match event.kind {
                EventKind::Exec(_) => &mut self.exec,
                EventKind::Fork(_) => &mut self.fork,
                EventKind::Exit(_) => &mut self.exit,
                EventKind::SecretOpen(_) => &mut self.secret_open,
                EventKind::Harvest(_) => &mut self.harvest,
                EventKind::Connect(_) => &mut self.connect,
                EventKind::TlsWrite(_) => &mut self.tls_write,
            },
            Input::TaskStarted { .. } => &mut self.task_started,
            Input::TaskEnded { .. } => &mut self.task_ended,
            Input::TaskRestored { .. } => &mut self.task_restored,
            Input::HandlesIssued { .. } => &mut self.handles_issued,
            Input::GrantAdded { .. } => &mut self.grant_added,
            Input::SecretWatched { .. } => &mut self.secret_watched,
            Input::InodeUnwatched { .. } => &mut self.inode_unwatched,
            Input::MapWriteFailed { .. } => &mut self.map_write_failed,
            Input::BaselinesRestored { .. } | Input::BaselineReset { .. } => &mut self.baseline_changes,
            Input::Tick { .. } => &mut self.tick,
        };
        *counter += 1;
    }

    pub fn total(&self) -> u64 {
        let Self {
            exec,
            fork,
            exit,
            secret_open,
            harvest,
            connect,
            tls_write,
            task_started,
            task_ended,
            task_restored,
            handles_issued,
            grant_added,
            secret_watched,
            inode_unwatched,
            map_write_failed,
            baseline_changes,
            tick,
        } = *self;
        exec + fork
            + exit
            + secret_open
            + harvest
            + connect
            + tls_write
            + task_started
            + task_ended
            + task_restored
            + handles_issued
            + grant_added
            + secret_watched
            + inode_unwatched
            + map_write_failed
            + baseline_changes
            + tick
    }
}
