//! Reaching into another process: `/proc/PID/{environ,mem}` opens, ptrace attach,
//! `process_vm_readv`.

/// Values of [`HarvestBody::kind`].
pub mod kind {
    pub const ENVIRON: u32 = 0;
    pub const MEM: u32 = 1;
    pub const PTRACE: u32 = 2;
    pub const VM_READV: u32 = 3;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HarvestBody {
    pub kind: u32,
    /// The pid reached (a /proc entry's pid, or the syscall's pid argument).
    pub target: u32,
    /// One of [`crate::event::kernel_action`]: `DENIED` when the LSM tier refused it.
    pub action: u32,
    pub _pad: u32,
}
