//! Reserving ring buffer records and filling their common header.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    maps::{ring_buf::RingBufEntry, RingBuf},
};
use monitor_common::event::{flags, kernel_action, Event, EventHeader, EventKind};

use crate::{
    maps::{DECISIONS, EVENTS, LOST},
    task::Task,
};

/// Reserves a record for an event of `kind` about the current task and fills its header.
/// A failed reservation is counted in `LOST`, never silently dropped.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<Event<T>>> {
    reserve_in(&EVENTS, kind)
}

/// Like [`reserve`], in the `DECISIONS` buffer when the kernel killed or refused (`action`, one
/// of `kernel_action`): a flood of ordinary events cannot crowd out the report of a decision.
#[inline(always)]
pub fn reserve_decided<T: 'static>(kind: EventKind, action: u32) -> Option<RingBufEntry<Event<T>>> {
    if action == kernel_action::NONE {
        reserve_in(&EVENTS, kind)
    } else {
        reserve_in(&DECISIONS, kind)
    }
}

/// Like [`reserve`], for an event whose actor is `actor`, not the current task (a tracer seen
/// from its tracee's context); none when the actor cannot be read.
#[inline(always)]
pub fn reserve_about<T: 'static>(actor: Task, kind: EventKind) -> Option<RingBufEntry<Event<T>>> {
    let (Ok(pid), Ok(tgid), Ok(start_time)) = (actor.pid(), actor.tgid(), actor.process_start_time()) else {
        return None;
    };
    let mut entry = reserve(kind)?;
    // SAFETY: the header was written by `reserve`.
    let header = unsafe { &mut (*entry.as_mut_ptr()).header };
    header.pid = pid;
    header.tgid = tgid;
    header.start_time = start_time;
    Some(entry)
}

#[inline(always)]
fn reserve_in<T: 'static>(ring: &RingBuf, kind: EventKind) -> Option<RingBufEntry<Event<T>>> {
    let Some(mut entry) = ring.reserve::<Event<T>>(0) else {
        count_lost(kind);
        return None;
    };
    // SAFETY: the record is at least `Event<T>` long; the header is written before anything reads it.
    unsafe { (&raw mut (*entry.as_mut_ptr()).header).write(header(kind)) };
    Some(entry)
}

/// The header of an event of `kind` about the current task.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (start_time, flags) = match Task::current().process_start_time() {
        Ok(start) => (start, 0),
        Err(_) => (0, flags::READ_FAILED),
    };
    EventHeader {
        kind: kind as u32,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        flags,
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        start_time,
    }
}

#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, so no other program writes it concurrently.
        unsafe { *slot += 1 };
    }
}

/// Marks `flag` in the header of a reserved record.
#[inline(always)]
pub fn set_flag<T>(entry: &mut RingBufEntry<Event<T>>, flag: u32) {
    // SAFETY: the header was written by `reserve`.
    unsafe { (*entry.as_mut_ptr()).header.flags |= flag };
}

/// Flag for the result of a `bpf_probe_read_*_str_bytes` into a `capacity`-byte field: the
/// string read, without its NUL, fills the field when it was cut.
#[inline(always)]
pub fn str_read_flag(result: Result<&[u8], i32>, capacity: usize) -> u32 {
    match result {
        Ok(read) if read.len() + 1 >= capacity => flags::TRUNCATED,
        Ok(_) => 0,
        Err(_) => flags::READ_FAILED,
    }
}
