//! `sched_process_fork` of a new process (threads are not reported). The header describes the
//! parent; the body the child.

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkBody {
    pub child_tgid: u32,
    pub _pad: u32,
    /// The child's `start_boottime`.
    pub child_start_time: u64,
}
