//! What the kernel side could not deliver, per event kind.

use monitor_common::event::EventKind;

/// Events per kind whose ring buffer reservation failed, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounts([u64; EventKind::ALL.len()]);

impl LossCounts {
    pub(super) fn set(&mut self, kind: EventKind, lost: u64) {
        self.0[kind as usize] = lost;
    }

    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(kind name, lost)` for every kind.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EventKind::ALL.iter().map(|&kind| (kind.name(), self.get(kind)))
    }
}
