//! Byte offsets of the kernel struct fields the eBPF programs read.
//!
//! rustc emits no CO-RE relocations for BPF, so the daemon resolves these from the running
//! kernel's BTF at start-up and writes them into the `OFFSETS` global before loading.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct::pid` (thread id).
    pub task_pid: u32,
    /// `task_struct::tgid`.
    pub task_tgid: u32,
    /// `task_struct::real_parent` (pointer).
    pub task_real_parent: u32,
    /// `task_struct::group_leader` (pointer).
    pub task_group_leader: u32,
    /// `task_struct::start_boottime` (u64 ns).
    pub task_start_boottime: u32,
    /// `task_struct::exit_code` (int).
    pub task_exit_code: u32,
    /// `task_struct::signal` (pointer).
    pub task_signal: u32,
    /// `task_struct::mm` (pointer).
    pub task_mm: u32,
    /// `task_struct::files` (pointer).
    pub task_files: u32,
    /// `task_struct::flags` (unsigned int, `PF_*`): tells kernel threads and io_uring workers.
    pub task_flags: u32,
    /// `task_struct::ptrace` (unsigned int): nonzero while the task is traced.
    pub task_ptrace: u32,
    /// `task_struct::parent` (pointer): the tracer while traced, else the real parent.
    pub task_parent: u32,
    /// `signal_struct::live` (atomic_t): live threads; 0 once the last one is exiting.
    pub signal_live: u32,
    /// `mm_struct::arg_start` (user address of argv[0]).
    pub mm_arg_start: u32,
    /// `mm_struct::arg_end`, `env_start`, `env_end`: the argument and environment blocks of the
    /// program image, NUL-separated strings on the new stack.
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `mm_struct::owner` (pointer, `CONFIG_MEMCG`): the task an address space belongs to; 0 when
    /// the kernel has none, and the memory hooks are then not loaded.
    pub mm_owner: u32,
    /// `mm_struct::exe_file` (pointer): the executable the address space runs.
    pub mm_exe_file: u32,
    /// `linux_binprm::filename` (pointer to the path being executed).
    pub binprm_filename: u32,
    /// `files_struct::fdt` (pointer).
    pub files_fdt: u32,
    /// `fdtable::max_fds` (unsigned int).
    pub fdtable_max_fds: u32,
    /// `fdtable::fd` (pointer to an array of `struct file *`).
    pub fdtable_fd: u32,
    /// `file::f_inode` (pointer).
    pub file_inode: u32,
    /// `file::f_flags` (unsigned int, the open flags).
    pub file_flags: u32,
    /// `file::f_op` (pointer).
    pub file_op: u32,
    /// `file_operations::open` (function pointer).
    pub fop_open: u32,
    /// `inode::i_ino` (unsigned long).
    pub inode_ino: u32,
    /// `inode::i_sb` (pointer).
    pub inode_sb: u32,
    /// `super_block::s_dev` (dev_t, the kernel's internal encoding).
    pub sb_dev: u32,
    /// `proc_inode::vfs_inode` minus `proc_inode::pid`: from a /proc inode back to its `struct pid *`.
    pub proc_inode_pid_from_inode: u32,
    /// `pid::numbers[0].nr`: the pid number in the initial namespace.
    pub pid_nr: u32,
    /// `pt_regs` slots of the syscall number and its six arguments (x86_64: orig_ax; di, si, dx,
    /// r10, r8, r9).
    pub regs_syscall_nr: u32,
    pub regs_arg: [u32; 6],
}

#[cfg(feature = "user")]
// SAFETY: a repr(C) struct of u32s: no padding, every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}

/// Addresses of kernel functions, from /proc/kallsyms: an open `struct file` whose
/// `f_op->open` is `environ_open` or `mem_open` is `/proc/PID/environ` or `/proc/PID/mem`; a
/// kernel stack that returns into one of `reach_code` is copying another process's memory for
/// that route.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSymbols {
    pub environ_open: u64,
    pub mem_open: u64,
    /// Unused slots are all zero (an empty range).
    pub reach_code: [CodeRange; REACH_CODE_RANGES],
}

/// Slots of [`KernelSymbols::reach_code`].
pub const REACH_CODE_RANGES: usize = 16;

/// The text of one kernel function, `start..end`, and the harvest route it serves
/// (`crate::event::harvest::kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRange {
    pub start: u64,
    pub end: u64,
    pub kind: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: a repr(C) struct of u64s and `CodeRange`s (two u64s, two u32s): no padding, every bit
// pattern valid.
unsafe impl aya::Pod for KernelSymbols {}
