//! Maps shared with userspace.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    event::exec::ExecRecord,
    loss::LOST_SLOTS,
    maps::{enforce, fail_closed, written, AllowedPorts, DestinationKey, GranteeKey, InodeKey, MapFailures, WatchedInode},
};

/// Default ring buffer size; userspace may resize it before load.
const EVENTS_BYTES: u32 = 4 << 20;
/// The decisions' own buffer: events are few (a kill or a refusal each), and no flood of
/// ordinary events can crowd them out.
const DECISIONS_BYTES: u32 = 256 << 10;

/// Per-process maps: entries are allocated as processes appear (userspace sizes them from
/// `kernel.pid_max`, so every live process fits), not all at load.
const NO_PREALLOC: u32 = 1; // BPF_F_NO_PREALLOC

/// Every event goes through here to the daemon, but for the kernel's decisions.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Events about what the kernel killed or refused: a use of a bound secret, a harvest.
#[map]
pub static DECISIONS: RingBuf = RingBuf::with_byte_size(DECISIONS_BYTES, 0);

/// One exec record per CPU, built here before its used part is sent (too big for the stack, and
/// for a per-CPU map's value). Userspace sizes it to the number of CPUs.
#[map]
pub static EXEC_SCRATCH: Array<ExecRecord> = Array::with_max_entries(1, 0);

/// Failed writes per map (`monitor_common::maps::written` slots), per CPU.
#[map]
pub static MAP_FAILURES: PerCpuArray<MapFailures> = PerCpuArray::with_max_entries(written::SLOTS, 0);

/// `monitor_common::maps::fail_closed` flags, set once a write that keeps the model true failed.
#[map]
pub static FAIL_CLOSED: Array<u32> = Array::with_max_entries(fail_closed::SLOTS, 0);

/// Per-CPU count of events whose reservation failed, indexed by event kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Watched secret inodes, written by the daemon.
#[map]
pub static WATCHED: HashMap<InodeKey, WatchedInode> = HashMap::with_max_entries(16384, 0);

/// The active tasks that own each bound secret, by (secret id, task handle): several tasks may
/// share one credential. Written by the daemon from the engine's bindings.
#[map]
pub static GRANTEES: HashMap<GranteeKey, u32> = HashMap::with_max_entries(16384, 0);

/// Handles of tasks that ended or expired, so that their left-over processes are judged as
/// post-task reuse. Handles are never reused; the least recently used are forgotten first.
#[map]
pub static FINISHED_TASKS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// Task membership by tgid, written by the daemon for task roots and inherited here at fork.
#[map]
pub static TASK_OF: HashMap<u32, u32> = HashMap::with_max_entries(65536, NO_PREALLOC);

/// Processes holding a secret (opened a watched file or carry a secret env var), by tgid:
/// their connects are reported. Set here on a watched open and by the daemon after an env scan;
/// inherited at fork.
#[map]
pub static HOLDERS: HashMap<u32, u32> = HashMap::with_max_entries(65536, NO_PREALLOC);

/// Processes the daemon decided to kill, by tgid: SIGKILL at their next syscall, in case the
/// daemon's own signal raced with a fork or lost to a pid reuse check.
#[map]
pub static VERDICTS: HashMap<u32, u32> = HashMap::with_max_entries(4096, NO_PREALLOC);

/// Slot 0: number of entries in `VERDICTS`, kept by the daemon, so that every process's syscall
/// entry costs one array read (not a hash lookup) while no verdict is pending.
#[map]
pub static VERDICT_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// What the LSM tier refuses besides secret opens, by `monitor_common::maps::enforce` slot;
/// written by the daemon from the per-rule actions.
#[map]
pub static ENFORCE: Array<u32> = Array::with_max_entries(enforce::SLOTS, 0);

/// Each task's allowed destinations (tasks registered with an `allow` list only), for the
/// `socket_connect` LSM hook; written by the daemon when a task starts, cleared when it ends.
#[map]
pub static ALLOWED_DESTINATIONS: LpmTrie<DestinationKey, AllowedPorts> = LpmTrie::with_max_entries(16384, 0);

/// Counts a failed write to map `slot` (`written`) by process `tgid`.
#[inline(always)]
pub fn write_failed(slot: u32, tgid: u32) {
    if let Some(failures) = MAP_FAILURES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, so no other program writes it concurrently.
        unsafe {
            (*failures).count += 1;
            (*failures).last_tgid = tgid;
        }
    }
}

/// Sets fail-closed flag `slot`.
#[inline(always)]
pub fn fail_closed(slot: u32) {
    if let Some(flag) = FAIL_CLOSED.get_ptr_mut(slot) {
        // SAFETY: a plain u32 flag; only the daemon clears it, and a racing set wins either way.
        unsafe { *flag = 1 };
    }
}

/// What `ENFORCE` slot `slot` (`monitor_common::maps::enforce`) holds; 0 (report only) if unset.
#[inline(always)]
pub fn enforced(slot: u32) -> u32 {
    ENFORCE.get(slot).copied().unwrap_or(0)
}

/// Whether fail-closed flag `slot` is set.
#[inline(always)]
pub fn failed_closed(slot: u32) -> bool {
    FAIL_CLOSED.get(slot).is_some_and(|&flag| flag != 0)
}

/// Records that process `tgid` holds a secret; a failure is counted and fails closed.
#[inline(always)]
pub fn hold(tgid: u32, held: u32) {
    if HOLDERS.insert(&tgid, &held, 0).is_err() {
        write_failed(written::HOLDERS, tgid);
        fail_closed(fail_closed::HOLDINGS);
    }
}

/// Whether process `tgid` holds a secret, as far as the kernel can tell: once a holding could
/// not be recorded, every task member counts as one.
#[inline(always)]
pub fn is_holder(tgid: u32) -> bool {
    HOLDERS.get_ptr(tgid).is_some() || (failed_closed(fail_closed::HOLDINGS) && TASK_OF.get_ptr(tgid).is_some())
}
