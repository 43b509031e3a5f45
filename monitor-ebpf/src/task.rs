//! Reads of `struct task_struct` and friends at offsets resolved from the running kernel's BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use monitor_common::offsets::KernelOffsets;

/// Filled in by the daemon before load (see `monitor::sensors::offsets`); zero here.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    // SAFETY: all-zero is a valid KernelOffsets (plain integers).
    ..unsafe { core::mem::zeroed() }
};

/// Reads one offset. Volatile, or the compiler would fold the zero initialiser into the code.
macro_rules! offset {
    ($field:ident[$index:expr]) => {
        // SAFETY: reading a plain static.
        unsafe { core::ptr::read_volatile(&raw const OFFSETS.$field[$index]) } as usize
    };
    ($field:ident) => {
        // SAFETY: reading a plain static.
        unsafe { core::ptr::read_volatile(&raw const OFFSETS.$field) } as usize
    };
}

/// Reads a `T` at `base + offset` from kernel memory.
#[inline(always)]
pub(crate) fn read_kernel<T>(base: *const u8, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
}

/// A `struct task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(*const u8);

impl Task {
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: always valid in a tracing program.
        Self(unsafe { bpf_get_current_task() } as *const u8)
    }

    #[inline(always)]
    pub fn from_arg(ptr: u64) -> Self {
        Self(ptr as *const u8)
    }

    #[inline(always)]
    pub fn pid(self) -> Result<u32, i32> {
        read_kernel(self.0, offset!(task_pid))
    }

    #[inline(always)]
    pub fn tgid(self) -> Result<u32, i32> {
        read_kernel(self.0, offset!(task_tgid))
    }

    /// The tracer while traced, else the real parent.
    #[inline(always)]
    pub fn parent(self) -> Result<Self, i32> {
        read_kernel::<u64>(self.0, offset!(task_parent)).map(Self::from_arg)
    }

    /// Whether a tracer is attached.
    #[inline(always)]
    pub fn traced(self) -> bool {
        read_kernel::<u32>(self.0, offset!(task_ptrace)).is_ok_and(|ptrace| ptrace != 0)
    }

    /// The `struct mm_struct *` of this task's address space (0 for a kernel thread).
    #[inline(always)]
    pub fn mm(self) -> Result<u64, i32> {
        read_kernel(self.0, offset!(task_mm))
    }

    /// The `struct file *` of the executable this task's address space runs.
    #[inline(always)]
    pub fn exe_file(self) -> Result<*const u8, i32> {
        read_kernel::<u64>(self.mm()? as *const u8, offset!(mm_exe_file)).map(|file| file as *const u8)
    }

    /// The task address space `mm` belongs to (`mm_struct::owner`).
    #[inline(always)]
    pub fn owner_of(mm: u64) -> Result<Self, i32> {
        read_kernel::<u64>(mm as *const u8, offset!(mm_owner)).map(Self::from_arg)
    }

    #[inline(always)]
    pub fn real_parent(self) -> Result<Self, i32> {
        read_kernel::<u64>(self.0, offset!(task_real_parent)).map(Self::from_arg)
    }

    /// Start time of the thread group leader: threads share their process's identity.
    #[inline(always)]
    pub fn process_start_time(self) -> Result<u64, i32> {
        let leader = read_kernel::<u64>(self.0, offset!(task_group_leader)).map(Self::from_arg)?;
        read_kernel(leader.0, offset!(task_start_boottime))
    }

    /// This task's own start time (for a new process, the process's).
    #[inline(always)]
    pub fn start_time(self) -> Result<u64, i32> {
        read_kernel(self.0, offset!(task_start_boottime))
    }

    /// `PF_*` flags.
    #[inline(always)]
    pub fn flags(self) -> Result<u32, i32> {
        read_kernel(self.0, offset!(task_flags))
    }

    #[inline(always)]
    pub fn exit_code(self) -> Result<u32, i32> {
        read_kernel(self.0, offset!(task_exit_code))
    }

    /// Live threads of this task's process; `do_exit` has already counted the exiting one out.
    #[inline(always)]
    pub fn live_threads(self) -> Result<i32, i32> {
        let signal = read_kernel::<u64>(self.0, offset!(task_signal))? as *const u8;
        read_kernel(signal, offset!(signal_live))
    }

    /// The `struct file *` behind descriptor `fd` of this task's file table.
    #[inline(always)]
    pub fn file(self, fd: u32) -> Result<*const u8, i32> {
        let files = read_kernel::<u64>(self.0, offset!(task_files))? as *const u8;
        let fdt = read_kernel::<u64>(files, offset!(files_fdt))? as *const u8;
        let max_fds: u32 = read_kernel(fdt, offset!(fdtable_max_fds))?;
        if fd >= max_fds {
            return Err(-1);
        }
        let array = read_kernel::<u64>(fdt, offset!(fdtable_fd))? as *const u8;
        let file = read_kernel::<u64>(array, fd as usize * 8)? as *const u8;
        if file.is_null() {
            return Err(-1);
        }
        Ok(file)
    }

    /// User address of argv[0] of the current program image.
    #[inline(always)]
    pub fn arg_start(self) -> Result<u64, i32> {
        read_kernel(self.mm()? as *const u8, offset!(mm_arg_start))
    }

    /// User addresses of the program image's argument block (`arg_start..arg_end`) and
    /// environment block (`env_start..env_end`).
    #[inline(always)]
    pub fn blocks(self) -> Result<[u64; 4], i32> {
        let mm = self.mm()? as *const u8;
        Ok([
            read_kernel(mm, offset!(mm_arg_start))?,
            read_kernel(mm, offset!(mm_arg_end))?,
            read_kernel(mm, offset!(mm_env_start))?,
            read_kernel(mm, offset!(mm_env_end))?,
        ])
    }
}

