//! The kernel's event clock, read in userspace.

/// `CLOCK_BOOTTIME` in nanoseconds: the clock of `bpf_ktime_get_boot_ns`, so that control inputs
/// and kernel events share one timeline.
pub fn boottime_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; CLOCK_BOOTTIME exists on every supported kernel.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    assert_eq!(result, 0, "CLOCK_BOOTTIME is always available");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
