//! Process lifecycle sensors: exec, fork (new processes only) and exit (last thread only).
//!
//! Raw tracepoints `sched_process_{exec,fork,exit}`: Linux 4.17+. Every process is reported, since
//! the daemon keeps the whole process tree; these events are rare next to file and socket hooks.

use aya_ebpf::{
    helpers::{
        bpf_get_current_uid_gid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{
        exec::{ExecBody, ARGV0_LEN, FILENAME_LEN},
        exit::ExitBody,
        flags,
        fork::ForkBody,
        EventKind,
    },
    maps::{fail_closed as flag, written},
};

use crate::{
    emit::{reserve, set_flag, str_read_flag},
    maps::{fail_closed, hold, write_failed, HOLDERS, TASK_OF},
    task::{binprm_filename, Task},
};

/// `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`; runs in the
/// context of the task after its new image is in place.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let bprm: u64 = ctx.arg(2);
    let Some(mut entry) = reserve::<ExecBody>(EventKind::Exec) else {
        return 0;
    };
    let event = entry.as_mut_ptr();
    let current = Task::current();
    let mut flag = 0;
    let (parent_tgid, parent_start_time) = match current
        .real_parent()
        .and_then(|parent| Ok((parent.tgid()?, parent.process_start_time()?)))
    {
        Ok(parent) => parent,
        Err(_) => {
            flag |= flags::READ_FAILED;
            (0, 0)
        }
    };
    // SAFETY: `event` points at a reserved record of the right size; each field is written
    // before submit, string fields through the kernel's bounded string copies.
    unsafe {
        let body = &raw mut (*event).body;
        (&raw mut (*body).parent_tgid).write(parent_tgid);
        (&raw mut (*body).parent_start_time).write(parent_start_time);
        (&raw mut (*body).uid).write(bpf_get_current_uid_gid() as u32);

        let filename = &mut *(&raw mut (*body).filename);
        filename[0] = 0;
        flag |= match binprm_filename(bprm) {
            Ok(src) => str_read_flag(
                bpf_probe_read_kernel_str_bytes(src as *const u8, filename),
                FILENAME_LEN,
            ),
            Err(_) => flags::READ_FAILED,
        };

        let argv0 = &mut *(&raw mut (*body).argv0);
        argv0[0] = 0;
        flag |= match current.arg_start() {
            Ok(src) => {
                str_read_flag(bpf_probe_read_user_str_bytes(src as *const u8, argv0), ARGV0_LEN)
            }
            Err(_) => flags::READ_FAILED,
        };
    }
    set_flag(&mut entry, flag);
    entry.submit(0);
    0
}

/// `TP_PROTO(struct task_struct *parent, struct task_struct *child)`, in the parent's context.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let child = Task::from_arg(ctx.arg(1));
    let (Ok(pid), Ok(tgid)) = (child.pid(), child.tgid()) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a new thread, not a new process
    }
    inherit(&ctx, tgid);
    let Some(mut entry) = reserve::<ForkBody>(EventKind::Fork) else {
        return 0;
    };
    let (child_start_time, flag) = match child.start_time() {
        Ok(start) => (start, 0),
        Err(_) => (0, flags::READ_FAILED),
    };
    // SAFETY: reserved record of the right size.
    unsafe {
        (&raw mut (*entry.as_mut_ptr()).body).write(ForkBody {
            child_tgid: tgid,
            _pad: 0,
            child_start_time,
        });
    }
    set_flag(&mut entry, flag);
    entry.submit(0);
    0
}

/// `TP_PROTO(struct task_struct *p, ...)`, in the exiting task's context after `do_exit` has
/// decremented `signal->live`, so zero live threads means the whole process is gone.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let task = Task::from_arg(ctx.arg(0));
    if !matches!(task.live_threads(), Ok(0)) {
        return 0;
    }
    forget(ctx.tgid());
    let Some(mut entry) = reserve::<ExitBody>(EventKind::Exit) else {
        return 0;
    };
    let (exit_code, flag) = match task.exit_code() {
        Ok(code) => (code, 0),
        Err(_) => (0, flags::READ_FAILED),
    };
    // SAFETY: reserved record of the right size.
    unsafe {
        (&raw mut (*entry.as_mut_ptr()).body).write(ExitBody { exit_code, _pad: 0 });
    }
    set_flag(&mut entry, flag);
    entry.submit(0);
    0
}

/// A child belongs to its parent's task and holds what its parent holds (inherited env and fds).
/// A membership that cannot be recorded fails closed: see `fail_closed::MEMBERSHIP`.
#[inline(always)]
fn inherit(ctx: &RawTracePointContext, child: u32) {
    let parent = ctx.tgid();
    // SAFETY: plain values copied out.
    if let Some(&task) = unsafe { TASK_OF.get(&parent) } {
        if TASK_OF.insert(&child, &task, 0).is_err() {
            write_failed(written::TASK_OF, parent);
            fail_closed(flag::MEMBERSHIP);
        }
    }
    // SAFETY: as above.
    if let Some(&held) = unsafe { HOLDERS.get(&parent) } {
        hold(child, held);
    }
}

/// Drops per-process state when the process is gone, so a reused pid starts clean.
#[inline(always)]
fn forget(tgid: u32) {
    let _ = TASK_OF.remove(&tgid);
    let _ = HOLDERS.remove(&tgid);
}
