//! credwatch's kernel sensors.
//!
//! Tracepoint tier: raw tracepoints (`process.rs`, `files.rs`, `network.rs`); requires Linux
//! 5.8+ (BPF ring buffer) with BTF, no fentry, kprobe or LSM support. Where cgroup v2 is mounted,
//! the socket-address hooks of `sockets.rs` take connects and sends off the syscall path; secret
//! files are then also guarded from userspace by fanotify (`monitor/src/sensors/file_guard.rs`).
//! LSM tier: the raw tracepoints plus the BPF LSM hooks of `lsm.rs` (see there for what they
//! need), attached only where doctor found them working. On every tier, the uprobes of `tls.rs`
//! on TLS libraries' write functions, where the daemon finds the libraries.
#![no_std]
#![no_main]

mod destinations;
mod egress;
mod emit;
mod files;
mod harvest;
mod kill;
mod listers;
mod lsm;
mod maps;
mod network;
mod process;
mod sockets;
mod task;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_send_signal` and `bpf_probe_read_*` are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
