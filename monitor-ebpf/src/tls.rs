//! uprobes on the write functions of TLS libraries: OpenSSL's `SSL_write` and `SSL_write_ex`,
//! GnuTLS's `gnutls_record_send`, all `(session, buf, len, ...)`. What an HTTP client hands them
//! is its request in plaintext: a write that begins with an HTTP/1.x method is sent to the daemon,
//! at most `TLS_CAPTURE - 1` bytes, and the daemon looks for credentials in its headers. Every
//! other write (response bodies, HTTP/2 frames, other protocols) costs the uprobe's trap and one
//! 8-byte user read here.
//!
//! Requires uprobes (`CONFIG_UPROBE_EVENTS`, Linux 4.17+ for the perf-event attach aya uses); the
//! daemon attaches this program to the libraries it finds (`monitor/src/sensors/tls.rs`).

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::uprobe, programs::ProbeContext};
use monitor_common::event::{
    tls::{begins_request, TlsBody, TlsRecord, REQUEST_HEAD, TLS_CAPTURE},
    EventKind,
};

use crate::{
    emit::{count_lost, header},
    maps::EVENTS,
};

#[uprobe]
pub fn tls_write(ctx: ProbeContext) -> u32 {
    let (Some(buf), Some(size)) = (ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
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
    // The mask keeps the length provably inside the record for the verifier.
    let len = (size.min(TLS_CAPTURE as u64 - 1) as usize) & (TLS_CAPTURE - 1);
    // SAFETY: `record` is a reserved `TlsRecord`; `len` is below its data's size.
    unsafe {
        let data = core::slice::from_raw_parts_mut((&raw mut (*record).data).cast::<u8>(), len);
        let len = if bpf_probe_read_user_buf(buf as *const u8, data).is_ok() { len as u32 } else { 0 };
        let event = &raw mut (*record).event;
        (&raw mut (*event).header).write(header(EventKind::TlsWrite));
        (&raw mut (*event).body).write(TlsBody { len, _pad: 0 });
    }
    entry.submit(0);
    0
}
