//! The base tier's memory hooks (`monitor-ebpf/src/harvest.rs`): their programs and what they
//! need of the running kernel, read by the loader before it loads them and by doctor.

use monitor_common::offsets::KernelOffsets;

use super::{btf::Btf, kallsyms::Resolved};

/// tp_btf programs, each named after its tracepoint: its label in metrics, and the number of
/// `TP_PROTO` arguments the program reads them by.
pub const PROGRAMS: [(&str, &str, usize); 2] = [
    // (mm, write) since Linux 6.13 or so; before, (mm, memcg_path, write), which it would misread.
    ("mmap_lock_start_locking", "tp_btf/mmap_lock_start_locking", 2),
    // (preempt, prev, next, prev_state) since Linux 5.18.
    ("sched_switch", "tp_btf/sched_switch", 4),
];

/// Why the memory hooks cannot run on this kernel, if they cannot.
pub fn unfit(btf: &Btf, offsets: &KernelOffsets, symbols: &Resolved) -> Option<String> {
    if offsets.mm_owner == 0 {
        return Some("kernel BTF has no mm_struct.owner (CONFIG_MEMCG)".into());
    }
    if let Err(error) = &symbols.reach {
        return Some(error.to_string());
    }
    PROGRAMS.iter().find_map(|&(tracepoint, _, wanted)| match btf.tracepoint_arg_count(tracepoint) {
        Ok(count) if count == wanted => None,
        Ok(count) => Some(format!("tracepoint {tracepoint} takes {count} arguments here; the memory hooks read {wanted}")),
        Err(error) => Some(error.to_string()),
    })
}
