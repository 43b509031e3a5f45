//! Process listers (`monitor_common::listers`): a process that runs a lister executable (procps
//! `ps`) with options that print no environment, untraced, and without a variable that would run
//! other code inside it or change how it reads its options, is marked at exec; its reads of other processes' `/proc/PID/environ` are
//! then neither reported nor refused, on every tier. Any other reader, a copy of `ps` under
//! another inode, a script named `ps`, `ps e`, is judged as a harvester.
//!
//! A program of its own on `sched_process_exec`, beside the exec capture: the verifier follows
//! its scans once, from one entry, within its own budget.

use aya_ebpf::{
    helpers::bpf_probe_read_user_buf,
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::listers::{alters_lister, shows_environment, Listers, ARGV_SCAN, ENV_SCAN};

use crate::task::{file_inode, Task};

/// The lister executables, set by the daemon before load.
#[unsafe(no_mangle)]
static LISTERS: Listers = Listers::NONE;

/// Processes marked as listers, by tgid, with their start time (pids are reused). The least
/// recently used are forgotten first: a forgotten lister is judged as a harvester, never the
/// other way round.
#[map]
static LISTING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// An exec's argument and environment blocks, copied for the parse (too big for the stack).
#[repr(C)]
struct Blocks {
    argv: [u8; ARGV_SCAN],
    env: [u8; ENV_SCAN],
}

#[map]
static BLOCKS: PerCpuArray<Blocks> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn listers() -> Listers {
    // SAFETY: reading a plain static set before load; volatile, or the compiler would fold the
    // initialiser into the code.
    unsafe { core::ptr::read_volatile(&raw const LISTERS) }
}

/// `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, after the new
/// image is in place: marks the process as a lister, or forgets an earlier mark of its tgid.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn lister_exec(ctx: RawTracePointContext) -> i32 {
    let listers = listers();
    if listers.count == 0 {
        return 0;
    }
    let tgid = ctx.tgid();
    let current = Task::current();
    // Started traced (`strace ps`), its tracer would read what it reads.
    let lister = current.exe_file().and_then(file_inode).is_ok_and(|(_, exe)| listers.contains(exe))
        && !current.traced()
        && lists_only(current);
    match (lister, current.process_start_time()) {
        (true, Ok(start)) => {
            // A full map forgets the least recently used mark: that lister is judged as a reader.
            let _ = LISTING.insert(&tgid, &start, 0);
        }
        _ => forget(tgid),
    }
    0
}

/// Whether `current`'s argument block asks for no environment and its environment block sets
/// nothing that alters a lister, both read whole.
#[inline(always)]
fn lists_only(current: Task) -> bool {
    let Ok([arg_start, arg_end, env_start, env_end]) = current.blocks() else {
        return false;
    };
    let argv_len = arg_end.saturating_sub(arg_start) as usize;
    let env_len = env_end.saturating_sub(env_start) as usize;
    if argv_len > ARGV_SCAN || env_len > ENV_SCAN {
        return false;
    }
    let Some(blocks) = BLOCKS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch, which no other program uses while this one runs.
    let blocks = unsafe { &mut *blocks };
    // The environment first: its scan, the longer, is then followed from one path only, not from
    // each place the argument parse can end.
    // SAFETY: reads of user memory into buffers of the lengths given.
    if unsafe { bpf_probe_read_user_buf(env_start as *const u8, &mut blocks.env[..env_len]) }.is_err()
        || alters_lister(&blocks.env, env_len)
    {
        return false;
    }
    let argv = &mut blocks.argv[..argv_len];
    // SAFETY: as above.
    unsafe { bpf_probe_read_user_buf(arg_start as *const u8, argv) }.is_ok() && !shows_environment(argv)
}

/// Whether `current` (`tgid`) was marked as a lister at its exec.
#[inline(always)]
pub fn listing(current: Task, tgid: u32) -> bool {
    // SAFETY: the value is copied out at once.
    let Some(&start) = (unsafe { LISTING.get(&tgid) }) else {
        return false;
    };
    current.process_start_time().is_ok_and(|now| now == start)
}

/// Drops the mark of `tgid` (an exec of another program, the process's exit).
#[inline(always)]
pub fn forget(tgid: u32) {
    // SAFETY: reading a plain static set before load; volatile, as in `listers`.
    let count = unsafe { core::ptr::read_volatile(&raw const LISTERS.count) };
    if count != 0 {
        let _ = LISTING.remove(&tgid);
    }
}
