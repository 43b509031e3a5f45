//! uprobes on the write functions of TLS libraries: OpenSSL's `SSL_write` and `SSL_write_ex`,
//! GnuTLS's `gnutls_record_send`, all `(session, buf, len, ...)`. What an HTTP client hands them
//! is its request in plaintext: a write that begins with an HTTP/1.x method is sent to the daemon,
//! at most `TLS_CAPTURE - 1` bytes, and the daemon looks for credentials in its headers. Every
//! other write (response bodies, HTTP/2 frames, other protocols) costs the uprobe's trap and one
//! 8-byte user read here.
//!
//! Requires uprobes (`CONFIG_UPROBE_EVENTS`, Linux 4.17+ for the perf-event attach aya uses); the
//! daemon attaches these programs to the libraries it finds (`monitor/src/sensors/tls.rs`).

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::uprobe, programs::ProbeContext, EbpfContext as _};
use monitor_common::event::{
    flags,
    tls::{begins_request, TlsBody, TlsRecord, REQUEST_HEAD, TLS_CAPTURE},
    EventKind,
};

use crate::{
    emit::{count_lost, header},
    files::caller_task,
    maps::EVENTS,
};

/// `SSL_write(SSL *, const void *buf, int num)`: `num` is an `int`, and the ABI leaves the upper
/// half of its register undefined, so it is read as one.
#[uprobe]
pub fn tls_write_int(ctx: ProbeContext) -> u32 {
    match (ctx.arg::<u64>(1), ctx.arg::<i32>(2)) {
        (Some(buf), Some(num)) if num > 0 => capture(&ctx, buf, num as u64),
        _ => 0,
    }
}

/// `SSL_write_ex(SSL *, const void *buf, size_t num, size_t *written)` and
/// `gnutls_record_send(gnutls_session_t, const void *data, size_t size)`.
#[uprobe]
pub fn tls_write(ctx: ProbeContext) -> u32 {
    match (ctx.arg::<u64>(1), ctx.arg::<u64>(2)) {
        (Some(buf), Some(size)) => capture(&ctx, buf, size),
        _ => 0,
    }
}

/// Sends the first bytes of the `size`-byte write at `buf` if it begins an HTTP/1.x request.
#[inline(always)]
fn capture(ctx: &ProbeContext, buf: u64, size: u64) -> u32 {
    if size < REQUEST_HEAD as u64 {
        return 0;
    }
    let mut head = [0u8; REQUEST_HEAD];
    // SAFETY: a bounded copy from user memory into a stack buffer; a fault returns an error.
    if unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut head) }.is_err() || !begins_request(&head) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<TlsRecord>(0) else {
        count_lost(EventKind::TlsWrite);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // Masked as well as bounded, so that the verifier sees the length inside the record.
    let len = (size.min(TLS_CAPTURE as u64 - 1) as usize) & (TLS_CAPTURE - 1);
    // SAFETY: `record` is a reserved `TlsRecord`; `len` is below its data's size.
    unsafe {
        let data = core::slice::from_raw_parts_mut((&raw mut (*record).data).cast::<u8>(), len);
        let (len, flag) = match bpf_probe_read_user_buf(buf as *const u8, data) {
            Ok(()) => (len as u32, 0),
            Err(_) => (0, flags::READ_FAILED),
        };
        let event = &raw mut (*record).event;
        (&raw mut (*event).header).write(header(EventKind::TlsWrite));
        (*event).header.flags |= flag;
        (&raw mut (*event).body).write(TlsBody { len, caller_task: caller_task(ctx.tgid()) });
    }
    entry.submit(0);
    0
}
