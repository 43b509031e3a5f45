//! `sched_process_exit` of the last thread of a process.

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitBody {
    /// `task_struct::exit_code` as `wait(2)` encodes it: `code << 8`, or the terminating signal.
    pub exit_code: u32,
    pub _pad: u32,
}
