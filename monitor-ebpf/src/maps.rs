//! Maps shared with userspace.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    loss::LOST_SLOTS,
    maps::{enforce, AllowedPorts, DestinationKey, GranteeKey, InodeKey, WatchedInode},
};

/// Default ring buffer size; userspace may resize it before load.
const EVENTS_BYTES: u32 = 4 << 20;

/// Every event goes through here to the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

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
pub static TASK_OF: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Processes holding a secret (opened a watched file or carry a secret env var), by tgid:
/// their connects are reported. Set here on a watched open and by the daemon after an env scan;
/// inherited at fork.
#[map]
pub static HOLDERS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Processes the daemon decided to kill, by tgid: SIGKILL at their next syscall, in case the
/// daemon's own signal raced with a fork or lost to a pid reuse check.
#[map]
pub static VERDICTS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

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
