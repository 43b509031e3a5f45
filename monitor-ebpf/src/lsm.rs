//! The security hooks of the LSM and fmod_ret tiers: they see every route to a file, a socket or a
//! process, whatever the syscall, and can refuse with EPERM.
//!
//! On the LSM tier each program attaches to its BPF LSM hook: Linux 5.7+ built with
//! `CONFIG_BPF_LSM=y`, `bpf` in the active LSM list (`lsm=` boot parameter;
//! `/sys/kernel/security/lsm`), BTF and BPF trampolines. On the fmod_ret tier (BPF LSM built but not
//! active, the common production kernel) the same program is loaded as `fmod_ret` on the kernel's
//! `security_<hook>` function, which takes the same arguments and whose non-zero return refuses the
//! same way: Linux 5.7+, BTF and BPF trampolines (`CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS`), see
//! `monitor/src/sensors/fmod_ret.rs`. Only `security_mmap_file` differs from its hook (one argument
//! fewer), so it has a program of its own. The syscall that led to a hook is read through
//! `bpf_task_pt_regs`, Linux 5.15+. The loader attaches them only when doctor chose one of these
//! tiers, and tells the tracepoint programs (`SECURITY_HOOKS`) to leave to them what they report
//! here.
//!
//! Each hook returns an earlier program's refusal unchanged, and allows when it cannot read what
//! it needs: a kernel these programs misread loses enforcement, not availability.

use aya_ebpf::{
    bindings::task_struct,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel_buf,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::lsm,
    programs::LsmContext,
};
use monitor_common::{
    event::{
        connect::SOCKADDR_LEN,
        harvest::kind,
        kernel_action,
    },
    maps::{enforce, InodeKey, WatchedInode},
    syscalls,
};

use crate::{
    destinations::{allowed_destination, report_connect, AF_INET, AF_INET6},
    files::{daemon_tgid, path_argument, proc_harvest_kind, report_secret_use, secret_use_refused, SecretUse},
    harvest::{refuses_harvest, report_harvest},
    listers,
    maps::{enforced, hold, is_holder, TASK_OF, WATCHED},
    task::{file_inode, file_open_op, proc_inode_pid, read_kernel, syscall_nr, Task},
};

/// Set to 1 by the loader on the LSM and fmod_ret tiers.
#[unsafe(no_mangle)]
static SECURITY_HOOKS: u32 = 0;

/// Whether the programs here are attached: the syscall tracepoints then leave connects, ptrace
/// attaches and `process_vm_readv` to them.
#[inline(always)]
pub fn active() -> bool {
    // SAFETY: reading a plain static set before load.
    unsafe { core::ptr::read_volatile(&raw const SECURITY_HOOKS) != 0 }
}

const EPERM: i32 = 1;
/// `MAY_READ` of a `file_permission` mask.
const MAY_READ: i32 = 4;
/// `PF_IO_WORKER`, `PF_KTHREAD` of `task_struct::flags`.
const PF_IO_WORKER: u32 = 0x0000_0010;
const PF_KTHREAD: u32 = 0x0020_0000;
/// `ptrace_may_access` modes: attach-level access checked against the real credentials is what
/// ptrace attach, `process_vm_readv/writev` and `pidfd_getfd` ask for.
const PTRACE_MODE_ATTACH_REALCREDS: u32 = 0x02 | 0x10;
/// Syscall number when the saved registers could not be read.
const UNKNOWN_SYSCALL: u32 = u32::MAX;

// ---- files ----------------------------------------------------------------------------------

/// Every open of a file, by any route: open syscalls, io_uring `IORING_OP_OPENAT`, exec. A watched
/// inode's open is reported here, and refused against its policy; so is an open of another
/// process's `/proc/PID/{environ,mem}`, refused for a secret holder of another task when the
/// environ_harvest rule refuses. `sys_exit` is never attached with these hooks, so the report
/// carries no fd. `O_PATH` opens never reach this hook.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let tgid = current_tgid();
    if tgid == daemon_tgid() {
        return 0;
    }
    let Ok((inode, key)) = file_inode(file) else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    if let Some(watched) = unsafe { WATCHED.get(&key) }.copied() {
        return on_secret(tgid, key, watched, Use::Open);
    }
    let Some(harvest_kind) = file_open_op(file).ok().and_then(proc_harvest_kind) else {
        return 0;
    };
    let Ok(target) = proc_inode_pid(inode) else {
        return 0;
    };
    let route = Route::current();
    if target == tgid || route.kernel_thread {
        return 0;
    }
    if harvest_kind == kind::ENVIRON && listers::listing(Task::current(), tgid) {
        return 0;
    }
    if refuses_harvest(tgid, target) {
        report_harvest(harvest_kind, target, kernel_action::DENIED);
        return -EPERM;
    }
    report_harvest(harvest_kind, target, kernel_action::NONE);
    0
}

