//! credwatch's kernel sensors (tracepoint tier).
//!
//! Requires Linux 5.8+ (BPF ring buffer) with BTF; every program here is a raw tracepoint, so no
//! fentry, kprobe or LSM support is needed.
#![no_std]
#![no_main]

mod emit;
mod files;
mod kill;
mod maps;
mod network;
mod process;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_send_signal` and `bpf_probe_read_*` are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
