//! Opens of watched secret files and of other processes' `/proc/PID/{environ,mem}`.
//!
//! Raw tracepoint `sys_exit` (Linux 4.17+): every route that returns a new fd through open,
//! creat, openat, openat2 or open_by_handle_at (paths, symlinks, hard links, relative paths,
//! `/proc/self/fd/N`, bind mounts) ends at the same inode, which is what is matched. An
//! unrelated open costs the fd → inode reads and one `WATCHED` lookup (and, on an anonymous
//! device such as /proc's, three reads more to tell an O_PATH handle and environ or mem files).
//!
//! Where the memory hooks run (`harvest.rs`), `/proc` opens are left to them.
//!
//! Never attached on the LSM and fmod_ret tiers, whose `file_open` hook reports every open of a
//! watched inode or of a harvested `/proc` file, by any route (`lsm.rs`).

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{
        harvest::kind,
        kernel_action,
        secret_open::{SecretOpenBody, PATH_LEN},
        EventKind,
    },
    maps::{enforce, fail_closed, policy, GranteeKey, InodeKey, WatchedInode},
    offsets::{CodeRange, KernelSymbols},
    syscalls,
};

use crate::{
    harvest::{self, report_harvest},
    emit::{reserve_decided, set_flag, str_read_flag},
    kill::kill_current,
    listers,
    maps::{enforced, failed_closed, hold, FINISHED_TASKS, GRANTEES, TASK_OF, WATCHED},
    task::{file_flags, file_inode, file_open_op, proc_inode_pid, syscall_arg, syscall_nr, Task},
};

/// Filled in by the daemon from /proc/kallsyms before load.
#[unsafe(no_mangle)]
static SYMBOLS: KernelSymbols = KernelSymbols {
    // SAFETY: all-zero is a valid KernelSymbols (plain integers).
    ..unsafe { core::mem::zeroed() }
};

/// The daemon's own tgid, set before load: it reads every new process's environ and keeps
/// O_PATH handles on secret files, none of which is a use of a secret.
#[unsafe(no_mangle)]
static IGNORED_TGID: u32 = 0;

/// `O_PATH` (uapi): a handle that cannot read the file's content.
const O_PATH: u32 = 0o10_000_000;

/// `TP_PROTO(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let Ok(nr) = syscall_nr(regs) else {
        return 0;
    };
    let nr = nr as u32;
    if syscalls::is_open(nr) {
        let ret: i64 = ctx.arg(1);
        if ret >= 0 && ctx.tgid() != daemon_tgid() {
            on_open(&ctx, regs, nr, ret as u32);
        }
    }
    0
}

#[inline(always)]
fn on_open(ctx: &RawTracePointContext, regs: u64, nr: u32, fd: u32) {
    let Ok(file) = Task::current().file(fd) else {
        return;
    };
    let Ok((inode, key)) = file_inode(file) else {
        return;
    };
    // Read only for opens that could matter: most opens are neither.
    let is_path_only = || file_flags(file).is_ok_and(|flags| flags & O_PATH != 0);
    // SAFETY: the value is copied out at once; a concurrent update can only change which
    // policy applies to this one open.
    if let Some(watched) = unsafe { WATCHED.get(&key) } {
        // A guarded inode's opens were decided and reported by the file guard.
        if watched.guarded == 0 && !is_path_only() {
            on_secret_open(ctx, regs, nr, fd, key, *watched);
        }
        return;
    }
    // /proc sits on an anonymous device (major 0, the top 12 bits of the kernel's `dev_t`): a
    // file on any other device is no harvest, without reading its file operations.
    if key.dev >> 20 != 0 || harvest::active() || is_path_only() {
        return;
    }
    let Some(harvest_kind) = file_open_op(file).ok().and_then(proc_harvest_kind) else {
        return;
    };
    let Ok(target) = proc_inode_pid(inode) else {
        return;
    };
    if target != ctx.tgid() && !(harvest_kind == kind::ENVIRON && listers::listing(Task::current(), ctx.tgid())) {
        report_harvest(harvest_kind, target, kernel_action::NONE);
    }
}

#[inline(always)]
fn on_secret_open(ctx: &RawTracePointContext, regs: u64, nr: u32, fd: u32, key: InodeKey, watched: WatchedInode) {
    let tgid = ctx.tgid();
    let (caller_task, refused) = secret_use_refused(tgid, watched);
    let action = if refused {
        kill_current();
        kernel_action::KILLED
    } else {
        hold(tgid, 1);
        kernel_action::NONE
    };
    report_secret_use(&SecretUse {
        watched,
        key,
        syscall: nr,
        fd: fd as i32,
        caller_task,
        action,
        path: path_argument(regs, nr),
    });
}

