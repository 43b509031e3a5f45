//! Process identity read from /proc, to compare with the kernel's [`ExecId`]s.

use crate::event::ExecId;

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None if the process is
/// gone.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    after_name.split(' ').nth(19)?.parse().ok()
}

fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    1_000_000_000 / ticks_per_second
}

/// A kernel start time (`start_boottime`, ns) in /proc's clock ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    ns / ns_per_tick()
}

/// A start time cut to /proc's precision, so that an [`ExecId`] built from the kernel's
/// nanoseconds equals one built from `/proc/PID/stat`. Two processes with one pid in one tick
/// (10 ms) would need the pid space to wrap within it.
pub fn start_time_ns(ns: u64) -> u64 {
    ns - ns % ns_per_tick()
}

/// The identity of live process `pid` as read from /proc.
pub fn exec_id(pid: u32) -> Option<ExecId> {
    Some(ExecId { tgid: pid, start_time: start_ticks(pid)? * ns_per_tick() })
}

/// Whether pid `process.tgid` still is the process `process` names (not a reuse of its pid).
pub fn is_alive(process: ExecId) -> bool {
    start_ticks(process.tgid) == Some(ns_to_ticks(process.start_time))
}

/// A process that runs now, as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub id: ExecId,
    pub parent: ExecId,
    pub uid: u32,
    /// Its executable; kernel threads, which have none, are not listed.
    pub executable: String,
}

/// Every process running now but kernel threads, parents before their children.
pub fn running() -> Vec<Running> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut running: Vec<Running> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let executable = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?.to_string_lossy().into_owned();
            let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
            let (ppid, start): (u32, u64) = (fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?);
            let id = ExecId { tgid: pid, start_time: start * ns_per_tick() };
            let parent = exec_id(ppid).unwrap_or(ExecId { tgid: ppid, start_time: 0 });
            Some(Running { id, parent, uid, executable })
        })
        .collect();
    running.sort_by_key(|process| process.id.start_time);
    running
}

/// A file's identity: device and inode.
pub type FileIdentity = (u64, u64);

/// The identity of the executable this process runs.
pub fn own_executable() -> std::io::Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/exe").map(|meta| (meta.dev(), meta.ino()))
}

/// Whether live process `process` runs the executable `executable`; false when it is gone.
pub fn runs_executable(process: ExecId, executable: FileIdentity) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let running = std::fs::metadata(format!("/proc/{}/exe", process.tgid)).map(|meta| (meta.dev(), meta.ino()));
    // Checked after the read: the pid was not reused in between.
    running.is_ok_and(|running| running == executable) && is_alive(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_reads_this_process_and_not_a_missing_one() {
        assert!(start_ticks(std::process::id()).unwrap() > 0);
        assert_eq!(start_ticks(u32::MAX), None);
    }

    #[test]
    fn proc_and_kernel_start_times_agree_at_tick_precision() {
        let me = exec_id(std::process::id()).unwrap();
        assert!(is_alive(me));
        assert_eq!(start_time_ns(me.start_time + 1), me.start_time);
        assert_eq!(start_time_ns(me.start_time), me.start_time);
    }

    #[test]
    fn this_process_runs_its_own_executable_and_init_does_not() {
        let own = own_executable().unwrap();
        assert!(runs_executable(exec_id(std::process::id()).unwrap(), own));
        assert!(!runs_executable(exec_id(1).unwrap(), own));
    }

    #[test]
    fn running_processes_include_this_one_after_its_parent() {
        let all = running();
        let me = all.iter().position(|process| process.id.tgid == std::process::id()).expect("this process");
        let parent = all[me].parent;
        assert!(all.iter().position(|process| process.id == parent).is_none_or(|at| at < me), "parents first");
        assert_eq!(all[me].executable, std::env::current_exe().unwrap().to_string_lossy());
    }

    #[test]
    fn a_wrong_start_time_is_not_alive() {
        let me = std::process::id();
        assert!(!is_alive(ExecId { tgid: me, start_time: 1 }));
    }
}