/// Every read of an open file (`read`, `pread`, `readv`, `sendfile`, `splice`,
/// `copy_file_range`, io_uring reads): refuses a read of a watched inode against its policy
/// through an fd obtained before the policy applied (opened before the binding, inherited, passed
/// over a socket). Costs every read on the host a mask test, the inode reads and one lookup.
#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let mask: i32 = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if mask & MAY_READ == 0 {
        return 0;
    }
    on_file_use(file, Use::Read)
}

/// `mmap` of an open file: the same refusal as `file_permission`, for a mapping's reads.
#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    // (file, reqprot, prot, flags)
    on_mmap(ctx.arg(0), ctx.arg(4))
}

/// `mmap_file` on the fmod_ret tier: `security_mmap_file(file, prot, flags)` has no `reqprot`, so
/// the earlier programs' verdict is one argument sooner. aya parses no `fmod_ret` section, so this
/// one is named as an fentry program; `sensors/fmod_ret.rs` loads it as fmod_ret all the same.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_mmap_file")]
pub fn security_mmap_file(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    on_mmap(ctx.arg(0), ctx.arg(3))
}

#[inline(always)]
fn on_mmap(file: *const u8, previous: i32) -> i32 {
    if previous != 0 {
        return previous;
    }
    if file.is_null() {
        return 0; // an anonymous mapping
    }
    on_file_use(file, Use::Mmap)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Open,
    Read,
    Mmap,
}

#[inline(always)]
fn on_file_use(file: *const u8, used: Use) -> i32 {
    let tgid = current_tgid();
    if tgid == daemon_tgid() {
        return 0;
    }
    let Ok((_, key)) = file_inode(file) else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    match unsafe { WATCHED.get(&key) }.copied() {
        Some(watched) => on_secret(tgid, key, watched, used),
        None => 0,
    }
}

/// The decision on a watched inode, with `secret_use_refused` as at `sys_exit`: there a kill, here a
/// refusal, so the process never holds the secret. An allowed open makes the process a holder and
/// is reported; an allowed read or mapping is not (its open was).
#[inline(always)]
fn on_secret(tgid: u32, key: InodeKey, watched: WatchedInode, used: Use) -> i32 {
    let route = Route::current();
    if route.kernel_thread {
        return 0;
    }
    let (caller_task, refused) = secret_use_refused(tgid, watched);
    let by_open_syscall = used == Use::Open && syscalls::is_open(route.syscall);
    let action = if refused {
        kernel_action::DENIED
    } else if used == Use::Open {
        hold(tgid, 1);
        kernel_action::NONE
    } else {
        return 0;
    };
    let syscall = match used {
        Use::Mmap => syscalls::MMAP,
        Use::Open | Use::Read => route.syscall,
    };
    report_secret_use(&SecretUse {
        watched,
        key,
        syscall,
        fd: -1,
        caller_task,
        action,
        path: if by_open_syscall { path_argument(route.regs, route.syscall) } else { None },
    });
    if refused {
        -EPERM
    } else {
        0
    }
}

// ---- network --------------------------------------------------------------------------------

/// Every connect (io_uring's included), before any packet is sent: reports the connects of
/// secret holders, and refuses those outside their task's allowed destinations when the
/// unexpected_destination rule refuses.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let address: *const u8 = ctx.arg(1);
    let address_len: i32 = ctx.arg(2);
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let tgid = current_tgid();
    if tgid == daemon_tgid() || !is_holder(tgid) {
        return 0;
    }
    let Ok(family) = read_kernel::<u16>(address, 0) else {
        return 0;
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    // The kernel copied the caller's address into a `sockaddr_storage`, so reading a whole
    // `sockaddr_in6` stays inside it even for a `sockaddr_in`.
    let mut sockaddr = [0u8; SOCKADDR_LEN];
    // SAFETY: bounded copy from kernel memory into a local buffer.
    if unsafe { bpf_probe_read_kernel_buf(address, &mut sockaddr) }.is_err() {
        return 0;
    }
    let refused = enforced(enforce::CONNECT) != 0 && !allowed_destination(tgid, family, &sockaddr);
    let action = if refused { kernel_action::DENIED } else { kernel_action::NONE };
    report_connect(syscalls::CONNECT, &sockaddr, address_len as u32, action);
    if refused {
        -EPERM
    } else {
        0
    }
}

