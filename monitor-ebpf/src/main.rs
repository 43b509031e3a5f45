//! credwatch's kernel sensors.
//!
//! Tracepoint tier: raw tracepoints only (`process.rs`, `files.rs`, `network.rs`); requires Linux
//! 5.8+ (BPF ring buffer) with BTF, no fentry, kprobe or LSM support. LSM tier: those plus the
//! BPF LSM hooks of `lsm.rs` (see there for what they need), attached only where doctor found
//! them working.
#![no_std]
#![no_main]

mod emit;
mod files;
mod kill;
mod lsm;
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