/// The caller's task handle and whether its use of `watched` is killed or refused: the one
/// decision of every tier ([`policy::secret_use_refused`]), on the kernel's maps.
#[inline(always)]
pub fn secret_use_refused(tgid: u32, watched: WatchedInode) -> (u32, bool) {
    policy::secret_use_refused(&InKernel, tgid, watched)
}

/// The task handle of process `tgid` as the kernel counts it (see `policy::caller_task`).
#[inline(always)]
pub fn caller_task(tgid: u32) -> u32 {
    policy::caller_task(&InKernel, tgid)
}

/// The policy's lookups in the kernel's maps.
struct InKernel;

impl policy::Lookups for InKernel {
    #[inline(always)]
    fn task_of(&self, tgid: u32) -> Option<u32> {
        // SAFETY: a plain value copied out.
        unsafe { TASK_OF.get(&tgid) }.copied()
    }

    #[inline(always)]
    fn finished(&self, task: u32) -> bool {
        FINISHED_TASKS.get_ptr(task).is_some()
    }

    #[inline(always)]
    fn grantee(&self, secret: u32, task: u32) -> bool {
        GRANTEES.get_ptr(GranteeKey { secret, task }).is_some()
    }

    #[inline(always)]
    fn files_policy(&self) -> u32 {
        enforced(enforce::FILES)
    }

    #[inline(always)]
    fn membership_failed(&self) -> bool {
        failed_closed(fail_closed::MEMBERSHIP)
    }
}

/// A use of a watched inode, for [`report_secret_use`].
pub struct SecretUse {
    pub watched: WatchedInode,
    pub key: InodeKey,
    /// The syscall that reached the file (x86_64 numbering).
    pub syscall: u32,
    /// The fd the open returned; -1 when there is none.
    pub fd: i32,
    pub caller_task: u32,
    /// One of `kernel_action`.
    pub action: u32,
    /// User address of the path the process named, when the syscall took one.
    pub path: Option<u64>,
}

/// Reports a use of a watched inode by the current process.
#[inline(always)]
pub fn report_secret_use(used: &SecretUse) {
    let Some(mut entry) = reserve_decided::<SecretOpenBody>(EventKind::SecretOpen, used.action) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: reserved record of the right size; every field is written before submit.
    let flag = unsafe {
        let body = &raw mut (*event).body;
        (&raw mut (*body).secret).write(used.watched.secret);
        (&raw mut (*body).syscall).write(used.syscall);
        (&raw mut (*body).fd).write(used.fd);
        (&raw mut (*body).dev).write(used.key.dev);
        (&raw mut (*body).ino).write(used.key.ino);
        (&raw mut (*body).caller_task).write(used.caller_task);
        (&raw mut (*body).binding).write(used.watched.binding);
        (&raw mut (*body).action).write(used.action);
        (&raw mut (*body)._pad).write(0);
        let path = &mut *(&raw mut (*body).path);
        path[0] = 0;
        match used.path {
            Some(src) => str_read_flag(bpf_probe_read_user_str_bytes(src as *const u8, path), PATH_LEN),
            None => 0,
        }
    };
    set_flag(&mut entry, flag);
    entry.submit(0);
}

/// User address of the path argument of open syscall `nr`, whose registers are at `regs`.
#[inline(always)]
pub fn path_argument(regs: u64, nr: u32) -> Option<u64> {
    match nr {
        syscalls::OPEN | syscalls::CREAT => syscall_arg(regs, 0).ok(),
        syscalls::OPENAT | syscalls::OPENAT2 => syscall_arg(regs, 1).ok(),
        _ => None,
    }
}

/// The daemon's tgid (0 when not set, e.g. in tests that load the sensors directly).
#[inline(always)]
pub fn daemon_tgid() -> u32 {
    // SAFETY: reading a plain static set before load.
    unsafe { core::ptr::read_volatile(&raw const IGNORED_TGID) }
}

/// Slot `index` (below `REACH_CODE_RANGES`) of the kernel functions that copy another process's
/// memory, by harvest route; read one at a time, as the whole table would not fit the stack.
#[inline(always)]
pub fn reach_code(index: usize) -> CodeRange {
    // SAFETY: reading a plain static set before load; callers pass an index in bounds.
    unsafe { core::ptr::read_volatile(&raw const SYMBOLS.reach_code[index]) }
}

/// The `f_op->open` functions of `/proc/PID/environ` and `/proc/PID/mem`.
#[inline(always)]
pub fn proc_harvest_kind(open_op: u64) -> Option<u32> {
    // SAFETY: reading plain statics set before load.
    let (environ_open, mem_open) =
        unsafe { (core::ptr::read_volatile(&raw const SYMBOLS.environ_open), core::ptr::read_volatile(&raw const SYMBOLS.mem_open)) };
    if open_op == 0 {
        None
    } else if open_op == environ_open {
        Some(kind::ENVIRON)
    } else if open_op == mem_open {
        Some(kind::MEM)
    } else {
        None
    }
}
