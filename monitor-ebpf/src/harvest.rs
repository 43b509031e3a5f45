//! Reaching into a secret holder from outside it, off the syscall path.
//!
//! tp_btf `mmap_lock_start_locking` (`TP_PROTO(mm, write)`, Linux 6.13+; the loader checks the
//! prototype in BTF, and needs `mm_struct::owner`, `CONFIG_MEMCG`, and the kernel's function
//! addresses): every copy from another process's memory takes that address space's mmap lock
//! first, whatever the route: a read of `/proc/PID/environ` or `mem` (also under
//! `/proc/PID/task/TID/`, by read, pread, readv or io_uring), `process_vm_readv`/`writev`, a ptrace
//! peek or poke. The lock's caller is told from the kernel stack (`SYMBOLS.reach_code`): `ps`
//! reading a holder's `cmdline` also takes it and is no harvest. A refused reader is killed here,
//! before the copy: the kernel's page walk stops at a pending SIGKILL, so not a byte reaches it. A
//! process that takes no other process's mmap lock pays the tracepoint and one read of its own
//! `mm`.
//!
//! tp_btf `sched_switch` (`prev_state` argument: Linux 5.18+): a holder stopping for a ptrace
//! tracer, which any use of an attach (registers, memory, a hijacked resume) must wait for;
//! reported with the tracer as the actor, for the daemon to judge. Costs one compare per context
//! switch.
//!
//! Attached only while a process holds a secret (`monitor/src/sensors/syscall_hooks.rs`).
//! Reports that kill nothing are made once per (process, holder, route): a debugger peeking word
//! by word would otherwise flood the ring buffer. Both programs replace the syscall programs'
//! `/proc` open, ptrace and `process_vm_readv` checks. Never attached on the LSM and fmod_ret
//! tiers, whose `file_open` and `ptrace_access_check` hooks refuse these before they happen.

use aya_ebpf::{
    helpers::bpf_get_stack,
    macros::{btf_tracepoint, map},
    maps::{ring_buf::RingBufEntry, LruHashMap},
    programs::BtfTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{harvest::{kind, HarvestBody}, kernel_action, Event, EventKind},
    maps::{enforce, policy, InodeKey},
    offsets::REACH_CODE_RANGES,
};

use crate::{
    emit::{reserve_about, reserve_decided},
    files::{daemon_tgid, reach_code},
    kill::kill_current,
    listers,
    maps::{enforced, is_holder, TASK_OF},
    task::{file_inode, Task},
};

/// Set to 1 by the loader when the programs here are attached.
#[unsafe(no_mangle)]
static MEMORY_HOOKS: u32 = 0;

/// The daemon's executable, set before load: another credwatch (a second daemon, `demo`) reads
/// environments to scan them. Those reads are reported, never killed here; the daemon does not
/// count them as harvests.
#[unsafe(no_mangle)]
static CREDWATCH_EXE: InodeKey = InodeKey { dev: 0, _pad: 0, ino: 0 };

/// Whether the programs here are attached: the syscall programs then leave `/proc` opens,
/// ptrace and `process_vm_readv` to them.
#[inline(always)]
pub fn active() -> bool {
    // SAFETY: reading a plain static set before load.
    unsafe { core::ptr::read_volatile(&raw const MEMORY_HOOKS) != 0 }
}

/// Frames of the kernel stack searched for the lock's caller: the reaching function sits three
/// to five frames below the tracepoint.
const FRAMES: usize = 12;

/// `__TASK_TRACED` (include/linux/sched.h): the state of a task stopped for its tracer.
const TASK_TRACED: u32 = 0x8;

/// A reach already reported: the process (by its start time too: pids are reused), the holder,
/// the route.
#[repr(C)]
#[derive(Clone, Copy)]
struct Reach {
    caller: u32,
    target: u32,
    kind: u32,
    _pad: u32,
    caller_start: u64,
}

/// Reaches reported without a kill; the least recently seen are forgotten first (and then
/// reported again).
#[map]
static REPORTED: LruHashMap<Reach, u8> = LruHashMap::with_max_entries(4096, 0);

/// `TP_PROTO(struct mm_struct *mm, bool write)`.
#[btf_tracepoint(function = "mmap_lock_start_locking")]
pub fn mmap_lock_start_locking(ctx: BtfTracePointContext) -> i32 {
    let mm: u64 = ctx.arg(0);
    let write: u64 = ctx.arg(1);
    // Every route that copies memory out of (or into) a process takes the lock for reading.
    if write & 0xff != 0 {
        return 0;
    }
    let current = Task::current();
    // A kernel thread has no mm of its own, and borrowing one makes it its own.
    match current.mm() {
        Ok(own) if own != 0 && own != mm => {}
        _ => return 0,
    }
    let Ok(target) = Task::owner_of(mm).and_then(Task::tgid) else {
        return 0;
    };
    let tgid = ctx.tgid();
    // An exec locks the new image's mm, whose owner is the exec'ing process itself.
    if target == tgid || tgid == daemon_tgid() || !is_holder(target) || same_task(tgid, target) {
        return 0;
    }
    let Some(route) = caller_route(&ctx) else {
        return 0;
    };
    if route == kind::ENVIRON && listers::listing(current, tgid) {
        return 0;
    }
    let scan = route == kind::ENVIRON && runs_credwatch(current);
    if refuses_harvest(tgid, target) && !scan && kill_current() {
        report_harvest(route, target, kernel_action::KILLED);
        return 0;
    }
    let Ok(caller_start) = current.process_start_time() else {
        return 0;
    };
    let reach = Reach { caller: tgid, target, kind: route, _pad: 0, caller_start };
    if !reported(&reach) {
        report_once(current, &reach);
    }
    0
}

