//! In-kernel kills.

use aya_ebpf::helpers::bpf_send_signal;

const SIGKILL: u32 = 9;

/// Sends SIGKILL to the current process. Delivered before it returns to user space: at syscall
/// exit the syscall's result never reaches it; at syscall entry the syscall still runs first.
/// Requires Linux 5.3+ (`bpf_send_signal`). Returns whether the kernel took the signal (it
/// refuses kernel threads and init).
#[inline(always)]
pub fn kill_current() -> bool {
    // SAFETY: no preconditions.
    unsafe { bpf_send_signal(SIGKILL) == 0 }
}
