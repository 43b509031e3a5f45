//! Where the syscall overhead goes: the run time the kernel accounts to each attached program
//! (`kernel.bpf_stats_enabled`), for credwatch's syscall hooks and for the floor's empty programs
//! on the same hooks, during one run of a workload. Read from the helper process's descriptors:
//! a link's fdinfo names the tracepoint and the program, a program's fdinfo holds its counters.

use std::{collections::BTreeMap, fs};

use super::{
    error::BenchError,
    monitors::Monitor,
    syscalls::{self, Workload},
    Bench,
};

const STATS_SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The hooks both credwatch and the floor attach to.
const HOOKS: [&str; 2] = ["sys_enter", "sys_exit"];

/// One hook's program during one run: how often it ran and for how long in all.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HookRuns {
    pub runs: u64,
    pub ns: u64,
}

impl HookRuns {
    pub fn ns_per_run(self) -> f64 {
        self.ns as f64 / self.runs.max(1) as f64
    }
}

pub struct Profile {
    pub workload: Workload,
    /// By monitor (credwatch, floor), then by hook.
    pub runs: Vec<(Monitor, BTreeMap<String, HookRuns>)>,
}

const PROFILED: [Workload; 2] = [Workload::OpenUntracked, Workload::ConnectTracked];
const MONITORS: [Monitor; 2] = [Monitor::Floor, Monitor::Credwatch];

pub fn measure(bench: &Bench) -> Result<Vec<Profile>, BenchError> {
    let mut profiles: Vec<Profile> = PROFILED
        .iter()
        .map(|&workload| Profile {
            workload,
            runs: Vec::new(),
        })
        .collect();
    for monitor in MONITORS {
        let running = monitor.start(bench)?;
        let pid = running
            .pid()
            .expect("credwatch and the floor run as a process");
        for profile in &mut profiles {
            let stats = StatsEnabled::switch_on()?;
            syscalls::run(bench, &running, profile.workload)?;
            let runs = hook_runs(pid)?;
            drop(stats);
            profile.runs.push((monitor, runs));
        }
        running.stop()?;
    }
    Ok(profiles)
}

/// Keeps run time accounting on (it costs every program two clock reads) while alive, and
/// restores the previous setting after.
struct StatsEnabled(String);

impl StatsEnabled {
    fn switch_on() -> Result<Self, BenchError> {
        let before = fs::read_to_string(STATS_SWITCH)
            .map_err(BenchError::io(format!("reading {STATS_SWITCH}")))?;
        fs::write(STATS_SWITCH, "1").map_err(BenchError::io(format!("writing {STATS_SWITCH}")))?;
        Ok(Self(before.trim().to_owned()))
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SWITCH, &self.0);
    }
}

/// The counters of the programs `pid` holds attached to `HOOKS`, by tracepoint.
fn hook_runs(pid: u32) -> Result<BTreeMap<String, HookRuns>, BenchError> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).map_err(BenchError::io(format!("listing {dir}")))?;
    let mut programs: BTreeMap<u64, HookRuns> = BTreeMap::new();
    let mut links: BTreeMap<u64, String> = BTreeMap::new();
    for entry in entries.flatten() {
        // A descriptor closed meanwhile is simply gone.
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok());
        match (
            number("prog_id"),
            field("tp_name"),
            number("run_cnt"),
            number("run_time_ns"),
        ) {
            (Some(id), Some(tracepoint), _, _) => {
                links.insert(id, tracepoint.to_owned());
            }
            (Some(id), None, Some(runs), Some(ns)) => {
                programs.insert(id, HookRuns { runs, ns });
            }
            _ => {}
        }
    }
    Ok(links
        .into_iter()
        .filter(|(_, tracepoint)| HOOKS.contains(&tracepoint.as_str()))
        .filter_map(|(id, tracepoint)| Some((tracepoint, *programs.get(&id)?)))
        .collect())
}