/// Reads a `T` at `base + offset` from user memory.
#[inline(always)]
pub fn read_user<T>(base: u64, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_user validates the address; a bad one returns an error.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user((base as *const u8).wrapping_add(offset).cast::<T>()) }
}

/// Syscall number saved in the `struct pt_regs` at `regs`.
#[inline(always)]
pub fn syscall_nr(regs: u64) -> Result<u64, i32> {
    read_kernel(regs as *const u8, offset!(regs_syscall_nr))
}

/// Argument `n` (0-based, at most 5) of the syscall whose registers are at `regs`. At syscall exit
/// the saved argument registers still hold the caller's values.
#[inline(always)]
pub fn syscall_arg(regs: u64, n: usize) -> Result<u64, i32> {
    read_kernel(regs as *const u8, offset!(regs_arg[n]))
}

/// Device and inode number of an open `struct file`.
#[inline(always)]
pub fn file_inode(file: *const u8) -> Result<(*const u8, monitor_common::maps::InodeKey), i32> {
    let inode = read_kernel::<u64>(file, offset!(file_inode))? as *const u8;
    let ino: u64 = read_kernel(inode, offset!(inode_ino))?;
    let sb = read_kernel::<u64>(inode, offset!(inode_sb))? as *const u8;
    let dev: u32 = read_kernel(sb, offset!(sb_dev))?;
    Ok((inode, monitor_common::maps::InodeKey { dev, _pad: 0, ino }))
}

/// The open flags of an open `struct file`.
#[inline(always)]
pub fn file_flags(file: *const u8) -> Result<u32, i32> {
    read_kernel(file, offset!(file_flags))
}

/// `f_op->open` of an open `struct file`: identifies /proc special files.
#[inline(always)]
pub fn file_open_op(file: *const u8) -> Result<u64, i32> {
    let fops = read_kernel::<u64>(file, offset!(file_op))? as *const u8;
    read_kernel(fops, offset!(fop_open))
}

/// The pid number of the process a /proc inode belongs to.
#[inline(always)]
pub fn proc_inode_pid(inode: *const u8) -> Result<u32, i32> {
    let pid_field = inode.wrapping_sub(offset!(proc_inode_pid_from_inode));
    let pid = read_kernel::<u64>(pid_field, 0)? as *const u8;
    read_kernel(pid, offset!(pid_nr))
}

/// `linux_binprm::filename` of the binprm at `bprm`.
#[inline(always)]
pub fn binprm_filename(bprm: u64) -> Result<u64, i32> {
    read_kernel(bprm as *const u8, offset!(binprm_filename))
}
