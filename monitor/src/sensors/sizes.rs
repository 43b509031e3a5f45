//! How many entries each kernel map holds: set at load, sized from the host unless the config's
//! `[maps]` section says otherwise. What happens when each is full is in the README
//! ("Reliability"); every failed write is counted and raises a critical finding.

/// Used when `/proc/sys/kernel/pid_max` cannot be read: the largest pid_max on 64-bit Linux.
const PID_MAX_LIMIT: u32 = 4_194_304;

/// Entries per map, by name, in the order the kernel side defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Task membership, per process: sized to `kernel.pid_max` and allocated as processes
    /// appear, so every live process fits.
    pub task_of: u32,
    /// Secret holders, per process: as `task_of`.
    pub holders: u32,
    /// Pending kill verdicts, per process: as `task_of`.
    pub verdicts: u32,
    /// Watched secret inodes.
    pub watched: u32,
    /// (secret, task) pairs of active owners.
    pub grantees: u32,
    /// Networks of the tasks' allow lists (an LPM trie).
    pub allowed_destinations: u32,
    /// Handles of tasks that are over (an LRU map: the oldest are forgotten, never refused).
    pub finished_tasks: u32,
}

/// The `[maps]` section: sizes that replace the host's defaults (tests set small ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapSizeOverrides {
    pub task_of: Option<u32>,
    pub holders: Option<u32>,
    pub verdicts: Option<u32>,
    pub watched: Option<u32>,
    pub grantees: Option<u32>,
    pub allowed_destinations: Option<u32>,
    pub finished_tasks: Option<u32>,
}

impl MapSizeOverrides {
    /// The keys of the `[maps]` section, as the config names them.
    pub const KEYS: [&str; 7] =
        ["task_of", "holders", "verdicts", "watched", "grantees", "allowed_destinations", "finished_tasks"];

    /// Sets the size of `key` (one of [`Self::KEYS`]); false for an unknown key.
    pub fn set(&mut self, key: &str, entries: u32) -> bool {
        let slot = match key {
            "task_of" => &mut self.task_of,
            "holders" => &mut self.holders,
            "verdicts" => &mut self.verdicts,
            "watched" => &mut self.watched,
            "grantees" => &mut self.grantees,
            "allowed_destinations" => &mut self.allowed_destinations,
            "finished_tasks" => &mut self.finished_tasks,
            _ => return false,
        };
        *slot = Some(entries);
        true
    }
}

impl MapSizes {
    /// This host's defaults: per-process maps hold `kernel.pid_max` entries.
    pub fn for_host() -> Self {
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(PID_MAX_LIMIT);
        Self {
            task_of: pid_max,
            holders: pid_max,
            verdicts: pid_max,
            watched: 16_384,
            grantees: 16_384,
            allowed_destinations: 16_384,
            finished_tasks: 16_384,
        }
    }

    /// These sizes with `overrides` applied.
    pub fn with(self, overrides: &MapSizeOverrides) -> Self {
        let MapSizeOverrides { task_of, holders, verdicts, watched, grantees, allowed_destinations, finished_tasks } =
            *overrides;
        Self {
            task_of: task_of.unwrap_or(self.task_of),
            holders: holders.unwrap_or(self.holders),
            verdicts: verdicts.unwrap_or(self.verdicts),
            watched: watched.unwrap_or(self.watched),
            grantees: grantees.unwrap_or(self.grantees),
            allowed_destinations: allowed_destinations.unwrap_or(self.allowed_destinations),
            finished_tasks: finished_tasks.unwrap_or(self.finished_tasks),
        }
    }

    /// (kernel map name, entries), for the loader and for `doctor`.
    pub fn by_map(&self) -> [(&'static str, u32); 7] {
        let Self { task_of, holders, verdicts, watched, grantees, allowed_destinations, finished_tasks } = *self;
        [
            ("TASK_OF", task_of),
            ("HOLDERS", holders),
            ("VERDICTS", verdicts),
            ("WATCHED", watched),
            ("GRANTEES", grantees),
            ("ALLOWED_DESTINATIONS", allowed_destinations),
            ("FINISHED_TASKS", finished_tasks),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_maps_fit_every_pid_and_overrides_win() {
        let host = MapSizes::for_host();
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        assert_eq!((host.task_of, host.holders, host.verdicts), (pid_max, pid_max, pid_max));
        let mut overrides = MapSizeOverrides::default();
        for key in MapSizeOverrides::KEYS {
            assert!(overrides.set(key, 64), "{key}");
        }
        assert!(!overrides.set("events", 1));
        let small = host.with(&overrides);
        assert!(small.by_map().iter().all(|&(_, entries)| entries == 64));
    }
}
