//! Per-CPU counters of what the kernel side could not deliver.
//!
//! `LOST` is a per-CPU array indexed by [`crate::event::EventKind`]: each slot counts events of
//! that kind whose ring buffer reservation failed (buffer full). Userspace sums the CPUs.

/// Number of slots in the `LOST` map; one per event kind.
pub const LOST_SLOTS: u32 = crate::event::EventKind::ALL.len() as u32;