// ---- processes ------------------------------------------------------------------------------

/// Attach-level access to another process: ptrace attach, `process_vm_readv/writev`,
/// `pidfd_getfd`. Reported for every target (as the tracepoint tier reports attach attempts), and
/// refused for a secret holder of another task when the environ_harvest rule refuses. Any access
/// to the daemon (its memory holds the fingerprint key) is refused unless the caller is root
/// outside every task.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let child = Task::from_arg(ctx.arg(0));
    let mode: u32 = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let tgid = current_tgid();
    let daemon = daemon_tgid();
    let Ok(target) = child.tgid() else {
        return 0;
    };
    if target == tgid || tgid == daemon {
        return 0;
    }
    if daemon != 0 && target == daemon && !root_outside_tasks(tgid) {
        return -EPERM;
    }
    // /proc opens ask for FSCREDS access: `file_open` judges them, knowing which file it is.
    if mode & PTRACE_MODE_ATTACH_REALCREDS != PTRACE_MODE_ATTACH_REALCREDS {
        return 0;
    }
    let route = Route::current();
    if route.kernel_thread {
        return 0;
    }
    let harvest_kind = match route.syscall {
        syscalls::PROCESS_VM_READV | syscalls::PROCESS_VM_WRITEV => kind::VM_READV,
        _ => kind::PTRACE,
    };
    let refused = refuses_harvest(tgid, target);
    report_harvest(harvest_kind, target, if refused { kernel_action::DENIED } else { kernel_action::NONE });
    if refused {
        -EPERM
    } else {
        0
    }
}

/// Signals to the daemon: only root outside every task may send them (`systemctl stop`, an
/// administrator's `kill`); an agent's process, even as root, cannot kill or stop it. Signals the
/// kernel sends itself (SIGCHLD, a dying parent's) do not reach this hook.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let target = Task::from_arg(ctx.arg(0));
    let signal: i32 = ctx.arg(2);
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let daemon = daemon_tgid();
    if daemon == 0 || signal == 0 {
        return 0; // no daemon (sensors loaded by a test), or an existence check
    }
    if target.tgid() != Ok(daemon) {
        return 0;
    }
    let tgid = current_tgid();
    if tgid == daemon || root_outside_tasks(tgid) {
        0
    } else {
        -EPERM
    }
}

#[inline(always)]
fn root_outside_tasks(tgid: u32) -> bool {
    bpf_get_current_uid_gid() as u32 == 0 && TASK_OF.get_ptr(tgid).is_none()
}

// ---- common ---------------------------------------------------------------------------------

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// How the current task reached a hook.
struct Route {
    /// The syscall in progress (x86_64 numbering); `IO_URING_ENTER` for an io_uring worker, whose
    /// saved registers are zeroed; `UNKNOWN_SYSCALL` if unreadable.
    syscall: u32,
    /// Its saved user registers (0 for a worker).
    regs: u64,
    /// A kernel thread: no task's policy applies to it.
    kernel_thread: bool,
}

impl Route {
    #[inline(always)]
    fn current() -> Self {
        let flags = Task::current().flags().unwrap_or(0);
        if flags & PF_KTHREAD != 0 {
            return Self { syscall: UNKNOWN_SYSCALL, regs: 0, kernel_thread: true };
        }
        if flags & PF_IO_WORKER != 0 {
            return Self { syscall: syscalls::IO_URING_ENTER, regs: 0, kernel_thread: false };
        }
        // SAFETY: `bpf_get_current_task_btf` gives the trusted pointer this helper takes.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf() as *mut task_struct) } as u64;
        let syscall = syscall_nr(regs).map_or(UNKNOWN_SYSCALL, |nr| nr as u32);
        Self { syscall, regs, kernel_thread: false }
    }
}
