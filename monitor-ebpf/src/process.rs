//! Process lifecycle sensors: exec, fork (new processes only) and exit (last thread only).
//!
//! Raw tracepoints `sched_process_{exec,fork,exit}`: Linux 4.17+. Every process is reported, since
//! the daemon keeps the whole process tree; these events are rare next to file and socket hooks.

use aya_ebpf::{
    helpers::{
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext as _,
};
use monitor_common::{
    event::{
        exec::{
            CaptureLimits, ExecBody, ExecCapture, ExecRecord, ARGV0_LEN, ARGV_CAPTURE, ENV_CAPTURE, FILENAME_LEN,
        },
        Event,
        exit::ExitBody,
        flags,
        fork::ForkBody,
        EventKind,
    },
    maps::{fail_closed as flag, written},
};

use crate::{
    emit::{count_lost, header, reserve, set_flag, str_read_flag},
    listers,
    maps::{fail_closed, hold, write_failed, EVENTS, EXEC_SCRATCH, HOLDERS, TASK_OF},
    task::{binprm_filename, Task},
};

/// `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`; runs in the
/// context of the task after its new image is in place, so its argument and environment blocks
/// are on the new stack: they are captured here, before the process can exit or change them.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let bprm: u64 = ctx.arg(2);
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(record) = EXEC_SCRATCH.get_ptr_mut(cpu) else {
        count_lost(EventKind::Exec);
        return 0;
    };
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
    // SAFETY: `record` points at this CPU's scratch record, which no other program uses while
    // this one runs; each field is written before the record is sent, string fields through the
    // kernel's bounded string copies.
    let sent = unsafe {
        let event = &raw mut (*record).event;
        (&raw mut (*event).header).write(header(EventKind::Exec));
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

        let (capture, read_flag) = capture_blocks(current, record);
        flag |= read_flag;
        (&raw mut (*record).capture).write(capture);
        (*event).header.flags |= flag;
        let used = RECORD_HEAD + capture.argv_len as usize + capture.env_len as usize;
        EVENTS.output::<[u8]>(core::slice::from_raw_parts(record as *const u8, used), 0)
    };
    if sent.is_err() {
        count_lost(EventKind::Exec);
    }
    0
}

/// Set by the daemon before load.
#[unsafe(no_mangle)]
static CAPTURE_LIMITS: CaptureLimits = CaptureLimits::MAX;

/// Bytes of an exec record before its captured blocks.
const RECORD_HEAD: usize = core::mem::size_of::<Event<ExecBody>>() + core::mem::size_of::<ExecCapture>();

/// Copies the current image's argument and environment blocks into `record`, each cut at its
/// capacity (less one byte: the masks keep every length provably inside the record).
///
/// # Safety
/// `record` must point at a writable `ExecRecord`.
#[inline(always)]
unsafe fn capture_blocks(current: Task, record: *mut ExecRecord) -> (ExecCapture, u32) {
    let Ok([arg_start, arg_end, env_start, env_end]) = current.blocks() else {
        return (ExecCapture::default(), flags::READ_FAILED);
    };
    let argv_size = arg_end.saturating_sub(arg_start) as u32;
    let env_size = env_end.saturating_sub(env_start) as u32;
    let data = (&raw mut (*record).data).cast::<u8>();
    let mut flag = 0;
    // Volatile, or the compiler would fold the initialiser into the code.
    let limits = core::ptr::read_volatile(&raw const CAPTURE_LIMITS);
    let mut argv_len = (argv_size.min(limits.argv) as usize).min(ARGV_CAPTURE - 1) & (ARGV_CAPTURE - 1);
    if bpf_probe_read_user_buf(arg_start as *const u8, core::slice::from_raw_parts_mut(data, argv_len)).is_err() {
        argv_len = 0;
        flag |= flags::READ_FAILED;
    }
    let mut env_len = (env_size.min(limits.env) as usize).min(ENV_CAPTURE - 1) & (ENV_CAPTURE - 1);
    let env = data.add(argv_len);
    if bpf_probe_read_user_buf(env_start as *const u8, core::slice::from_raw_parts_mut(env, env_len)).is_err() {
        env_len = 0;
        flag |= flags::READ_FAILED;
    }
    let capture = ExecCapture { argv_len: argv_len as u32, env_len: env_len as u32, argv_size, env_size };
    (capture, flag)
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
    listers::forget(tgid);
}
