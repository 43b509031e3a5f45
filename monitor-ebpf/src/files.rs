//! Opens of watched secret files and of other processes' `/proc/PID/{environ,mem}`.
//!
//! Raw tracepoint `sys_exit` (Linux 4.17+): every route that returns a new fd through open,
//! creat, openat, openat2 or open_by_handle_at (paths, symlinks, hard links, relative paths,
//! `/proc/self/fd/N`, bind mounts) ends at the same inode, which is what is matched. An
//! unrelated open costs the fd → inode reads and one `WATCHED` lookup.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{
        harvest::{kind, HarvestBody},
        kernel_action,
        secret_open::{SecretOpenBody, PATH_LEN},
        EventKind,
    },
    maps::{policy, InodeKey, WatchedInode},
    offsets::KernelSymbols,
    syscalls,
};

use crate::{
    kill::kill_current,
    emit::{reserve, set_flag, str_read_flag},
    maps::{HOLDERS, TASK_OF, WATCHED},
    task::{file_flags, file_inode, file_open_op, proc_inode_pid, syscall_arg, syscall_nr, Task},
};

/// Filled in by the daemon from /proc/kallsyms before load.
#[unsafe(no_mangle)]
static SYMBOLS: KernelSymbols = KernelSymbols { environ_open: 0, mem_open: 0 };

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
    if matches!(
        nr,
        syscalls::OPEN | syscalls::CREAT | syscalls::OPENAT | syscalls::OPENAT2 | syscalls::OPEN_BY_HANDLE_AT
    ) {
        let ret: i64 = ctx.arg(1);
        // SAFETY: reading a plain static set before load.
        let ignored = unsafe { core::ptr::read_volatile(&raw const IGNORED_TGID) };
        if ret >= 0 && ctx.tgid() != ignored {
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
    if file_flags(file).is_ok_and(|flags| flags & O_PATH != 0) {
        return;
    }
    let Ok((inode, key)) = file_inode(file) else {
        return;
    };
    // SAFETY: the value is copied out at once; a concurrent update can only change which
    // policy applies to this one open.
    if let Some(watched) = unsafe { WATCHED.get(&key) } {
        on_secret_open(ctx, regs, nr, fd, key, *watched);
        return;
    }
    let Ok(open_op) = file_open_op(file) else {
        return;
    };
    // SAFETY: reading plain statics set before load.
    let symbols = unsafe { core::ptr::read_volatile(&raw const SYMBOLS) };
    let harvest_kind = if open_op != 0 && open_op == symbols.environ_open {
        kind::ENVIRON
    } else if open_op != 0 && open_op == symbols.mem_open {
        kind::MEM
    } else {
        return;
    };
    let Ok(target) = proc_inode_pid(inode) else {
        return;
    };
    if target != ctx.tgid() {
        report_harvest(harvest_kind, target);
    }
}

#[inline(always)]
fn on_secret_open(ctx: &RawTracePointContext, regs: u64, nr: u32, fd: u32, key: InodeKey, watched: WatchedInode) {
    let tgid = ctx.tgid();
    // SAFETY: plain value copied out.
    let caller_task = unsafe { TASK_OF.get(&tgid) }.copied().unwrap_or(0);
    let action = if policy::kills(watched.policy, watched.owner_task, caller_task) {
        kill_current();
        kernel_action::KILLED
    } else {
        let _ = HOLDERS.insert(&tgid, &1, 0);
        kernel_action::NONE
    };
    let Some(mut entry) = reserve::<SecretOpenBody>(EventKind::SecretOpen) else {
        return;
    };
    let event = entry.as_mut_ptr();
    let path_arg = match nr {
        syscalls::OPEN | syscalls::CREAT => syscall_arg(regs, 0),
        syscalls::OPENAT | syscalls::OPENAT2 => syscall_arg(regs, 1),
        _ => Err(0),
    };
    // SAFETY: reserved record of the right size; every field is written before submit.
    let flag = unsafe {
        let body = &raw mut (*event).body;
        (&raw mut (*body).secret).write(watched.secret);
        (&raw mut (*body).syscall).write(nr);
        (&raw mut (*body).fd).write(fd as i32);
        (&raw mut (*body).dev).write(key.dev);
        (&raw mut (*body).ino).write(key.ino);
        (&raw mut (*body).caller_task).write(caller_task);
        (&raw mut (*body).owner_task).write(watched.owner_task);
        (&raw mut (*body).action).write(action);
        (&raw mut (*body)._pad).write(0);
        let path = &mut *(&raw mut (*body).path);
        path[0] = 0;
        match path_arg {
            Ok(src) => str_read_flag(bpf_probe_read_user_str_bytes(src as *const u8, path), PATH_LEN),
            Err(_) => 0,
        }
    };
    set_flag(&mut entry, flag);
    entry.submit(0);
}

/// Reports that the current process reached into process `target`.
#[inline(always)]
pub fn report_harvest(harvest_kind: u32, target: u32) {
    let Some(mut entry) = reserve::<HarvestBody>(EventKind::Harvest) else {
        return;
    };
    // SAFETY: reserved record of the right size.
    unsafe {
        (&raw mut (*entry.as_mut_ptr()).body).write(HarvestBody { kind: harvest_kind, target });
    }
    entry.submit(0);
}
