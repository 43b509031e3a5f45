//! Syscall-entry sensors: pending kill verdicts, connects and datagram sends by secret holders,
//! and ptrace / process_vm_readv against other processes (where the memory hooks of
//! `harvest.rs` do not run).
//!
//! Raw tracepoint `sys_enter` (Linux 4.17+). A process that holds no secret pays one array read
//! per syscall, plus one `HOLDERS` lookup on connect/sendto/sendmsg (left to `sockets.rs` where
//! its cgroup hooks are attached). On the LSM tier, connects,
//! ptrace attaches and `process_vm_readv` are left to `lsm.rs`, whose hooks see them (io_uring's
//! connects too) and can refuse them: reporting them here as well would report them twice.

use aya_ebpf::{
    helpers::bpf_probe_read_user_buf,
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{
        connect::ConnectBody,
        flags,
        harvest::kind,
        kernel_action,
        EventKind,
    },
    syscalls,
};

use crate::{
    kill::kill_current,
    emit::{reserve, set_flag},
    files::daemon_tgid,
    harvest::{self, report_harvest},
    destinations::{AF_INET, AF_INET6},
    lsm,
    maps::{self, VERDICTS, VERDICT_COUNT},
    sockets,
    task::{read_user, syscall_arg},
};

/// `TP_PROTO(struct pt_regs *regs, long id)`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    if pending_verdicts() && VERDICTS.get_ptr(ctx.tgid()).is_some() {
        kill_current();
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let nr: u64 = ctx.arg(1);
    match nr as u32 {
        // connect(fd, addr, addrlen); on the LSM tier `socket_connect` reports and judges it.
        syscalls::CONNECT if !lsm::active() && !sockets::active() && is_holder(&ctx) => {
            if let (Ok(addr), Ok(len)) = (syscall_arg(regs, 1), syscall_arg(regs, 2)) {
                report_connect(syscalls::CONNECT, addr, len as u32);
            }
        }
        // sendto(fd, buf, len, flags, dest_addr, addrlen)
        syscalls::SENDTO if !sockets::active() && is_holder(&ctx) => {
            if let (Ok(addr), Ok(len)) = (syscall_arg(regs, 4), syscall_arg(regs, 5)) {
                report_connect(syscalls::SENDTO, addr, len as u32);
            }
        }
        // sendmsg(fd, msg, flags): the destination is `msg->msg_name` (offset 0 of the user
        // ABI's `struct user_msghdr`), its length `msg_namelen` (offset 8).
        syscalls::SENDMSG if !sockets::active() && is_holder(&ctx) => {
            if let Ok(msg) = syscall_arg(regs, 1) {
                if let (Ok(addr), Ok(len)) = (read_user::<u64>(msg, 0), read_user::<u32>(msg, 8)) {
                    report_connect(syscalls::SENDMSG, addr, len);
                }
            }
        }
        // On the LSM tier `ptrace_access_check` reports (and may refuse) these; on this tier the
        // memory hooks report them, where they run.
        syscalls::PTRACE if !lsm::active() && !harvest::active() => {
            if let (Ok(request), Ok(target)) = (syscall_arg(regs, 0), syscall_arg(regs, 1)) {
                if matches!(request, syscalls::PTRACE_ATTACH | syscalls::PTRACE_SEIZE) {
                    report_other(&ctx, kind::PTRACE, target as u32);
                }
            }
        }
        syscalls::PROCESS_VM_READV if !lsm::active() && !harvest::active() => {
            if let Ok(target) = syscall_arg(regs, 0) {
                report_other(&ctx, kind::VM_READV, target as u32);
            }
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn report_other(ctx: &RawTracePointContext, harvest_kind: u32, target: u32) {
    // The daemon reads the path a waiting opener named (file guard): no harvest.
    if target != ctx.tgid() && ctx.tgid() != daemon_tgid() {
        report_harvest(harvest_kind, target, kernel_action::NONE);
    }
}

#[inline(always)]
fn pending_verdicts() -> bool {
    VERDICT_COUNT.get(0).is_some_and(|&count| count > 0)
}

#[inline(always)]
fn is_holder(ctx: &RawTracePointContext) -> bool {
    maps::is_holder(ctx.tgid())
}

#[inline(always)]
fn report_connect(nr: u32, addr: u64, len: u32) {
    if addr == 0 {
        return; // a send on a connected socket: its connect was reported
    }
    let mut family = [0u8; 2];
    // SAFETY: bounded copy from user memory into a local buffer.
    if unsafe { bpf_probe_read_user_buf(addr as *const u8, &mut family) }.is_err() {
        return;
    }
    let family = u16::from_ne_bytes(family);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let Some(mut entry) = reserve::<ConnectBody>(EventKind::Connect) else {
        return;
    };
    // SAFETY: reserved record of the right size; every field is written before submit.
    let failed = unsafe {
        let body = &raw mut (*entry.as_mut_ptr()).body;
        (&raw mut (*body).syscall).write(nr);
        (&raw mut (*body).addr_len).write(len);
        (&raw mut (*body).action).write(kernel_action::NONE);
        let buf = &mut *(&raw mut (*body).addr);
        buf.fill(0);
        bpf_probe_read_user_buf(addr as *const u8, buf).is_err()
    };
    if failed {
        set_flag(&mut entry, flags::READ_FAILED);
    }
    entry.submit(0);
}