/// `TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let prev_state: u64 = ctx.arg(3);
    if prev_state as u32 & TASK_TRACED == 0 {
        return 0;
    }
    let tracee = Task::from_arg(ctx.arg(1));
    let Ok(target) = tracee.tgid() else {
        return 0;
    };
    if !is_holder(target) || !tracee.traced() {
        return 0;
    }
    let Ok(tracer) = tracee.parent() else {
        return 0;
    };
    let (Ok(caller), Ok(caller_start)) = (tracer.tgid(), tracer.process_start_time()) else {
        return 0;
    };
    if caller == target || caller == daemon_tgid() || same_task(caller, target) {
        return 0;
    }
    let reach = Reach { caller, target, kind: kind::PTRACE, _pad: 0, caller_start };
    if !reported(&reach) {
        report_once(tracer, &reach);
    }
    0
}

/// Whether both processes are members of one task: the engine ignores a reach within a task.
#[inline(always)]
fn same_task(caller: u32, target: u32) -> bool {
    // SAFETY: plain values copied out.
    let (caller_task, target_task) = unsafe { (TASK_OF.get(&caller).copied(), TASK_OF.get(&target).copied()) };
    caller_task.is_some_and(|task| task != 0 && Some(task) == target_task)
}

#[inline(always)]
fn reported(reach: &Reach) -> bool {
    // SAFETY: the value is not read.
    unsafe { REPORTED.get(reach) }.is_some()
}

/// Reports `reach` by `actor` and remembers it, once the record is reserved: a reach lost to a
/// full ring buffer (counted) is reported at its next lock.
#[inline(always)]
fn report_once(actor: Task, reach: &Reach) {
    let Some(entry) = reserve_about::<HarvestBody>(actor, EventKind::Harvest) else {
        return;
    };
    submit(entry, reach.kind, reach.target, kernel_action::NONE);
    let _ = REPORTED.insert(reach, &1, 0);
}

/// Whether `task` runs the daemon's executable.
#[inline(always)]
fn runs_credwatch(task: Task) -> bool {
    // SAFETY: reading a plain static set before load.
    let credwatch = unsafe { core::ptr::read_volatile(&raw const CREDWATCH_EXE) };
    task.exe_file().and_then(file_inode).is_ok_and(|(_, key)| key == credwatch)
}

/// The harvest route of the function that took the lock, from the kernel stack.
#[inline(always)]
fn caller_route(ctx: &BtfTracePointContext) -> Option<u32> {
    let mut frames = [0u64; FRAMES];
    // SAFETY: the buffer is `FRAMES` u64s long, as passed; flags 0: this kernel stack.
    let len = unsafe {
        bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), core::mem::size_of_val(&frames) as u32, 0)
    };
    if len <= 0 {
        return None;
    }
    let filled = (len as usize / 8).min(FRAMES);
    for slot in 0..REACH_CODE_RANGES {
        let range = reach_code(slot);
        if range.start == 0 {
            break;
        }
        for (index, &frame) in frames.iter().enumerate() {
            if index >= filled {
                break;
            }
            if frame > range.start && frame <= range.end {
                return Some(range.kind);
            }
        }
    }
    None
}

/// Whether reaching into `target` from `caller` is refused: the target holds a secret and
/// `policy::refuses_harvest` says so for the two processes' tasks under the `ENFORCE` harvest bits.
#[inline(always)]
pub fn refuses_harvest(caller: u32, target: u32) -> bool {
    let bits = enforced(enforce::HARVEST);
    if bits == 0 || !is_holder(target) {
        return false;
    }
    // SAFETY: plain values copied out.
    let (target_task, caller_task) = unsafe {
        (TASK_OF.get(&target).copied().unwrap_or(0), TASK_OF.get(&caller).copied().unwrap_or(0))
    };
    policy::refuses_harvest(bits, target_task, caller_task)
}

/// Reports that the current process reached into process `target`; `action` is one of
/// `kernel_action`.
#[inline(always)]
pub fn report_harvest(harvest_kind: u32, target: u32, action: u32) {
    let Some(entry) = reserve_decided::<HarvestBody>(EventKind::Harvest, action) else {
        return;
    };
    submit(entry, harvest_kind, target, action);
}

/// Fills a reserved harvest record's body and submits it.
#[inline(always)]
fn submit(mut entry: RingBufEntry<Event<HarvestBody>>, harvest_kind: u32, target: u32, action: u32) {
    // SAFETY: reserved record of the right size.
    unsafe {
        (&raw mut (*entry.as_mut_ptr()).body).write(HarvestBody { kind: harvest_kind, target, action, _pad: 0 });
    }
    entry.submit(0);
}
